"""The speed knobs do what they say without changing the numbers, and bench/speed.py runs end to end.

Timings are the bench's business (printed, never asserted): these tests check behaviour only.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from optimlight.app.models import MLP
from optimlight.app.run import apply_speed_settings, build_module
from optimlight.plugin.optimizers import build_optimizer
from tests.conftest import load_bench


@pytest.fixture
def restore_torch_settings():
    threads, matmul = torch.get_num_threads(), torch.get_float32_matmul_precision()
    yield
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(matmul)


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
    apply_speed_settings(cfg.speed)
    assert torch.get_num_threads() == 1 and torch.get_float32_matmul_precision() == "medium"
    before = torch.get_num_threads(), torch.get_float32_matmul_precision()
    apply_speed_settings(compose_cfg().speed)  # null: torch's own settings are left as they are
    assert (torch.get_num_threads(), torch.get_float32_matmul_precision()) == before


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


def test_speed_bench_population_quick_trains_the_same_networks_three_ways(fashion_mnist, capsys, restore_torch_settings):
    """K = 2: the population, two hand-written loops and two optimlight runs give the same test accuracies (same
    initial weights, batches and optimizers), and the population's jobs were one population (the bench checks)."""
    bench = load_bench("speed")
    out = bench.main(["--quick", "--population", "--members", "2", "--data-dir", str(fashion_mnist)])[2]
    assert "ratios, wall: a/b = " in capsys.readouterr().out
    accs = {name: values[0] for name, values in out["acc"].items()}
    assert accs["a population"] == pytest.approx(accs["b hand-written"], abs=0.003)
    assert accs["a population"] == pytest.approx(accs["c optimlight runs"], abs=0.003)
    assert all(t > 0 for t in out["wall"].values())
