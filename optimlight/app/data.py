"""Fashion-MNIST as a LightningDataModule, with two interchangeable input paths.

`loader=tensor` (default) decodes the IDX files once into normalized tensors and batches by index: on a
small dataset the per-sample PIL -> ToTensor -> Normalize pipeline costs more than the model. `loader=dataloader`
is the usual torchvision dataset + DataLoader. Both use the same seeded split, the same normalization and the
same augmentation semantics (random crop with zero padding of the raw image, horizontal flip).
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset
from typing_extensions import override

from optimlight.app.ranges import PositiveInt, Seed
from optimlight.plugin.errors import ConfigError


class DataError(RuntimeError):
    """Missing, truncated or corrupted data files; the message names the file and what to do."""


MEAN, STD = 0.2860, 0.3530
TRAIN_SIZE, TEST_SIZE = 60_000, 10_000
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
LOADERS = ("tensor", "dataloader")
PAD = 4


def default_data_dir() -> str:
    """`OPTIMLIGHT_DATA_DIR` when set (CI, shared machines), else `./data` as torchvision users expect."""
    return os.environ.get("OPTIMLIGHT_DATA_DIR", "./data")


def raw_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "FashionMNIST" / "raw"


def read_idx(path: Path) -> torch.Tensor:
    """Decode one uint8 IDX file, refusing truncated or corrupted files instead of returning fewer samples."""
    data = path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, expected {expected} for shape {shape} (truncated or corrupted)")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def ensure_raw_files(data_dir: str | Path, download: bool = True) -> Path:
    """Return the raw folder, downloading with torchvision when files are missing; one clear error otherwise."""
    folder = raw_dir(data_dir).resolve()
    missing = [name for pair in RAW_FILES.values() for name in pair if not (folder / name).exists()]
    if not missing:
        return folder
    hint = (
        f"Fashion-MNIST not found: {', '.join(missing)} missing in {folder}/. Put the four IDX files "
        f"(train-/t10k-images-idx3-ubyte, train-/t10k-labels-idx1-ubyte) in <data_dir>/FashionMNIST/raw/ "
        f"and set data.data_dir=<data_dir> (or OPTIMLIGHT_DATA_DIR)"
    )
    if not download:
        raise DataError(hint)
    from torchvision.datasets import FashionMNIST

    created = [p for p in (folder, *folder.parents) if not p.exists()]  # what a failed download must not leave
    try:
        FashionMNIST(str(data_dir), train=True, download=True)
        FashionMNIST(str(data_dir), train=False, download=True)
    except Exception as exc:  # no internet, proxy, disk full: the user needs the hint, not the stack
        for path in created:  # innermost first; only folders the download made and left empty
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        cause = " ".join(str(exc).split())  # torchvision's message spans lines: its cause is on the last ones
        raise DataError(f"{hint}; the download failed: {exc.__class__.__name__}: {cause}") from exc
    return folder


def load_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_file, labels_file = RAW_FILES[split]
    images, labels = read_idx(folder / images_file), read_idx(folder / labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: {images_file} {tuple(images.shape)} does not match {labels_file} {tuple(labels.shape)}")
    return images, labels.long()


def pixel_stats(standardize: bool) -> tuple[float, float]:
    """(mean, std) that pixels in [0, 1] are standardized with: Fashion-MNIST's, or (0, 1) to keep them in [0, 1]."""
    return (MEAN, STD) if standardize else (0.0, 1.0)


