"""The plugin as a user meets it: the README's own LightningModule, run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

import optimlight

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> list[str]:
    """The python code blocks between the plugin-example markers of README.md, in order."""
    text = README.read_text()
    section = text.split("<!-- plugin-example: start -->")[1].split("<!-- plugin-example: end -->")[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_module_is_under_15_lines():
    module_block = readme_example()[0]
    assert "configure_optimizers(self, self.optimizer, self.scheduler)" in module_block
    assert len(module_block.strip().splitlines()) < 15


def test_readme_example_trains_with_decay_groups_and_schedule():
    torch.manual_seed(0)
    namespace: dict = {}
    for block in readme_example():
        exec(compile(block, str(README), "exec"), namespace)
    model, x, y = namespace["model"], namespace["x"], namespace["y"]
    trainer = model.trainer
    assert trainer.global_step == 10 * 8  # 10 epochs of 512 / 64 batches
    with torch.no_grad():
        loss = nn.functional.mse_loss(model.net(x), y).item()
    assert loss < 0.1 * y.var().item()  # predicting the mean scores y.var(); trained, it is ~0.03 of it
    (optimizer,) = trainer.optimizers
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups["no_decay"]["param_names"]) == {"net.0.bias", "net.1.weight", "net.1.bias", "net.3.bias"}
    assert groups["decay"]["param_names"] == ["net.0.weight", "net.3.weight"]
    assert groups["decay"]["weight_decay"] == 0.01 and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["decay"]["lr"] < 1e-3 * optimizer.defaults["lr"]  # the cosine schedule ran to ~eta_min=0


def test_public_api():
    assert optimlight.configure_optimizers.__doc__ and optimlight.param_groups.__doc__
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    groups = optimlight.param_groups(model, 0.1, ["bias", "norm"])
    sgd = torch.optim.SGD(groups, lr=0.1, momentum=0.9)  # the README's build-your-own line
    assert [(g["name"], g["weight_decay"], g["param_names"]) for g in sgd.param_groups] == [
        ("decay", 0.1, ["0.weight"]),
        ("no_decay", 0.0, ["0.bias", "1.weight", "1.bias"]),
    ]
