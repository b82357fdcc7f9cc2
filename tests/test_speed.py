"""The speed knobs do what they say without changing the numbers, and bench/speed.py runs end to end.

Timings are the bench's business (printed, never asserted): these tests check behaviour only.
"""

from __future__ import annotations

import copy
import os
import pickle
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer import call
from omegaconf import OmegaConf
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from optimlight.app.build import build_module
from optimlight.app.csv_log import HistoryWriter
from optimlight.app.hooks import skip_idle_batch_hooks
from optimlight.app.models import MLP
from optimlight.app.module import EpochSums
from optimlight.app.run import apply_speed_settings
from optimlight.plugin import configure_optimizers
from optimlight.plugin.cuda_probe import NVML_CHECK, nvml_count, skip_failing_nvml_check
from optimlight.plugin.optimizers import build_optimizer
from tests.conftest import load_bench


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd", "adagrad"])
@pytest.mark.parametrize("implementation", ["foreach", "fused"])
def test_foreach_and_fused_steps_match_the_default_loop(compose_cfg, optimizer, implementation):
    """Three steps of the same MLP with the same gradients: the flag reaches every group, the weights agree."""
    cfg = OmegaConf.to_container(compose_cfg([f"optimizer={optimizer}"]).optimizer, resolve=True)
    torch.manual_seed(0)
    default_net = MLP()
    other_net = copy.deepcopy(default_net)
    default_opt = build_optimizer(default_net, cfg)
    other_opt = build_optimizer(other_net, {**cfg, implementation: True})
    assert all(group[implementation] for group in other_opt.param_groups)
    assert not any(group.get(implementation) for group in default_opt.param_groups)
    start = copy.deepcopy(default_net.state_dict())
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(3):
        for net, opt in ((default_net, default_opt), (other_net, other_opt)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for (name, a), b in zip(default_net.named_parameters(), other_net.parameters()):
        assert not torch.equal(a, start[name])  # the steps moved the weights
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_optimizer_trains_and_is_what_the_checkpoint_holds(train_run, tmp_path):
    cfg, results = train_run(["optimizer.fused=true"])
    assert results["status"] == "completed" and 0.1 < results["metrics"]["test/acc"] <= 1
    last = torch.load(Path(cfg.hydra.runtime.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(group["fused"] for group in last["optimizer_states"][0]["param_groups"])


def test_compile_keeps_parameter_names_and_trains(compose_cfg, train_run):
    module = build_module(compose_cfg(["module.compile=true"]))
    assert module.net._compiled_call_impl is not None  # nn.Module.compile: compiled in place
    plain_names = set(build_module(compose_cfg()).state_dict())
    assert set(module.state_dict()) == plain_names  # no `_orig_mod.` prefix: checkpoints load either way

    cfg, results = train_run(["module.compile=true"])
    assert results["status"] == "completed" and 0.1 < results["metrics"]["test/acc"] <= 1
    best = torch.load(results["best_checkpoint"], weights_only=True)
    assert set(best["state_dict"]) == plain_names


def test_channels_last_feeds_the_convolutions_nhwc_with_the_same_logits(compose_cfg):
    nhwc = build_module(compose_cfg(["model=cnn", "module.channels_last=true"]))
    nchw = build_module(compose_cfg(["model=cnn"]))
    nchw.load_state_dict(nhwc.state_dict())
    # the last convolution: its input has many channels, so NHWC and NCHW strides differ
    conv = [m for m in nhwc.net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert conv.in_channels > 1
    seen = []
    conv.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    x = torch.randn(8, 1, 28, 28)
    nhwc.eval()
    nchw.eval()
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), nchw(x), rtol=1e-4, atol=1e-5)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()


def test_speed_settings_set_torch_threads_and_matmul_precision(compose_cfg, restore_torch_settings):
    cfg = compose_cfg(["speed.num_threads=1", "speed.float32_matmul_precision=medium"])
    apply_speed_settings(cfg, instantiate(cfg.trainer, logger=False).num_devices)
    assert torch.get_num_threads() == 1 and torch.get_float32_matmul_precision() == "medium"
    before = torch.get_num_threads(), torch.get_float32_matmul_precision()
    cfg = compose_cfg(["speed.num_threads=null"])  # null: torch's own settings are left as they are
    apply_speed_settings(cfg, instantiate(cfg.trainer, logger=False).num_devices)
    assert (torch.get_num_threads(), torch.get_float32_matmul_precision()) == before


needs_failing_nvml = pytest.mark.skipif(
    not torch.backends.cuda.is_built() or nvml_count() != -1, reason="a CUDA build of torch where NVML cannot load"
)


def nvml_probes(monkeypatch) -> list[int]:
    """The list each NVML probe torch makes (through its own `_device_count_nvml`) appends to."""
    probes: list[int] = []
    real = torch.cuda._device_count_nvml
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: probes.append(1) or real())
    return probes


@needs_failing_nvml
def test_optimizer_steps_stop_loading_nvml_where_it_cannot_load(compose_cfg, restore_torch_settings, monkeypatch):
    """Lightning's NVML-based check made every Adam step try to load libnvidia-ml and fail (~180 us a step here);
    after the run's speed settings a step asks the CUDA runtime directly, which gives the same answer."""
    monkeypatch.setenv(NVML_CHECK, "1")  # what `import lightning` sets
    probes = nvml_probes(monkeypatch)
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    available = torch.cuda.is_available()
    optimizer.step()
    assert probes, "each step probes NVML while the check is on"
    cfg = compose_cfg(["speed.num_threads=1"])
    apply_speed_settings(cfg, instantiate(cfg.trainer, logger=False).num_devices)
    probes.clear()
    optimizer.step()
    assert probes == [] and os.environ[NVML_CHECK] == "0"
    assert torch.cuda.is_available() == available


@needs_failing_nvml
def test_a_users_own_module_steps_without_the_nvml_load_through_configure_optimizers(monkeypatch):
    """The plugin path: a LightningModule of the user's own that returns optimlight's `configure_optimizers`."""
    monkeypatch.setenv(NVML_CHECK, "1")
    probes = nvml_probes(monkeypatch)

    class Own(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return configure_optimizers(self, {"_target_": "torch.optim.Adam", "lr": 0.01})

    seen: list[int] = []  # the probes so far, at the end of each training step

    class ProbesAtEachStep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(len(probes))

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 3)), batch_size=4)
    trainer = L.Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[ProbesAtEachStep()]
    )
    trainer.fit(Own(), loader)
    assert len(seen) == 3 and len(set(seen)) == 1, seen  # no step probed NVML
    assert os.environ[NVML_CHECK] == "0"


