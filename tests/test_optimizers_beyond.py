"""The options beyond the nine: the rest of torch.optim, Muon with AdamW, Schedule-Free AdamW and Lion. YAMLs
against the constructors, a few real steps on the MLP, Muon's routing and checkpoints, schedule-free's modes."""

from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from optimlight.app.audit import group_rows
from optimlight.app.build import build_module
from optimlight.app.models import CNN, MLP
from optimlight.app.preflight import preflight
from optimlight.app.schedule_free import ScheduleFreeModes
from optimlight.app.validate import validate
from optimlight.plugin import registry
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.muon import muon_names
from optimlight.plugin.optimizers import PLUGIN_KEYS, build_optimizer
from tests.conftest import keep_every_epoch
from tests.test_optim import fit_on_real_data

CONF = Path(__file__).resolve().parent.parent / "conf"
#: option -> class path; the optional packages' options are skipped when the package is missing.
BEYOND = {
    "radam": "torch.optim.RAdam",
    "adamax": "torch.optim.Adamax",
    "rprop": "torch.optim.Rprop",
    "adafactor": "torch.optim.Adafactor",
    "sparse_adam": "torch.optim.SparseAdam",
    "muon": "optimlight.plugin.muon.MuonAdamW",
    "schedulefree_adamw": "schedulefree.AdamWScheduleFree",
    "lion": "lion_pytorch.Lion",
}
#: Where a YAML default departs from the class's: Muon's lr for the `original` lr adjustment.
NOT_CLASS_DEFAULTS = {"muon": {"lr": 0.02}}


def optimizer_node(name: str, **overrides) -> dict:
    return {**OmegaConf.to_container(OmegaConf.load(CONF / "optimizer" / f"{name}.yaml")), **overrides}


def class_of(name: str) -> type:
    module, _, attr = BEYOND[name].rpartition(".")
    return getattr(pytest.importorskip(module), attr)


def arguments(cls: type) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n not in ("self", "params")}


def plain(value):
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize("name", BEYOND)
def test_yaml_is_the_constructor_signature_with_its_defaults(name):
    node, cls = optimizer_node(name), class_of(name)
    assert node["_target_"] == BEYOND[name]
    assert set(node) - set(PLUGIN_KEYS) == set(arguments(cls))
    chosen = NOT_CLASS_DEFAULTS.get(name, {})
    for key, param in arguments(cls).items():
        if key != "adamw":
            assert plain(node[key]) == chosen.get(key, param.default), key


def test_muon_adamw_node_is_adamws_signature_and_defaults():
    node = optimizer_node("muon")["adamw"]
    adamw = optimizer_node("adamw")
    assert set(node) == set(arguments(torch.optim.AdamW))
    assert all(node[key] == adamw[key] for key in node)  # conf/optimizer/adamw.yaml's values


# ---------------------------------------------------------------- a few steps lower the MLP's loss on real data

TRAINING = [name for name in BEYOND if name != "sparse_adam"]


@pytest.mark.parametrize("name", TRAINING)
def test_each_new_optimizer_lowers_the_mlp_loss_on_real_data(compose_real_cfg, name):
    class_of(name)
    trainer, before, after = fit_on_real_data(compose_real_cfg, [f"optimizer={name}"], callbacks=[ScheduleFreeModes()])
    assert type(trainer.optimizers[0]).__name__ == BEYOND[name].rsplit(".", 1)[-1]
    assert math.isfinite(after) and after < before, (before, after)


class SparseBag(nn.Module):
    """The mean of sparse-gradient embeddings of token ids: every gradient is sparse."""

    def __init__(self):
        super().__init__()
        self.embed = nn.EmbeddingBag(50, 8, sparse=True)

    def forward(self, ids):
        return self.embed(ids)


