"""IDX files written by the tests themselves: a synthetic Fashion-MNIST that needs no download."""

from __future__ import annotations

from pathlib import Path

import torch

from optimlight.app.data import RAW_FILES, raw_dir


def write_idx(path: Path, array: torch.Tensor) -> None:
    """`array` (uint8) as an IDX file: magic 0 0 8 ndim, the dimensions big-endian, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.numpy().tobytes())


def synthetic_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` 28x28 uint8 images whose class c = i % 10 sets the brightness (20c + 30, plus noise) of a central
    square: learnable in a few steps, and unchanged in kind by the crop-and-flip augmentation."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.zeros(n, 28, 28, dtype=torch.int32)
    noise = torch.randint(0, 40, (n, 20, 20), generator=generator, dtype=torch.int32)
    images[:, 4:24, 4:24] = noise + (20 * labels + 30)[:, None, None]
    return images.clamp(0, 255).to(torch.uint8), labels.to(torch.uint8)


def write_synthetic_fashion_mnist(data_dir: Path, n_train: int = 10_000, n_test: int = 1_000) -> Path:
    """The four raw files under `<data_dir>/FashionMNIST/raw/`, in torchvision's layout; returns `data_dir`."""
    folder = raw_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = synthetic_images(n, seed)
        images_file, labels_file = RAW_FILES[split]
        write_idx(folder / images_file, images)
        write_idx(folder / labels_file, labels)
    return data_dir
