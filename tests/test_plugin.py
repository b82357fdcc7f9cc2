"""The plugin as a user meets it: the README's own LightningModule, run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import optimlight
from optimlight.plugin import ConfigError, OptimizerInfo, SchedulerInfo, check_optimizer, registry

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


class SignDescent(torch.optim.Optimizer):
    """A user's own optimizer, derived from no class the registry lists: p <- p - lr * sign(grad)."""

    def __init__(self, params, lr: float = 0.01, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(group["lr"] * (p.grad.sign() + group["weight_decay"] * p))


@pytest.fixture
def registry_tables(monkeypatch):
    """register() writes the package's tables: the test gets copies, so no row outlives it."""
    monkeypatch.setattr(registry, "OPTIMIZERS", dict(registry.OPTIMIZERS))
    monkeypatch.setattr(registry, "SCHEDULERS", dict(registry.SCHEDULERS))


def test_a_registered_optimizer_row_rules_how_the_plugin_builds_and_checks_it(registry_tables):
    node = {"_target_": f"{__name__}.SignDescent", "lr": 0.1, "weight_decay": 0.01}
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    unlisted = optimlight.build_optimizer(model, node)
    assert [g["name"] for g in unlisted.param_groups] == ["decay", "no_decay"]  # described from its signature

    optimlight.register(
        SignDescent, OptimizerInfo(param_groups=False, mixed_precision=False, rules={"lr": (lambda v: 0 < v <= 1, "(0, 1]")})
    )
    built = optimlight.build_optimizer(model, node)
    assert isinstance(built, SignDescent) and [g["name"] for g in built.param_groups] == ["all"]
    x = torch.randn(8, 3)
    before = model[0].weight.detach().clone()
    model(x).pow(2).sum().backward()
    built.step()
    assert torch.allclose(model[0].weight, before - 0.1 * (model[0].weight.grad.sign() + 0.01 * before))
    with pytest.raises(ConfigError, match=r"^optimizer.lr=5 is not allowed: expected \(0, 1\]$"):
        check_optimizer({**node, "lr": 5})
    with pytest.raises(ConfigError, match="^trainer.precision='bf16-mixed' is not allowed"):
        check_optimizer(node, precision="bf16-mixed")


def test_register_takes_a_class_and_a_row(registry_tables):
    scheduler_row = SchedulerInfo(interval="step")
    optimlight.register(torch.optim.lr_scheduler.StepLR, scheduler_row)
    assert registry.scheduler_info(torch.optim.lr_scheduler.StepLR) is scheduler_row
    with pytest.raises(TypeError, match="takes a class"):
        optimlight.register(SignDescent(nn.Linear(1, 1).parameters()), OptimizerInfo())
    with pytest.raises(TypeError, match="OptimizerInfo or a SchedulerInfo"):
        optimlight.register(SignDescent, {"closure": True})
