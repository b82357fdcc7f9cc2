"""DeepOBS's Fashion-MNIST test problems: the networks, their initialization, the [0, 1] data path, the presets."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from optimlight.app.data import FashionMNISTDataModule
from optimlight.app.deepobs import DeepOBS2C2D, DeepOBSMLP, LogReg
from optimlight.app.record import epoch_metrics
from optimlight.app.validate import validate


@pytest.mark.parametrize(
    "cls, parameters", [(LogReg, 7_850), (DeepOBSMLP, 1_336_610), (DeepOBS2C2D, 3_274_634)], ids=["logreg", "mlp", "2c2d"]
)
def test_parameter_counts_and_output_shapes(cls, parameters):
    net = cls()
    assert sum(p.numel() for p in net.parameters()) == parameters
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_initialization_is_deepobs():
    torch.manual_seed(0)
    mlp, conv, logreg = DeepOBSMLP(), DeepOBS2C2D(), LogReg()
    for net, std, bias in ((mlp, 3e-2, 0.0), (conv, 0.05, 0.05)):
        layers = [m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
        for layer in layers:
            w = layer.weight.detach()
            assert w.abs().max() <= 2 * std  # truncated at two standard deviations
            assert torch.all(layer.bias == bias)
        big = max(layers, key=lambda m: m.weight.numel()).weight.detach()
        # a normal truncated at +-2 sigma has std 0.8796 sigma
        assert big.std().item() == pytest.approx(0.8796 * std, rel=0.02)
    assert not logreg[1].weight.any() and not logreg[1].bias.any()


def test_the_2c2d_convolutions_keep_the_size_as_tensorflow_same_does():
    net = DeepOBS2C2D()
    x = torch.rand(2, 1, 28, 28)
    layers = list(net)
    assert torch.nn.Sequential(*layers[:3])(x).shape == (2, 32, 14, 14)
    assert torch.nn.Sequential(*layers[:6])(x).shape == (2, 64, 7, 7)


def test_unstandardized_pixels_stay_in_zero_one(data_dir):
    raw = FashionMNISTDataModule(data_dir=str(data_dir), val_size=5000, standardize=False, augment=True)
    raw.setup("fit")
    x, _ = next(iter(raw.train_dataloader()))
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.min() == 0.0  # augmentation pads with black, 0
    full = raw._tensors["train"][0]
    standardized = FashionMNISTDataModule(data_dir=str(data_dir), val_size=5000)
    standardized.setup("fit")
    torch.testing.assert_close(standardized._tensors["train"][0], (full - 0.2860) / 0.3530)


def test_the_dataloader_path_keeps_zero_one_too(data_dir):
    dm = FashionMNISTDataModule(data_dir=str(data_dir), val_size=5000, standardize=False, loader="dataloader")
    dm.setup("fit")
    x, _ = next(iter(dm.val_dataloader()))
    tensor_dm = FashionMNISTDataModule(data_dir=str(data_dir), val_size=5000, standardize=False)
    tensor_dm.setup("fit")
    torch.testing.assert_close(x, tensor_dm._tensors["val"][0][: len(x)])


@pytest.mark.parametrize("problem, model", [("2c2d", "DeepOBS2C2D"), ("mlp", "DeepOBSMLP")])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_presets_compose_with_the_protocol(compose_cfg, problem, model, optimizer):
    cfg = compose_cfg([f"experiment=deepobs_fmnist_{problem}", f"optimizer={optimizer}"])
    validate(cfg)
    assert cfg.model._target_.endswith(model) and cfg.scheduler._target_ is None
    assert (cfg.data.batch_size, cfg.data.val_size, cfg.data.standardize) == (128, 10_000, False)
    assert cfg.trainer.max_epochs == 100 and cfg.optimizer.weight_decay == 0.0
    assert instantiate(cfg.callbacks.test_every_epoch).__class__.__name__ == "TestEveryEpoch"


def test_test_every_epoch_logs_the_test_curve(train_run):
    cfg, record = train_run(["experiment=deepobs_fmnist_mlp", "optimizer=sgd", "trainer.max_epochs=2", "data.val_size=5000"])
    assert record["status"] == "completed"
    curve = epoch_metrics(cfg.hydra.runtime.output_dir, ("test_epoch/acc", "test_epoch/loss"))
    assert list(curve.index) == [1, 2]
    assert curve["test_epoch/acc"].between(0, 1).all() and (curve["test_epoch/loss"] > 0).all()
    # the whole test set (1,000 synthetic images): an accuracy is a multiple of 1/1000
    assert ((curve["test_epoch/acc"] * 1000).round(3) % 1 == 0).all()


def test_bench_prints_each_epoch_beside_deepobs(data_dir, tmp_path, capsys):
    from tests.conftest import load_bench

    bench = load_bench("deepobs")
    baseline = bench.load_baseline("2c2d", "adam")
    assert baseline["lr"] == pytest.approx(2.5118864315e-04) and len(baseline["test_acc"]) == len(baseline["seeds"]) >= 4
    mean, low, high = bench.per_epoch(baseline["test_acc"], 1)
    assert low <= mean <= high and 0.8 < mean < 0.9  # DeepOBS's first-epoch test accuracy
    assert bench.per_epoch(baseline["test_acc"], 50) is None  # not copied: shown as "-"
    limits = [f"data.data_dir={data_dir}", "data.val_size=5000", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]
    rows = bench.main(["--problem", "2c2d", "--optimizer", "adam", "--epochs", "2", "--out", str(tmp_path / "run"), *limits])
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["deepobs_acc"] is not None for r in rows)
    lines = capsys.readouterr().out.strip().splitlines()
    assert "fmnist_2c2d, adam lr 0.000251189; DeepOBS: 4 seeds of" in lines[-4]
    assert lines[-2].split()[:2] == ["1", f"{rows[0]['acc']:.4f}"]
    with pytest.raises(SystemExit):  # no DeepOBS baseline for the MLP: a learning rate must be given
        bench.main(["--problem", "mlp", "--optimizer", "sgd", "--epochs", "1", *limits])
