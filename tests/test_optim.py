"""The `optimizer` config group: YAMLs against torch's signatures, no-decay groups, weight-decay behaviour,
LBFGS, the audit table and the one-line errors of bad values."""

from __future__ import annotations

import inspect
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from optimlight.app.audit import format_table, group_rows
from optimlight.app.build import build_module
from optimlight.app.models import MLP
from optimlight.app.validate import validate
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.optimizers import PLUGIN_KEYS, build_optimizer
from optimlight.plugin.param_groups import no_decay_names, param_groups
from tests.conftest import TORCH_OPTIMIZERS, load_bench

CONF = Path(__file__).resolve().parent.parent / "conf"
OPTIMIZERS = TORCH_OPTIMIZERS
#: Where a YAML default departs from torch's: seed 000's "typical good values", and LBFGS's line search.
NOT_TORCH_DEFAULTS = {
    "sgd": {"lr": 0.01, "momentum": 0.9},
    "rmsprop": {"lr": 0.001},
    "lbfgs": {"line_search_fn": "strong_wolfe"},
}


def optimizer_node(name: str, **overrides) -> dict:
    """conf/optimizer/<name>.yaml as a dict, with overrides."""
    return {**OmegaConf.to_container(OmegaConf.load(CONF / "optimizer" / f"{name}.yaml")), **overrides}


def torch_args(cls) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n not in ("self", "params")}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_yaml_has_every_constructor_argument_and_nothing_else(name):
    node = optimizer_node(name)
    cls = OPTIMIZERS[name]
    assert node["_target_"] == f"torch.optim.{cls.__name__}"
    assert set(node) - set(PLUGIN_KEYS) == set(torch_args(cls))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_yaml_defaults_are_the_seed_table_and_torch_elsewhere(name):
    node, chosen = optimizer_node(name), NOT_TORCH_DEFAULTS.get(name, {})
    for key, param in torch_args(OPTIMIZERS[name]).items():
        value = tuple(node[key]) if isinstance(node[key], list) else node[key]
        assert value == chosen.get(key, param.default), key
    assert name == "lbfgs" or node["no_decay"] == ["bias", "norm"]


def test_seed_table_values():
    """Seed 000's table, stated once more as the issue lists it."""
    assert optimizer_node("adamw")["weight_decay"] == 0.01 and optimizer_node("adamw")["lr"] == 1e-3
    assert optimizer_node("rmsprop")["alpha"] == 0.99 and optimizer_node("adadelta")["rho"] == 0.9
    assert optimizer_node("adagrad")["lr"] == optimizer_node("asgd")["lr"] == 0.01


# ---------------------------------------------------------------- no-decay groups


