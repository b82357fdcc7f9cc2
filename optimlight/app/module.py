"""The image classifier LightningModule: loss, metrics and logging; optimizers come from the plugin."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Mapping
from functools import cache, partial
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.distributed import _destroy_dist_connection, _distributed_is_initialized
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from optimlight.app.loggers import is_logging_step, log_step_metrics
from optimlight.app.ranges import Fraction
from optimlight.plugin import configure_optimizers
from optimlight.plugin.schedulers import TRAIN_EPOCH, VALIDATION

#: What the classifier (and the epoch timer) log through `self.log` while fitting, and when: what a scheduler or
#: callback can monitor. `train/loss_step` goes straight to the loggers; test/* come after fit.
LOGGED_METRICS = {
    **dict.fromkeys(("train/loss", "train/acc", "train/epoch_time"), TRAIN_EPOCH),
    **dict.fromkeys(("val/loss", "val/acc", "val/acc_best"), VALIDATION),
}


@cache
def destroy_process_group_at_exit() -> None:
    """Destroy this process's group at interpreter exit, registered once per process. Lightning does it for NCCL
    alone; a gloo rank (trainer=ddp_cpu) exiting with its group alive can abort at exit (pytorch/pytorch#65513).
    For NCCL it runs before Lightning's own, which then finds the group gone."""
    atexit.register(_destroy_dist_connection)


class EpochSums(nn.Module):
    """The training epoch's sums behind `train/loss` (the mean of the batch losses) and `train/acc` (correct
    predictions / samples), on the device: a step adds its loss in place and keeps its predictions (argmax), whose
    hits are counted together every `COUNT_EVERY` batches. Two tensor ops a step, where torchmetrics' MeanMetric and
    MulticlassAccuracy updates cost a measurable share of a small MLP's step (docs/explanation/benchmarks.md).

    No buffers: DDP copies rank 0's buffers to every rank at each forward. The sums follow the module's device as
    torchmetrics' states do, and the state dict holds them (the kept predictions counted) as the module's extra
    state, so every checkpoint does.
    """

    COUNT_EVERY = 64

    def __init__(self) -> None:
        super().__init__()
        self.loss_sum = torch.zeros(())  # float32, as MeanMetric's: the same means
        self.correct = torch.zeros((), dtype=torch.long)
        self.counts = [0, 0]  # batches, samples
        self._uncounted: list[tuple[torch.Tensor, torch.Tensor]] = []  # (predictions, targets) of recent batches

    def update(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch: its (detached) mean loss, and its logits' top-1 predictions against `target`."""
        self.loss_sum.add_(loss)
        uncounted = self._uncounted  # lists changed in place: no nn.Module.__setattr__ a step
        uncounted.append((logits.argmax(dim=1), target))
        if len(uncounted) == self.COUNT_EVERY:
            self._count_hits()
        counts = self.counts
        counts[0] += 1
        counts[1] += len(target)

    def _count_hits(self) -> None:
        if self._uncounted:
            predictions, targets = zip(*self._uncounted)
            self.correct.add_(torch.cat(predictions).eq(torch.cat(targets)).sum())
            self._uncounted.clear()

    def compute(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean batch loss, accuracy) over the sums of every rank, which `reduce_sum` adds up (in place)."""
        self._count_hits()
        loss_sum, correct = reduce_sum(self.loss_sum.clone()), reduce_sum(self.correct.clone())
        batches, samples = reduce_sum(torch.tensor(self.counts, device=self.correct.device))
        return loss_sum / batches, correct.float() / samples.float()

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()
        self.counts = [0, 0]
        self._uncounted.clear()

    def __setstate__(self, state: dict) -> None:
        """A copy of its own: ddp_spawn's processes unpickle the module from shared memory, and in-place adds to
        shared sums would count every rank's batches in each."""
        super().__setstate__(state)
        self.loss_sum, self.correct = self.loss_sum.clone(), self.correct.clone()

    @override
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> EpochSums:
        device = fn(torch.zeros(())).device  # where .to()/.cuda() move the module; the sums keep their dtypes
        self._count_hits()
        self.loss_sum, self.correct = self.loss_sum.to(device), self.correct.to(device)
        return super()._apply(fn, recurse)

    @override
    def get_extra_state(self) -> torch.Tensor:
        """[loss sum, correct, batches, samples] (float64 holds the float32 sum and the counts exactly)."""
        self._count_hits()
        return torch.tensor([self.loss_sum.item(), self.correct.item(), *self.counts], dtype=torch.float64)

    @override
    def set_extra_state(self, state: torch.Tensor) -> None:
        loss_sum, correct, batches, samples = state.tolist()
        self.loss_sum.fill_(loss_sum)
        self.correct.fill_(int(correct))
        self.counts = [int(batches), int(samples)]
        self._uncounted.clear()


class Classifier(L.LightningModule):
    """Cross-entropy classification of `net`'s logits.

    Epoch metrics (`train/loss`, `train/acc`, `val/*`, `test/*`) accumulate on the device and sync once per
    epoch: the training ones in `EpochSums`, the evaluation ones in torchmetrics objects; `train/loss_step` is the
    raw step loss, written every `log_every_n_steps`. The training sums are saved in checkpoints, so an epoch
    resumed mid-way reports all its batches. An optimizer that evaluates its closure several times per step
    (LBFGS's line search) counts each batch once.
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
        self.train_sums = EpochSums()
        # keyed "<split>_loss" / "<split>_acc": a ModuleDict key may not shadow nn.Module.train
        self.metrics = nn.ModuleDict()
        for split in ("val", "test"):
            # no argument checks and no NaN scan: both read the device every step (NonFiniteGuard watches NaNs)
            self.metrics[f"{split}_loss"] = MeanMetric(nan_strategy="disable")
            self.metrics[f"{split}_acc"] = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self._counted_batch: Any = None  # the training batch the sums last counted
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # a resumed run keeps its best so far

    @override
    def setup(self, stage: str) -> None:
        """Every rank runs it once its process group exists (ddp and ddp_spawn alike, each stage)."""
        if _distributed_is_initialized():
            destroy_process_group_at_exit()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _logits_and_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return logits, self.criterion(logits, y)

    def training_step(self, batch, batch_idx):
        first = batch is not self._counted_batch  # False: a closure's re-evaluation of the same batch object
        self._counted_batch = batch
        logits, loss = self._logits_and_loss(batch)
        if self.hparams.skip_nonfinite_loss and not torch.isfinite(loss):
            return None  # Lightning skips backward and the optimizer step (one host sync per step, opt-in)
        if first:
            self.train_sums.update(loss.detach(), logits.detach(), batch[1])
            if is_logging_step(self.trainer):
                log_step_metrics(self.trainer, {"train/loss_step": loss.detach()})
        return loss

    def on_train_epoch_end(self) -> None:
        loss, acc = self.train_sums.compute(partial(self.trainer.strategy.reduce, reduce_op="sum"))
        self.log("train/loss", loss)  # every rank's batches: the sums are reduced across DDP ranks
        self.log("train/acc", acc)
        self.train_sums.reset()

    @override
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint saved before `EpochSums` holds the training sums as torchmetrics states: take them over."""
        state = checkpoint["state_dict"]
        if "metrics.train_loss.mean_value" in state:
            loss_sum, batches = state.pop("metrics.train_loss.mean_value"), state.pop("metrics.train_loss.weight")
            tp, fn = state.pop("metrics.train_acc.tp"), state.pop("metrics.train_acc.fn")
            del state["metrics.train_acc.fp"], state["metrics.train_acc.tn"]
            sums = [loss_sum.item(), tp.sum().item(), batches.item(), (tp + fn).sum().item()]
            state["train_sums._extra_state"] = torch.tensor(sums, dtype=torch.float64)

    def _evaluate(self, batch, split: str) -> None:
        """Count the batch in the split's metrics, which Lightning computes (and syncs) at the epoch's end."""
        logits, loss = self._logits_and_loss(batch)
        loss_metric, acc_metric = self.metrics[f"{split}_loss"], self.metrics[f"{split}_acc"]
        loss_metric.update(loss.detach())
        acc_metric.update(logits.detach(), batch[1])
        self.log(f"{split}/loss", loss_metric, on_step=False, on_epoch=True)
        self.log(f"{split}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=split == "val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # the sanity check's accuracy is no result (a resumed fit keeps its best)
            return
        self.val_acc_best.update(self.metrics["val_acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    @property
    def lr(self) -> float | None:
        """The optimizer node's lr: what Lightning's LR finder (`Tuner.lr_find(attr_name="lr")`) reads and sets."""
        return self.hparams.optimizer.get("lr")

    @lr.setter
    def lr(self, value: float) -> None:
        self.hparams.optimizer["lr"] = value

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)
