"""The app layer: one Fashion-MNIST training run wired from the Hydra config (DataModule, models, Classifier,
callbacks, loggers, the run record) on top of the plugin. The command line (`optimlight.cli`) sits above the app
and the tools."""
