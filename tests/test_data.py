"""The DataModule on the real Fashion-MNIST files (sizes, statistics) and on synthetic IDX files written here."""

import pytest
import torch

from optimlight.app.data import (
    MEAN,
    STD,
    DataError,
    FashionMNISTDataModule,
    TensorBatches,
    augment_batch,
    normalize,
    read_idx,
    split_indices,
)
from optimlight.plugin.errors import ConfigError
from tests.idx import write_idx


@pytest.fixture(scope="module")
def datamodule(fashion_mnist):
    dm = FashionMNISTDataModule(data_dir=str(fashion_mnist), batch_size=128, val_size=5000, split_seed=7)
    dm.setup("fit")
    return dm


def test_split_sizes_disjoint_and_seeded():
    train, val = split_indices(60_000, 5_000, seed=3)
    assert len(train) == 55_000 and len(val) == 5_000
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(60_000))
    again_train, again_val = split_indices(60_000, 5_000, seed=3)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, split_indices(60_000, 5_000, seed=4)[1])


def test_real_data_sizes_and_normalization(datamodule):
    train_x, train_y = datamodule._tensors["train"]
    val_x, _ = datamodule._tensors["val"]
    test_x, test_y = datamodule._tensors["test"]
    assert train_x.shape == (55_000, 1, 28, 28) and val_x.shape == (5_000, 1, 28, 28)
    assert test_x.shape == (10_000, 1, 28, 28) and test_y.shape == (10_000,)
    assert set(train_y.unique().tolist()) == set(range(10))
    everything = torch.cat([train_x, val_x])
    # normalized with the dataset's own statistics: mean ~0, std ~1 over the 60,000 training images
    assert abs(everything.mean().item()) < 1e-3 and abs(everything.std().item() - 1) < 2e-3
    raw = everything * STD + MEAN
    assert raw.min().item() == pytest.approx(0.0, abs=1e-6) and raw.max().item() == pytest.approx(1.0, abs=1e-6)


def test_tensor_path_matches_torchvision_transforms(fashion_mnist, datamodule):
    from torchvision import datasets, transforms

    reference = datasets.FashionMNIST(
        str(fashion_mnist),
        train=False,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))]),
    )
    x, y = reference[123]
    test_x, test_y = datamodule._tensors["test"]
    assert torch.allclose(test_x[123], x, atol=1e-6) and test_y[123].item() == y


def test_batches_cover_the_split_once_and_reshuffle_each_epoch(datamodule):
    loader = datamodule.train_dataloader()
    loader.set_epoch(0)
    first = torch.cat([y for _, y in loader])
    assert len(first) == 55_000 and len(loader) == -(-55_000 // 128)
    assert torch.equal(first.sort().values, datamodule._tensors["train"][1].sort().values)
    loader.set_epoch(1)
    second = torch.cat([y for _, y in loader])
    assert not torch.equal(first, second)


def test_ddp_shards_are_disjoint_and_equal_sized():
    x, y = torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10)
    shards = [torch.cat([b for _, b in TensorBatches(x, y, 2, shuffle=True, rank=r, world_size=3)]) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded like DistributedSampler
    assert set(torch.cat(shards).tolist()) == set(range(10))


def test_augmentation_crops_and_flips_like_torchvision():
    image = normalize(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8))
    out = augment_batch(image.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    assert out.shape == (64, 1, 28, 28)
    background = (0 - MEAN) / STD
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4), value=background)[0, 0]
    candidates = [padded[i : i + 28, j : j + 28] for i in range(9) for j in range(9)]
    candidates += [c.flip(-1) for c in candidates]
    for sample in out[:, 0]:
        assert any(torch.equal(sample, c) for c in candidates)
    assert len({tuple(s.flatten().tolist()[:50]) for s in out[:, 0]}) > 10


def test_dataloader_path_uses_the_same_split(data_dir):
    dm = FashionMNISTDataModule(data_dir=str(data_dir), batch_size=256, val_size=1000, loader="dataloader")
    dm.setup("fit")
    tensor_dm = FashionMNISTDataModule(data_dir=str(data_dir), batch_size=256, val_size=1000)
    tensor_dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    tx, ty = next(iter(tensor_dm.val_dataloader()))
    assert len(y) == len(ty) == 1000
    assert torch.equal(y, ty) and torch.allclose(x, tx, atol=1e-6)


def test_truncated_idx_file_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, torch.zeros(5, 28, 28, dtype=torch.uint8))
    assert read_idx(path).shape == (5, 28, 28)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(path)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"batch_size": 0}, "data.batch_size"), ({"val_size": 60_000}, "data.val_size"), ({"loader": "x"}, "data.loader")],
)
def test_bad_arguments_are_refused_before_reading(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        FashionMNISTDataModule(data_dir="/nonexistent", **kwargs)
