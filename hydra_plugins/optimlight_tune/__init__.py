"""optimlight's Hydra plugins: the tuning sweeper."""
