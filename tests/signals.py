"""A callback the resume tests inject with `+callbacks.signal._target_=tests.signals.SignalAt`: it sends a real
signal to its own process after a given optimizer step, i.e. mid-epoch at a known position."""

import os
import signal
import time

import lightning as L


class SignalAt(L.Callback):
    def __init__(self, step: int, signal_name: str = "SIGKILL"):
        self.step, self.signum = step, getattr(signal, signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class NaNInputAt(L.Callback):
    """Puts a NaN into the input batch of one optimizer step (the batch is a copy: the dataset stays clean)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            batch[0][0].fill_(float("nan"))


class SleepIn(L.Callback):
    """Sleeps `train` seconds in every training batch and `val` seconds in every validation batch: known time."""

    def __init__(self, train: float = 0.0, val: float = 0.0):
        self.train, self.val = train, val

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.train)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        time.sleep(self.val)
