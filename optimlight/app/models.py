"""The networks the comparisons train: the seed experiment's MLP and a small CNN with BatchNorm."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

IMAGE_SHAPE = (1, 28, 28)


def check_widths(widths: Sequence[int]) -> None:
    """torch builds a Linear or Conv2d of width 0 and trains it silently (nothing flows through): refuse it."""
    if not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(f"every layer width must be a positive integer, got {list(widths)}")


class MLP(nn.Sequential):
    """Flatten -> Linear/ReLU per hidden width -> Linear. Defaults are seed 003's 784-256-128-10 net
    (docs/fashion-mnist-experiment.md)."""

    def __init__(self, hidden: Sequence[int] = (256, 128), num_classes: int = 10, dropout: float = 0.0):
        check_widths(hidden)
        widths = [IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2], *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], num_classes))
        super().__init__(*layers)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU + 2x2 max-pool; the BN affines (and the head's biases) are what no-decay skips."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))


class CNN(nn.Sequential):
    """conv_block per channel width (28 -> 14 -> 7 pixels), then Flatten -> Linear/ReLU -> Dropout -> Linear."""

    def __init__(self, channels: Sequence[int] = (32, 64), hidden: int = 128, num_classes: int = 10, dropout: float = 0.25):
        check_widths([*channels, hidden])
        widths = [IMAGE_SHAPE[0], *channels]
        side = IMAGE_SHAPE[1] // 2 ** len(channels)
        super().__init__(
            *(conv_block(c_in, c_out) for c_in, c_out in zip(widths, widths[1:])),
            nn.Flatten(),
            nn.Linear(widths[-1] * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