class TiedLM(nn.Module):
    """Embedding -> LayerNorm -> Linear -> head whose weight is the embedding's; one frozen layer."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.proj = nn.Linear(8, 8)
        self.frozen = nn.Linear(8, 8).requires_grad_(False)
        self.head = nn.Linear(8, 20)
        self.head.weight = self.embed.weight


def assert_partition(groups: list[dict], model: nn.Module) -> None:
    """Every trainable parameter in exactly one group, nothing frozen, no group empty."""
    grouped = [p for g in groups for _, p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert all(g["params"] for g in groups)
    assert len(grouped) == len({id(p) for p in grouped}) == len(trainable)
    assert {id(p) for p in grouped} == trainable


def no_decay_group_names(groups: list[dict]) -> set[str]:
    return {n for g in groups if g["name"] == "no_decay" for n, _ in g["params"]}


def test_cnn_excludes_batchnorm_and_biases():
    model = instantiate(OmegaConf.load(CONF / "model" / "cnn.yaml"))
    groups = param_groups(model, 0.01, ["bias", "norm"])
    # conv blocks 0 and 1 (conv without bias, BatchNorm at .1), Linear layers 3 and 6
    assert no_decay_group_names(groups) == {"0.1.weight", "0.1.bias", "1.1.weight", "1.1.bias", "3.bias", "6.bias"}
    assert {n for g in groups if g["name"] == "decay" for n, _ in g["params"]} == {
        "0.0.weight",
        "1.0.weight",
        "3.weight",
        "6.weight",
    }
    assert_partition(groups, model)


@pytest.mark.parametrize(
    ("no_decay", "expected"),
    [
        (["bias", "norm"], {"norm.weight", "norm.bias", "proj.bias", "head.bias"}),
        (["bias", "norm", "embedding"], {"embed.weight", "norm.weight", "norm.bias", "proj.bias", "head.bias"}),
        (["1d"], {"norm.weight", "norm.bias", "proj.bias", "head.bias"}),
        (["norm"], {"norm.weight", "norm.bias"}),
        (["head.*"], {"head.bias", "embed.weight"}),  # the tied weight, reached through its second name
        (["pro?.weight", "frozen.*"], {"proj.weight"}),  # frozen parameters are in no group at all
        ([], set()),
    ],
)
def test_tied_model_no_decay_sets(no_decay, expected):
    model = TiedLM()
    groups = param_groups(model, 0.1, no_decay)
    assert no_decay_names(model, no_decay) == expected
    assert no_decay_group_names(groups) == expected
    assert_partition(groups, model)
    names = [n for g in groups for n, _ in g["params"]]
    assert names.count("embed.weight") == 1 and "head.weight" not in names
    assert not any(n.startswith("frozen.") for n in names)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0][: len(groups)]


class MyNorm(nn.LayerNorm):
    """A subclass of a norm layer: still a norm."""


@pytest.mark.parametrize(
    "norm",
    [
        nn.BatchNorm1d(4),
        nn.BatchNorm2d(4),
        nn.BatchNorm3d(4),
        nn.SyncBatchNorm(4),
        nn.LayerNorm(4),
        nn.GroupNorm(2, 4),
        nn.InstanceNorm1d(4, affine=True),
        nn.InstanceNorm2d(4, affine=True),
        nn.InstanceNorm3d(4, affine=True),
        nn.RMSNorm(4),
        MyNorm(4),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_norm_layer_and_subclass_is_excluded(norm):
    model = nn.Sequential(nn.Linear(4, 4, bias=False), norm)
    assert no_decay_names(model, ["norm"]) == {f"1.{n}" for n, _ in norm.named_parameters()} != set()


def test_a_node_without_weight_decay_keeps_torchs_default():
    """AdamW's own default (0.01) reaches the decay group; the group value must not silently become 0."""
    optimizer = build_optimizer(TiedLM(), {"_target_": "torch.optim.AdamW", "lr": 1e-3})
    assert [(g["name"], g["weight_decay"]) for g in optimizer.param_groups] == [("decay", 0.01), ("no_decay", 0.0)]


# ---------------------------------------------------------------- weight decay behaviour


def zero_grad_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for _ in range(steps):
        optimizer.step()


@pytest.mark.parametrize("no_decay", [["bias", "norm", "embedding"], []])
def test_adamw_decays_exactly_the_decayed_parameters(no_decay):
    lr, wd, steps = 0.05, 2.0, 7
    torch.manual_seed(0)
    model = TiedLM()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, optimizer_node("adamw", lr=lr, weight_decay=wd, no_decay=no_decay))
    zero_grad_steps(model, optimizer, steps)
    excluded = no_decay_names(model, no_decay)
    factor = (1 - lr * wd) ** steps
    for name, p in model.named_parameters():
        if name.startswith("frozen."):
            assert torch.equal(p, before[name])
        elif name in excluded:
            assert torch.equal(p, before[name]), name
        else:
            torch.testing.assert_close(p, before[name] * factor, rtol=1e-6, atol=0), name
    assert bool(excluded) == bool(no_decay)


def test_adam_weight_decay_is_coupled_l2_and_adamw_or_decoupled_adam_is_not():
    """With zero loss gradients Adam's L2 gradient wd*p is normalized away: every weight moves by ~lr whatever its
    size (seed 004), while AdamW and Adam(decoupled_weight_decay=true) shrink each by the factor (1 - lr*wd)."""
    lr, wd = 0.01, 0.5
    start = torch.tensor([0.01, 0.1, 1.0, 10.0])

    def one_step(name, **overrides):
        p = nn.Parameter(start.clone())
        model = nn.Module()
        model.w = p
        zero_grad_steps(model, build_optimizer(model, optimizer_node(name, lr=lr, weight_decay=wd, **overrides)), 1)
        return p.detach()

    torch.testing.assert_close(one_step("adam"), start - lr)  # coupled: a step of lr, not a fraction of the weight
    torch.testing.assert_close(one_step("adamw"), start * (1 - lr * wd))
    torch.testing.assert_close(one_step("adam", decoupled_weight_decay=True), start * (1 - lr * wd))
    torch.testing.assert_close(one_step("nadam", decoupled_weight_decay=True), start * (1 - lr * wd))