def test_the_nvml_check_stays_on_where_nvml_answers(monkeypatch):
    """A GPU machine (NVML counts its devices): Lightning's fork-safe check is kept."""
    monkeypatch.setenv(NVML_CHECK, "1")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: 1)
    assert not skip_failing_nvml_check() and os.environ[NVML_CHECK] == "1"
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: -1)
    assert skip_failing_nvml_check() and os.environ[NVML_CHECK] == "0"


def test_speed_bench_quick_compares_the_paths_on_the_same_batches(fashion_mnist, capsys, restore_torch_settings):
    out = load_bench("speed").main(["--quick", "--models", "mlp", "--data-dir", str(fashion_mnist)])["mlp"]
    printed = capsys.readouterr().out
    assert "ratios: a/b = " in printed and "c/a = " in printed
    assert set(out["median"]) == {"a optimlight", "b hand-written", "c DataLoader", "d bare Lightning"}
    assert all(t > 0 for t in out["median"].values())
    # same initial weights, same batches in the same order, same AdamW: the same network comes out
    acc = {name: values[0] for name, values in out["acc"].items()}
    assert abs(acc["a optimlight"] - acc["b hand-written"]) < 0.005
    assert abs(acc["d bare Lightning"] - acc["b hand-written"]) < 0.005


def test_speed_bench_knobs_quick_runs_every_knob(fashion_mnist, capsys, restore_torch_settings):
    threads = torch.get_num_threads()
    out = load_bench("speed").main(["--quick", "--knobs", "--models", "mlp", "--data-dir", str(fashion_mnist)])["mlp"]
    assert torch.get_num_threads() == threads  # the thread knob did not leak into later runs
    rows = set(out["median"])
    assert {
        "defaults",
        "optimizer.foreach=true",
        "optimizer.fused=true",
        "module.compile=true",
        "precision=bf16-mixed",
        "data.loader=dataloader",
    } <= rows
    assert "module.channels_last=true" not in rows  # the MLP has no convolutions
    assert "ratio" in capsys.readouterr().out
    acc = {name: values[0] for name, values in out["acc"].items()}
    for exact in ("optimizer.foreach=true", "optimizer.fused=true"):  # same math, another kernel
        assert abs(acc[exact] - acc["defaults"]) < 0.005


@pytest.mark.parametrize(
    "preset, model, settings",
    [
        ("fast", "mlp", {"optimizer.fused": True, "module.label_smoothing": 0.1}),
        ("fast_cnn", "cnn", {"optimizer.fused": True, "module.channels_last": True, "trainer.precision": "bf16-mixed"}),
    ],
)
def test_time_to_accuracy_presets_compose_and_train(train_run, preset, model, settings):
    """The presets' measured settings are what the run gets, and they train together (a few batches here;
    the README gives the full runs' seconds and accuracy)."""
    cfg, results = train_run([f"experiment={preset}"])
    assert results["choices"]["experiment"] == preset and results["choices"]["model"] == model
    for key, value in settings.items():
        assert OmegaConf.select(cfg, key) == value, key
    assert results["status"] == "completed" and 0.1 < results["metrics"]["test/acc"] <= 1


