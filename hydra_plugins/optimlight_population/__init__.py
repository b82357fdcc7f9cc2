"""optimlight's Hydra plugins: the population launcher."""
