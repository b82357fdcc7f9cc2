"""What the W&B dashboard shows beyond the module's own metrics: the gradient norm of each optimizer step and,
at the end of testing, a confusion matrix and the misclassified test images."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from typing_extensions import override

from optimlight.app.loggers import is_logging_step, log_step_metrics
from optimlight.app.ranges import NonNegativeInt


class GradNorm(L.Callback):
    """Logs `train/grad_norm`: the p-norm of all gradients together, before the optimizer step (and before
    clipping), where exploding or vanishing gradients show first. Works with any logger."""

    def __init__(self, norm_type: float = 2.0):
        self.norm_type = float(norm_type)
        self._logged_step = -1

    @override
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # computed only on the steps whose metrics are written, once a step (LBFGS calls this per closure)
        if not is_logging_step(trainer) or trainer.global_step == self._logged_step:
            return
        self._logged_step = trainer.global_step
        norm = gradient_norm(pl_module, self.norm_type)
        if norm is not None:
            log_step_metrics(trainer, {"train/grad_norm": norm})


def gradient_norm(module: torch.nn.Module, norm_type: float) -> torch.Tensor | None:
    """The `norm_type`-norm of all of `module`'s gradients together (None when it has none): `train/grad_norm` of
    a run alone and of a population member."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, norm_type) if grads else None


def display_image(image: torch.Tensor) -> torch.Tensor:
    """A normalized (C, H, W) image as uint8 stretched to its own min..max, which W&B shows as it is."""
    low, high = image.min(), image.max()
    return ((image - low) / (high - low).clamp_min(1e-8) * 255).round().to(torch.uint8).cpu()


class TestPredictions(L.Callback):
    """At the end of testing, logs to W&B `test/confusion_matrix` (over the whole test set, gathered from all
    ranks) and `test/misclassified`: up to `max_images` wrong test images captioned `true: X / pred: Y`.

    It reads the logits the test step computes (a forward hook on the module) instead of running the model a
    second time, and does nothing when no W&B logger is attached.
    """

    def __init__(self, class_names: Sequence[str] | None = None, max_images: NonNegativeInt = 32):
        self.class_names = list(class_names) if class_names else None
        self.max_images = max_images
        self._logger: WandbLogger | None = None

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._wrong: list[tuple[torch.Tensor, int, int]] = []
        if self._logger is not None:
            self._hook = pl_module.register_forward_hook(self._keep_logits)

    def _keep_logits(self, module, args, logits) -> None:
        self._logits = logits.detach()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._logger is None:
            return
        x, y = batch
        preds = self._logits.argmax(dim=1)
        self._preds.append(preds)
        self._targets.append(y)
        for i in (preds != y).nonzero().flatten()[: self.max_images - len(self._wrong)].tolist():
            self._wrong.append((display_image(x[i]), int(y[i]), int(preds[i])))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self._logger is None:
            return
        self._hook.remove()
        preds = pl_module.all_gather(torch.cat(self._preds)).flatten().tolist()
        targets = pl_module.all_gather(torch.cat(self._targets)).flatten().tolist()
        if not trainer.is_global_zero:
            return
        import wandb

        names = self.class_names or [str(c) for c in range(max(preds + targets) + 1)]
        matrix = wandb.plot.confusion_matrix(y_true=targets, preds=preds, class_names=names, title="Test confusion")
        self._logger.log_metrics({"test/confusion_matrix": matrix}, step=trainer.global_step)
        if self._wrong:
            images, true, pred = zip(*self._wrong)
            captions = [f"true: {names[t]} / pred: {names[p]}" for t, p in zip(true, pred)]
            self._logger.log_image("test/misclassified", list(images), step=trainer.global_step, caption=captions)