def normalize(images: torch.Tensor, standardize: bool = True) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28), the same values as ToTensor (+ Normalize(MEAN, STD))."""
    mean, std = pixel_stats(standardize)
    return ((images.float() / 255.0 - mean) / std).unsqueeze(1)


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation: the first `val_size` indices validate, the rest train. Both paths share it."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


def augment_batch(x: torch.Tensor, generator: torch.Generator, standardize: bool = True) -> torch.Tensor:
    """Random crop with zero padding (of the raw image) and horizontal flip, for a whole normalized batch."""
    b, _, h, w = x.shape
    mean, std = pixel_stats(standardize)
    background = (0.0 - mean) / std  # a black pixel after normalization
    padded = F.pad(x, (PAD, PAD, PAD, PAD), value=background)
    dy = torch.randint(0, 2 * PAD + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * PAD + 1, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(-1), cols)[:, None, :]
    return padded[torch.arange(b, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)


class TensorBatches:
    """Batches of preloaded tensors by index: a drop-in for a DataLoader on a dataset that fits in memory.

    Shuffling is a permutation seeded by (seed, epoch); under DDP each rank takes every world_size-th index of
    the padded permutation, as DistributedSampler does. `sampler.set_epoch` is what Lightning calls each epoch.
    `state_dict`/`load_state_dict` (Lightning saves them in checkpoints) let a run resumed mid-epoch continue at
    the next batch; augmentation draws from a generator seeded per batch, so resumed batches are the same too.
    """

    def __init__(self, x, y, batch_size, shuffle=False, augment=False, seed=0, rank=0, world_size=1, standardize=True):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.augment, self.seed = batch_size, shuffle, augment, seed
        self.standardize = standardize
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position, self._resume_at = 0, 0, 0
        self.sampler = self  # Lightning calls `dataloader.sampler.set_epoch(epoch)` at each epoch start
        self.batch_sampler = None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._resume_at = 0  # a resume point holds for its own epoch only
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._resume_at = state["epoch"], state["position"]

    def order(self) -> torch.Tensor:
        """This epoch's sample order (this rank's share under DDP): batch i is order[i * batch_size:][:batch_size]."""
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            per_rank = -(-n // self.world_size)
            order = torch.cat([order, order[: per_rank * self.world_size - n]])[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = -(-len(self.x) // self.world_size) if self.world_size > 1 else len(self.x)
        return -(-n // self.batch_size)

    def __iter__(self):
        order = self.order().to(self.x.device)
        # the resume point stays for every iterator of its epoch: Lightning may start one, prefetch, and start another
        start = self._resume_at
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            xb = self.x[idx]
            if self.augment:
                key = ((self.seed * 10_007 + self.epoch) * 1_000_003 + i) * 97 + self.rank
                xb = augment_batch(xb, torch.Generator().manual_seed(key), self.standardize)
            self.position = i + 1
            yield xb, self.y[idx]


class EpochSampler(DistributedSampler):
    """DistributedSampler's order (a permutation seeded by seed + epoch, this rank's share of it): the same order as
    TensorBatches, a new one each epoch through `set_epoch`, which Lightning calls, and none of Lightning's sampler
    replacement under DDP. `skip` leaves out the epoch's first samples: a resumed epoch starts where it stopped."""

    def __init__(self, dataset, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    @override
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0  # a resume point holds for its own epoch only
        super().set_epoch(epoch)

    @override
    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)


class ResumableDataLoader(DataLoader):
    """A DataLoader over an EpochSampler that Lightning can save and restore mid-epoch (its `state_dict` is in every
    checkpoint), as it does TensorBatches: a run resumed mid-epoch reads the epoch's remaining batches, no others."""

    _position = 0  # a class attribute, no __init__ argument: Lightning may re-create a DataLoader from its arguments

    @override
    def __iter__(self):
        self._position = self.sampler.skip // self.batch_size
        for batch in super().__iter__():
            self._position += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_epoch(state["epoch"])
        self.sampler.skip = state["position"] * self.batch_size


