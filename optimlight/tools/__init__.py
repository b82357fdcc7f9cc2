"""The tools layer: what reads the records runs leave (sweep summaries, comparisons, reports, notebooks) or drives
many runs (the in-process API), plus the schedule preview. Tools import the app and the plugin, never the command
line (`optimlight.cli`)."""