def test_speed_bench_population_quick_trains_the_same_networks_three_ways(
    fashion_mnist, capsys, restore_torch_settings, monkeypatch
):
    """K = 2: the population, two hand-written loops and two optimlight runs give the same test accuracies (same
    initial weights, batches and optimizers), and the population's jobs were one population (the bench checks).
    As in a fresh process, no HydraConfig is set before the sweep (earlier tests' compositions leave theirs)."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    bench = load_bench("speed")
    out = bench.main(["--quick", "--population", "--members", "2", "--data-dir", str(fashion_mnist)])[2]
    assert "ratios, wall: a/b = " in capsys.readouterr().out
    accs = {name: values[0] for name, values in out["acc"].items()}
    assert accs["a population"] == pytest.approx(accs["b hand-written"], abs=0.003)
    assert accs["a population"] == pytest.approx(accs["c optimlight runs"], abs=0.003)
    assert all(t > 0 for t in out["wall"].values())


class CountsBatchEnds(L.Callback):
    def __init__(self):
        self.calls = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.calls += 1


def test_idle_batch_hooks_are_skipped_and_the_others_run():
    """Inherited no-op batch hooks, and the per-batch check of a ModelCheckpoint that saves at epoch ends only,
    become None, which Lightning's dispatcher skips; hooks a class or an instance defines stay and run."""
    counter, every_epoch, every_step, own = (
        CountsBatchEnds(),
        ModelCheckpoint(),
        ModelCheckpoint(every_n_train_steps=2),
        L.Callback(),
    )
    own.on_before_backward = lambda *args: None
    skip_idle_batch_hooks([counter, every_epoch, every_step, own])
    assert counter.on_train_batch_start is None and counter.on_before_optimizer_step is None
    assert every_epoch.on_train_batch_end is None and every_step.on_train_batch_end is not None
    assert own.on_before_backward is not None and own.on_after_backward is None
    assert counter.on_train_epoch_end is not None  # not a batch hook: left as it is
    trainer = L.Trainer(
        callbacks=[counter], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    call._call_callback_hooks(trainer, "on_train_batch_start", None, 0)  # a None hook is skipped, not called
    call._call_callback_hooks(trainer, "on_train_batch_end", None, None, 0)
    assert counter.calls == 1


def test_epoch_sums_are_torchmetrics_values_and_take_over_its_checkpoint_states(compose_cfg):
    """train/loss and train/acc: the same numbers as MeanMetric and MulticlassAccuracy (which they replace, for
    the time of their per-step updates), and a checkpoint holding those metrics' states resumes with their sums."""
    torch.manual_seed(0)
    sums, mean = EpochSums(), MeanMetric(nan_strategy="disable")
    accuracy = MulticlassAccuracy(10, average="micro", validate_args=False)
    for size in [64] * 2 * EpochSums.COUNT_EVERY + [17]:  # hits counted on the way and at the end
        logits, target = torch.randn(size, 10), torch.randint(0, 10, (size,))
        loss = torch.nn.functional.cross_entropy(logits, target)
        sums.update(loss, logits, target)
        mean.update(loss)
        accuracy.update(logits, target)
    loss, acc = sums.compute(lambda tensor: tensor)
    assert torch.equal(loss, mean.compute()) and torch.equal(acc, accuracy.compute())

    module = build_module(compose_cfg())
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("train_sums.")}
    mean.persistent(True)
    accuracy.persistent(True)
    state.update({f"metrics.train_loss.{k}": v for k, v in mean.state_dict().items()})
    state.update({f"metrics.train_acc.{k}": v for k, v in accuracy.state_dict().items()})
    checkpoint = {"state_dict": state}
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])  # strict: no key left over, none missing
    assert module.train_sums.counts == [2 * EpochSums.COUNT_EVERY + 1, 64 * 2 * EpochSums.COUNT_EVERY + 17]
    assert module.train_sums.compute(lambda tensor: tensor) == (loss, acc)


def test_epoch_sums_stay_each_ranks_own():
    """No buffers (DDP broadcasts rank 0's at every forward), and a copy of their own in each ddp_spawn process
    (which unpickles the module from shared memory): every rank counts its own batches only."""
    sums = EpochSums()
    assert list(sums.buffers()) == [] and set(sums.state_dict()) == {"_extra_state"}
    spawned = pickle.loads(ForkingPickler.dumps(sums))  # how torch.multiprocessing hands the module to a process
    spawned.update(torch.tensor(0.5), torch.eye(2), torch.tensor([0, 1]))
    assert sums.get_extra_state().tolist() == [0, 0, 0, 0] and spawned.get_extra_state().tolist() == [0.5, 2, 1, 2]


def test_csv_history_takes_the_columns_another_writer_added(tmp_path):
    """Two writers of one metrics.csv (ddp_spawn's fit and test processes): the header a writer keeps is read
    again once the file is not as the writer left it, so each write has every column."""
    fit, test = HistoryWriter(str(tmp_path)), HistoryWriter(str(tmp_path))
    for writer, metrics, step in ((fit, {"train/loss": 1.0}, 0), (test, {"test/acc": 0.5}, 1), (fit, {"train/loss": 0.5}, 2)):
        writer.log_metrics(metrics, step)
        writer.save()
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert list(frame.columns) == ["step", "test/acc", "train/loss"] and list(frame["step"]) == [0, 1, 2]
    assert list(frame["train/loss"].dropna()) == [1.0, 0.5] and frame["test/acc"].notna().sum() == 1