class FashionMNISTDataModule(L.LightningDataModule):
    """Fashion-MNIST with a seeded train/val split of the 60,000 training images and the official test set.

    `split_seed` alone fixes which images validate, so runs of every `seed` are scored on the same images;
    `seed` (the run's seed) fixes the shuffling order and the augmentation of each epoch. `standardize=False`
    keeps pixels in [0, 1] (DeepOBS's protocol) instead of standardizing them with Fashion-MNIST's mean and std.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt | None = None,
        num_workers: int = 0,
        val_size: int = 5_000,
        split_seed: Seed = 42,
        seed: Seed = 0,
        standardize: bool = True,
        augment: bool = False,
        loader: str = "tensor",
        pin_memory: bool = False,
        download: bool = True,
    ):
        super().__init__()
        check_data_args(batch_size=batch_size, val_size=val_size, num_workers=num_workers, loader=loader)
        self.save_hyperparameters()
        self.data_dir = data_dir or default_data_dir()
        self.eval_batch_size = eval_batch_size or max(batch_size, 1000)
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare_data(self) -> None:
        ensure_raw_files(self.data_dir, download=self.hparams.download)

    def setup(self, stage: str | None = None) -> None:
        if self._tensors:
            return
        folder = ensure_raw_files(self.data_dir, download=False)
        train_x, train_y = load_split(folder, "train")
        test_x, test_y = load_split(folder, "test")
        if self.hparams.val_size >= len(train_x):
            raise ConfigError("data.val_size", self.hparams.val_size, f"an integer in [1, {len(train_x)})")
        train_idx, val_idx = split_indices(len(train_x), self.hparams.val_size, self.hparams.split_seed)
        self.split = {"train": train_idx, "val": val_idx}
        if self.hparams.loader == "tensor":
            device = self._device()
            standardize = self.hparams.standardize
            full_x, test_xn = normalize(train_x, standardize).to(device), normalize(test_x, standardize).to(device)
            train_y, test_y = train_y.to(device), test_y.to(device)
            self._tensors = {
                "train": (full_x[train_idx.to(device)], train_y[train_idx.to(device)]),
                "val": (full_x[val_idx.to(device)], train_y[val_idx.to(device)]),
                "test": (test_xn, test_y),
            }
        else:
            self._tensors = {"train": (train_x, train_y)}  # marks setup done; datasets are built per loader

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The preloaded, normalized (images, labels) of `split` (train, val or test; `loader=tensor`, after setup)."""
        return self._tensors[split]

    def _device(self) -> torch.device:
        """Keep the whole dataset on the accelerator the module trains on (it is 200 MB as float32)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.strategy.root_device.type == "cuda":
            return trainer.strategy.root_device
        return torch.device("cpu")

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _tensor_batches(self, split: str, shuffle: bool) -> TensorBatches:
        x, y = self._tensors[split]
        rank, world = self._rank_world()
        return TensorBatches(
            x,
            y,
            batch_size=self.hparams.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            augment=self.hparams.augment and split == "train",
            standardize=self.hparams.standardize,
            seed=self.hparams.seed,
            rank=rank,
            world_size=world,
        )

    def _torchvision_loader(self, split: str, shuffle: bool) -> DataLoader:
        from torchvision import datasets, transforms

        mean, std = pixel_stats(self.hparams.standardize)
        steps = [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]
        if self.hparams.augment and split == "train":
            steps = [transforms.RandomCrop(28, padding=PAD), transforms.RandomHorizontalFlip()] + steps
        dataset = datasets.FashionMNIST(self.data_dir, train=split != "test", transform=transforms.Compose(steps))
        if split != "test":
            dataset = Subset(dataset, self.split[split].tolist())
        rank, world = self._rank_world()
        loader = ResumableDataLoader if shuffle else DataLoader
        return loader(
            dataset,
            batch_size=self.hparams.batch_size if split == "train" else self.eval_batch_size,
            sampler=EpochSampler(dataset, self.hparams.seed, rank, world) if shuffle else None,
            # its own generator for the workers' base seed: each new iterator (a resume makes one more) would
            # otherwise draw from the global RNG that dropout and augmentation use, and shift them
            generator=torch.Generator().manual_seed(self.hparams.seed),
            num_workers=self.hparams.num_workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def _loader(self, split: str, shuffle: bool = False):
        if self.hparams.loader == "tensor":
            return self._tensor_batches(split, shuffle)
        return self._torchvision_loader(split, shuffle)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")


def check_data_args(batch_size, val_size, num_workers, loader) -> None:
    """Values that are wrong whatever the files hold, refused before anything is read."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError("data.batch_size", batch_size, "a positive integer")
    if not isinstance(val_size, int) or isinstance(val_size, bool) or not 1 <= val_size < TRAIN_SIZE:
        raise ConfigError("data.val_size", val_size, f"an integer in [1, {TRAIN_SIZE})")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError("data.num_workers", num_workers, "a non-negative integer")
    if loader not in LOADERS:
        raise ConfigError("data.loader", loader, f"one of {', '.join(LOADERS)}")