def test_sparse_adam_trains_sparse_embeddings_and_refuses_a_dense_model(compose_cfg):
    torch.manual_seed(0)
    model, ids, target = SparseBag(), torch.randint(0, 50, (16, 4)), torch.randn(16, 8)
    optimizer = build_optimizer(model, optimizer_node("sparse_adam", lr=0.05))
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(ids), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(ConfigError) as info:
        preflight(compose_cfg(["optimizer=sparse_adam"]))
    assert info.value.key == "optimizer._target_" and "SparseAdam updates sparse gradients only" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["optimizer=muon", "+optimizer.adamw.momentum=0.9"], "optimizer.adamw.momentum"),  # AdamW has none
        (["optimizer=muon", "optimizer.adamw.lr=0"], "optimizer.adamw.lr"),
        (["optimizer=muon", "optimizer.adamw.betas=[0.9,1.0]"], "optimizer.adamw.betas"),
        (["optimizer=muon", "optimizer.lr=-1"], "optimizer.lr"),
        (["optimizer=muon", "+optimizer.betas=[0.9,0.99]"], "optimizer.betas"),
        (["optimizer=adafactor", "optimizer.eps=[null,0]"], "optimizer.eps"),
        (["optimizer=adafactor", "optimizer.eps=1e-8"], "optimizer.eps"),
        (["optimizer=rprop", "optimizer.etas=[1.2,0.5]"], "optimizer.etas"),
        (["optimizer=rprop", "optimizer.step_sizes=[1,0.1]"], "optimizer.step_sizes"),
        (["optimizer=radam", "optimizer.betas=[1.0,0.9]"], "optimizer.betas"),
    ],
)
def test_bad_values_of_the_new_options_fail_in_one_line(compose_cfg, overrides, key):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(overrides))
    assert info.value.key == key and "\n" not in str(info.value)


def test_a_missing_optional_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(registry.EXTRAS, "not_installed_optimizers", "extra-optimizers")
    with pytest.raises(ConfigError) as info:
        build_optimizer(MLP(), {"_target_": "not_installed_optimizers.Fast"})
    assert str(info.value) == (
        "optimizer._target_='not_installed_optimizers.Fast' is not allowed: expected an installed class: "
        "pip install -e '.[extra-optimizers]' (package not_installed_optimizers)"
    )


# ---------------------------------------------------------------- Muon: routing, checkpoints, LR monitor, resume


def test_muon_routes_hidden_linear_weights_and_nothing_else():
    mlp = build_optimizer(MLP(), optimizer_node("muon"))
    cnn = build_optimizer(CNN(), optimizer_node("muon"))
    assert {g["name"]: g["param_names"] for g in mlp.param_groups} == {
        "muon": ["1.weight", "3.weight"],
        "adamw_decay": ["5.weight"],  # the output layer
        "adamw_no_decay": ["1.bias", "3.bias", "5.bias"],
    }
    assert {g["name"]: g["param_names"] for g in cnn.param_groups} == {
        "muon": ["3.weight"],  # the hidden Linear; the convolution kernels are 4-D
        "adamw_decay": ["0.0.weight", "1.0.weight", "6.weight"],
        "adamw_no_decay": ["0.1.weight", "0.1.bias", "1.1.weight", "1.1.bias", "3.bias", "6.bias"],
    }
    groups = {g["name"]: (g["lr"], g["weight_decay"]) for g in cnn.param_groups}
    assert groups == {"muon": (0.02, 0.1), "adamw_decay": (0.001, 0.01), "adamw_no_decay": (0.001, 0.0)}
    assert type(cnn.muon) is torch.optim.Muon and type(cnn.adamw) is torch.optim.AdamW


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.hidden = nn.Linear(8, 8)
        self.head = nn.Linear(8, 20)
        self.head.weight = self.embed.weight


def test_muon_leaves_embeddings_and_a_tied_head_to_adamw():
    assert muon_names(TiedLM()) == {"hidden.weight"}


