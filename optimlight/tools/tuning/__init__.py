"""Tuning on Optuna: one study per scientific choice (the optimizer), nuisance hyperparameters searched on the same
trial budget, pruned, stored in a database, resumable and shared by workers; then the selected settings rerun with
seeds (a fixed number, or raced) for the verdict.

The Hydra side is `hydra_plugins.optimlight_tune` (`hydra/sweeper=tune`, used by the `hparams_search` presets).
"""
