"""Callbacks of our own, for what Lightning does not ship: per-epoch training time and a plain epoch line."""

from __future__ import annotations

import time

import lightning as L


class EpochTimer(L.Callback):
    """Logs `train/epoch_time`: seconds of each training epoch, validation excluded; keeps them in `epoch_times`.

    With `print_epochs`, prints one line of metrics per epoch (used when stdout is no terminal and the progress
    bar is off, so logs stay readable in CI and batch jobs).
    """

    def __init__(self, print_epochs: bool = False):
        self.print_epochs = print_epochs
        self.epoch_times: list[float] = []
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def _stop_clock(self) -> None:
        if self._start is not None:
            self.epoch_times.append(time.perf_counter() - self._start)
            self._start = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._stop_clock()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop_clock()  # epochs without validation stop here
        pl_module.log("train/epoch_time", self.epoch_times[-1], on_step=False, on_epoch=True, sync_dist=True)
        if self.print_epochs and trainer.is_global_zero:
            shown = {k: float(v) for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
            line = "  ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items()))
            print(f"epoch {trainer.current_epoch}: {line}", flush=True)

    def state_dict(self) -> dict:
        return {"epoch_times": list(self.epoch_times)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epoch_times = list(state_dict.get("epoch_times", []))
