"""The app layer: one Fashion-MNIST training run wired from the Hydra config (DataModule, models, Classifier,
callbacks, loggers, the run record) on top of the plugin. `optimlight.app.cli` is the command line's entry point
and is imported by nothing."""