# ---------------------------------------------------------------- LBFGS and the audit table


def test_lbfgs_takes_one_group_with_a_one_line_notice(caplog):
    model = MLP()
    with caplog.at_level(logging.WARNING, logger="optimlight.plugin.optimizers"):
        optimizer = build_optimizer(model, optimizer_node("lbfgs", no_decay=["bias"]))
    assert [r.getMessage() for r in caplog.records] == [
        "LBFGS takes a single parameter group: weight-decay grouping (no_decay) skipped"
    ]
    (group,) = optimizer.param_groups
    assert group["param_names"] == [n for n, _ in model.named_parameters()]
    table = format_table(group_rows([optimizer], model.named_parameters())).splitlines()
    assert table[1].split() == ["LBFGS/all", "-", "6", f"{sum(p.numel() for p in model.parameters()):,}"]


def test_audit_prints_and_logs_the_groups(train_run, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="optimlight.app.audit")
    cfg, results = train_run(["optimizer=adamw", "optimizer.weight_decay=0.05"])
    assert results["status"] == "completed"
    linears = [m for m in MLP() if isinstance(m, nn.Linear)]
    expected = {
        "AdamW/decay": {"weight_decay": 0.05, "tensors": 3, "parameters": sum(m.weight.numel() for m in linears)},
        "AdamW/no_decay": {"weight_decay": 0.0, "tensors": 3, "parameters": sum(m.bias.numel() for m in linears)},
    }
    printed = capsys.readouterr().out.splitlines()
    for label, row in expected.items():
        assert f"{label} {row['weight_decay']:g} {row['tensors']} {row['parameters']:,}" in [
            " ".join(line.split()) for line in printed
        ]
    hparams = yaml.safe_load((Path(cfg.hydra.runtime.output_dir) / "csv" / "hparams.yaml").read_text())
    assert hparams["param_groups"] == expected
    names = [f"net.{n}" for n, _ in MLP().named_parameters()]
    debug = [r.getMessage() for r in caplog.records if r.name == "optimlight.app.audit" and r.levelno == logging.DEBUG]
    assert debug == [
        f"AdamW/decay (weight_decay=0.05): {', '.join(n for n in names if n.endswith('weight'))}",
        f"AdamW/no_decay (weight_decay=0.0): {', '.join(n for n in names if n.endswith('bias'))}",
    ]


# ---------------------------------------------------------------- each optimizer trains on real data

#: What keeps a test run short: LBFGS evaluates the batch up to ~max_iter times per step.
QUICK = {"lbfgs": ["trainer.limit_train_batches=4", "optimizer.max_iter=5"]}