def test_muon_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    x, node = torch.randn(8, 1, 28, 28), optimizer_node("muon")
    model = MLP()
    optimizer = build_optimizer(model, node)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    twin = MLP()
    twin.load_state_dict(saved_model)
    twin_optimizer = build_optimizer(twin, node)
    twin_optimizer.load_state_dict(saved)
    for m, o in ((model, optimizer), (twin, twin_optimizer)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    assert twin_optimizer.muon.state is twin_optimizer.state and twin_optimizer.adamw.state is twin_optimizer.state
    assert twin_optimizer.adamw.param_groups[0] is twin_optimizer.param_groups[1]


def test_muon_run_logs_both_lrs_audits_the_routing_and_resumes_exactly(train_run, tmp_path):
    """A cosine run: LearningRateMonitor logs each group's own lr; the audit names what went where; a run resumed
    from its epoch-0 checkpoint ends with the uninterrupted run's weights."""
    every_epoch = keep_every_epoch(tmp_path / "kept")
    common = ["optimizer=muon", "scheduler=cosine", "trainer.max_epochs=2", "trainer.log_every_n_steps=1"]
    cfg, results = train_run([*common, *every_epoch], tmp_path / "full")
    assert results["status"] == "completed"
    run_dir = Path(cfg.hydra.runtime.output_dir)
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    muon_lr, adamw_lr = frame["lr-MuonAdamW/muon"].dropna(), frame["lr-MuonAdamW/adamw_decay"].dropna()
    assert muon_lr.iloc[0] == pytest.approx(0.02) and adamw_lr.iloc[0] == pytest.approx(0.001)
    np.testing.assert_allclose(muon_lr.to_numpy() / 0.02, adamw_lr.to_numpy() / 0.001, rtol=1e-6)  # one schedule
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert hparams["param_groups"]["MuonAdamW/muon"]["tensors"] == 2
    module = build_module(cfg)
    rows = group_rows([build_optimizer(module, cfg.optimizer)], module.named_parameters())
    assert rows["MuonAdamW/muon"]["names"] == ["net.1.weight", "net.3.weight"]
    assert rows["MuonAdamW/adamw_decay"]["names"] == ["net.5.weight"]

    resumed_cfg, resumed = train_run([*common, f"ckpt_path={tmp_path / 'kept' / 'e0.ckpt'}"], tmp_path / "resumed")
    assert resumed["status"] == "completed"
    full = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    again = torch.load(Path(resumed_cfg.hydra.runtime.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert again["global_step"] == full["global_step"]
    for name, tensor in full["state_dict"].items():
        assert torch.equal(again["state_dict"][name], tensor), name
    assert again["lr_schedulers"] == full["lr_schedulers"]


# ---------------------------------------------------------------- Schedule-Free AdamW


class Watched(ScheduleFreeModes):
    """Records, at every validation batch, the weights validation sees and the eval point computed from the
    last training step's fast iterate y and its z: x = (y - (1 - beta1) z) / beta1 (y = (1 - beta1) z + beta1 x)."""

    def __init__(self):
        self.train_point: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.seen: list[tuple[dict, dict, bool]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        optimizer = trainer.optimizers[0]
        self.train_point = {n: (p.detach().clone(), optimizer.state[p]["z"].clone()) for n, p in pl_module.named_parameters()}

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking or not self.train_point:
            return
        optimizer = trainer.optimizers[0]
        beta1 = optimizer.param_groups[0]["betas"][0]
        expected = {n: (y - (1 - beta1) * z) / beta1 for n, (y, z) in self.train_point.items()}
        weights = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        self.seen.append((weights, expected, optimizer.param_groups[0]["train_mode"]))


def test_schedule_free_validates_and_saves_the_averaged_point(compose_cfg, tmp_path):
    pytest.importorskip("schedulefree")
    cfg = compose_cfg(
        [
            "optimizer=schedulefree_adamw",
            "optimizer.lr=0.01",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=4",
            "trainer.limit_val_batches=2",
            "trainer.num_sanity_val_steps=1",
        ]
    )
    validate(cfg)
    watched = Watched()
    callbacks = [instantiate(cfg.callbacks.model_checkpoint), instantiate(cfg.callbacks.last_checkpoint), watched]
    module = build_module(cfg)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=instantiate(cfg.data))
    assert len(watched.seen) == 2 * 2  # two validation batches per epoch
    for weights, expected, train_mode in watched.seen:
        assert train_mode is False
        for name, tensor in weights.items():
            torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6)
        assert any(not torch.allclose(weights[n], watched.train_point[n][0]) for n in weights)  # not the train point
    last = torch.load(Path(cfg.hydra.runtime.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    final_weights = watched.seen[-1][0]
    assert all(torch.equal(last["state_dict"][n], final_weights[n]) for n in final_weights)
    assert {g["train_mode"] for g in last["optimizer_states"][0]["param_groups"]} == {False}


def test_schedule_free_refuses_a_scheduler(compose_cfg):
    pytest.importorskip("schedulefree")
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(["optimizer=schedulefree_adamw", "scheduler=cosine"]))
    assert info.value.key == "scheduler._target_" and "scheduler=none" in str(info.value)
    validate(compose_cfg(["optimizer=schedulefree_adamw"]))


def test_every_new_option_passes_validation_or_says_why(compose_cfg):
    for name in TRAINING:
        if name in ("schedulefree_adamw", "lion"):
            pytest.importorskip(BEYOND[name].split(".")[0])
        validate(compose_cfg([f"optimizer={name}"]))
