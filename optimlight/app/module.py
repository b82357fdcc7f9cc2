"""The image classifier LightningModule: loss, metrics and logging; optimizers come from the plugin."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from optimlight.app.loggers import is_logging_step, log_step_metrics
from optimlight.app.schema import Fraction
from optimlight.plugin import configure_optimizers
from optimlight.plugin.schedulers import TRAIN_EPOCH, VALIDATION

#: What the classifier (and the epoch timer) log through `self.log` while fitting, and when: what a scheduler or
#: callback can monitor. `train/loss_step` goes straight to the loggers; test/* come after fit.
LOGGED_METRICS = {
    **dict.fromkeys(("train/loss", "train/acc", "train/epoch_time"), TRAIN_EPOCH),
    **dict.fromkeys(("val/loss", "val/acc", "val/acc_best"), VALIDATION),
}


class Classifier(L.LightningModule):
    """Cross-entropy classification of `net`'s logits.

    Epoch metrics (`train/loss`, `train/acc`, `val/*`, `test/*`) accumulate on the device in torchmetrics objects
    and sync once per epoch; `train/loss_step` is the raw step loss, written every `log_every_n_steps`. The
    training metrics' running sums are saved in checkpoints, so an epoch resumed mid-way reports all its batches.
    An optimizer that evaluates its closure several times per step (LBFGS's line search) counts each batch once.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Mapping,
        scheduler: Mapping | None = None,
        num_classes: int = 10,
        label_smoothing: Fraction = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        skip_nonfinite_loss: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        if compile:
            self.net.compile()  # in place: parameter names and checkpoints stay those of the plain network
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # keyed "<split>_loss" / "<split>_acc": a ModuleDict key may not shadow nn.Module.train
        self.metrics = nn.ModuleDict()
        for split in ("train", "val", "test"):
            # no argument checks and no NaN scan: both read the device every step (NonFiniteGuard watches NaNs)
            self.metrics[f"{split}_loss"] = MeanMetric(nan_strategy="disable")
            self.metrics[f"{split}_acc"] = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        for name in ("train_loss", "train_acc"):
            self.metrics[name].persistent(True)
        self._counted_batch: tuple[int, int] | None = None  # the training batch the metrics last counted
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # a resumed run keeps its best so far

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch, split: str, count: bool = True) -> torch.Tensor | None:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        if split == "train" and self.hparams.skip_nonfinite_loss and not torch.isfinite(loss):
            return None  # Lightning skips backward and the optimizer step (one host sync per step, opt-in)
        if not count:
            return loss
        loss_metric, acc_metric = self.metrics[f"{split}_loss"], self.metrics[f"{split}_acc"]
        loss_metric.update(loss.detach())
        acc_metric.update(logits.detach(), y)
        if split != "train":  # training metrics are logged once, at the epoch's end: self.log costs ~1 ms a call
            self.log(f"{split}/loss", loss_metric, on_step=False, on_epoch=True)
            self.log(f"{split}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=split == "val")
        return loss

    def training_step(self, batch, batch_idx):
        first = self._counted_batch != (self.current_epoch, batch_idx)  # False: a closure's re-evaluation
        self._counted_batch = (self.current_epoch, batch_idx)
        loss = self._step(batch, "train", count=first)
        if first and loss is not None and is_logging_step(self.trainer):
            log_step_metrics(self.trainer, {"train/loss_step": loss.detach()})
        return loss

    def on_train_epoch_end(self) -> None:
        for name in ("loss", "acc"):
            metric = self.metrics[f"train_{name}"]
            self.log(f"train/{name}", metric.compute())  # synced across DDP ranks by torchmetrics
            metric.reset()

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # the sanity check's accuracy is no result (a resumed fit keeps its best)
            return
        self.val_acc_best.update(self.metrics["val_acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    @property
    def lr(self) -> float | None:
        """The optimizer node's lr: what Lightning's LR finder (`Tuner.lr_find(attr_name="lr")`) reads and sets."""
        return self.hparams.optimizer.get("lr")

    @lr.setter
    def lr(self, value: float) -> None:
        self.hparams.optimizer["lr"] = value

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)
