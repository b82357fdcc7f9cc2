"""The tools layer: what reads the records runs leave (sweep summaries, comparisons, reports, notebooks) or drives
many runs (the in-process API), plus the schedule preview and the optimizers' reference update rules. Tools import
the app and the plugin, never the command-line module."""
