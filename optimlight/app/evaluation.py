"""Test-set evaluation after every epoch, as DeepOBS's protocol evaluates (its baselines are per-epoch test
curves): `test_epoch/loss` and `test_epoch/acc`, logged beside `val/*`. Off by default (it costs one pass over
the test set per epoch); the DeepOBS presets turn it on. The run's final `test/*` still scores the best checkpoint."""

from __future__ import annotations

import lightning as L
import torch
from typing_extensions import override


class TestEveryEpoch(L.Callback):
    """After each validation epoch (the sanity check left out): the mean cross-entropy and accuracy of the module
    on the whole test set, with the weights of that epoch."""

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss_sum, correct, count = 0.0, 0, 0
        precision = trainer.precision_plugin  # the dtype and autocast the run's own steps use
        for x, y in trainer.datamodule.test_dataloader():
            x, y = precision.convert_input(x.to(pl_module.device)), y.to(pl_module.device)
            with precision.forward_context():
                logits = pl_module(x)
            loss_sum += float(torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            count += len(y)
        pl_module.log("test_epoch/loss", loss_sum / count, on_epoch=True, sync_dist=True)
        pl_module.log("test_epoch/acc", correct / count, on_epoch=True, sync_dist=True)