def fit_on_real_data(compose_cfg, overrides, callbacks=()) -> tuple[object, float, float]:
    """(trainer, val/loss before, val/loss after) of one epoch of 25 real batches on the MLP."""
    cfg = compose_cfg(
        [
            "model=mlp",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=25",
            "trainer.limit_val_batches=2",
            "trainer.num_sanity_val_steps=0",
            *overrides,
        ]
    )
    validate(cfg)
    torch.manual_seed(cfg.seed)
    datamodule, module = instantiate(cfg.data), build_module(cfg)
    trainer = instantiate(  # inference_mode=False: validating before fit must not turn metric states into
        cfg.trainer,  # inference tensors that training then updates in place
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    before = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/loss"]
    trainer.fit(module, datamodule=datamodule)
    after = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/loss"]
    return trainer, before, after


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_lowers_the_mlp_loss_on_real_data(compose_cfg, name):
    trainer, before, after = fit_on_real_data(compose_cfg, [f"optimizer={name}", *QUICK.get(name, [])])
    assert type(trainer.optimizers[0]) is OPTIMIZERS[name]
    assert math.isfinite(after) and after < before, (before, after)


# ---------------------------------------------------------------- bad values, one line each, before training


@pytest.mark.parametrize(
    ("overrides", "key", "value"),
    [
        (["+optimizer.momentum=0.9"], "optimizer.momentum", 0.9),  # AdamW has no momentum
        (["optimizer=sgd", "+optimizer.betas=[0.9,0.99]"], "optimizer.betas", [0.9, 0.99]),
        (["optimizer.lr=0"], "optimizer.lr", 0),
        (["optimizer=sgd", "optimizer.lr=-0.1"], "optimizer.lr", -0.1),
        (["optimizer.betas=[0.9,1.0]"], "optimizer.betas", [0.9, 1.0]),
        (["optimizer=nadam", "optimizer.betas=[-0.1,0.9]"], "optimizer.betas", [-0.1, 0.9]),
        (["optimizer=sgd", "optimizer.momentum=-0.5"], "optimizer.momentum", -0.5),
        (["optimizer=rmsprop", "optimizer.momentum=-1"], "optimizer.momentum", -1),
        (["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"], "optimizer.nesterov", True),
        (["optimizer=sgd", "optimizer.nesterov=true", "optimizer.dampening=0.1"], "optimizer.nesterov", True),
        (["optimizer.eps=0"], "optimizer.eps", 0),
        (["optimizer=adagrad", "optimizer.eps=-1e-10"], "optimizer.eps", -1e-10),
        (["optimizer.weight_decay=-0.01"], "optimizer.weight_decay", -0.01),
        (["optimizer=adam", "optimizer.weight_decay=lots"], "optimizer.weight_decay", "lots"),
        (["optimizer.no_decay=[bias,normz]"], "optimizer.no_decay", "normz"),
        (["optimizer.no_decay=bias"], "optimizer.no_decay", "bias"),
        (["optimizer=lbfgs", "optimizer.line_search_fn=armijo"], "optimizer.line_search_fn", "armijo"),
        (["optimizer=lbfgs", "trainer.precision=bf16-mixed"], "trainer.precision", "bf16-mixed"),
        (["optimizer=lbfgs", "trainer.precision=16-mixed"], "trainer.precision", "16-mixed"),
    ],
)
def test_bad_optimizer_values_fail_in_one_line(compose_cfg, overrides, key, value):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(overrides))
    message = str(info.value)
    assert (info.value.key, info.value.value) == (key, value)
    assert message.startswith(f"{key}={value!r} is not allowed: expected ") and "\n" not in message


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_shipped_optimizer_passes_validation(compose_cfg, name):
    validate(compose_cfg([f"optimizer={name}"]))


def test_nesterov_with_momentum_and_no_dampening_passes(compose_cfg):
    validate(compose_cfg(["optimizer=sgd", "optimizer.nesterov=true"]))


def test_unknown_optimizer_lists_the_options(compose_cfg):
    with pytest.raises(MissingConfigException) as info:
        compose_cfg(["optimizer=adamx"])
    assert "optimizer/adamx" in str(info.value)
    assert all(f"\t{name}\n" in str(info.value) for name in OPTIMIZERS)


def test_bench_table_runs_on_real_data(fashion_mnist, tmp_path):
    """bench/optimizers.py end to end on a few batches: one row per optimizer, LBFGS on its larger batches."""
    bench = load_bench("optimizers")
    limits = [
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.num_sanity_val_steps=0",
        f"data.data_dir={fashion_mnist}",
    ]
    rows = bench.bench(["lbfgs"], 1, [*limits, "optimizer.max_iter=2"], tmp_path) + bench.bench(["sgd"], 1, limits, tmp_path)
    table = bench.markdown(rows).splitlines()
    assert [r["optimizer"] for r in rows] == ["lbfgs", "sgd"] and {r["status"] for r in rows} == {"completed"}
    assert table[0] == "| optimizer | overrides | val acc (best) | test acc | s/epoch | status |"
    assert table[2].startswith("| lbfgs | data.batch_size=1024 | ") and table[3].startswith("| sgd | - | ")
    assert all(0 < r["test acc"] <= 1 and r["s/epoch"] > 0 for r in rows)
