"""DeepOBS's Fashion-MNIST test problems (Schneider, Balles & Hennig, ICLR 2019), so that optimlight's numbers
stand beside DeepOBS's published baselines: `fmnist_logreg`, `fmnist_mlp` and `fmnist_2c2d`, with DeepOBS's own
initialization. Definitions from fsschneider/DeepOBS, `deepobs/pytorch/testproblems/testproblems_modules.py` and
`testproblems_utils.py` (docs/deepobs.md cites them and lists where optimlight's protocol still differs)."""

from __future__ import annotations

import torch
from torch import nn

from optimlight.app.models import IMAGE_SHAPE

PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]


def truncated_normal_(weight: torch.Tensor, std: float) -> None:
    """TensorFlow's truncated normal, as DeepOBS emulates it: N(0, std) redrawn beyond two standard deviations."""
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def init_layers(net: nn.Module, std: float, bias: float) -> None:
    """Every Linear and Conv2d: truncated-normal weights with `std`, biases set to `bias`."""
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            truncated_normal_(module.weight, std)
            nn.init.constant_(module.bias, bias)


class LogReg(nn.Sequential):
    """fmnist_logreg: 784 -> 10, weights and biases initialized to 0."""

    def __init__(self, num_classes: int = 10):
        super().__init__(nn.Flatten(), nn.Linear(PIXELS, num_classes))
        nn.init.zeros_(self[1].weight)
        nn.init.zeros_(self[1].bias)


class DeepOBSMLP(nn.Sequential):
    """fmnist_mlp: 784-1000-500-100-10 with ReLU; truncated normal (std 3e-2) weights, biases 0."""

    def __init__(self, num_classes: int = 10):
        widths = [PIXELS, 1000, 500, 100]
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        super().__init__(*layers, nn.Linear(widths[-1], num_classes))
        init_layers(self, std=3e-2, bias=0.0)


class DeepOBS2C2D(nn.Sequential):
    """fmnist_2c2d: conv 32@5x5 "same" + ReLU + 2x2 max-pool, conv 64@5x5 "same" + ReLU + 2x2 max-pool, dense 1024
    + ReLU, dense 10; truncated normal (std 0.05) weights, biases 0.05. For 28x28 inputs TensorFlow's "same"
    padding is 2 pixels a side for the 5x5 convolutions and none for the pools."""

    def __init__(self, num_classes: int = 10):
        super().__init__(
            nn.Conv2d(IMAGE_SHAPE[0], 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Flatten(),
            nn.Linear(7 * 7 * 64, 1024),
            nn.ReLU(),
            nn.Linear(1024, num_classes),
        )
        init_layers(self, std=0.05, bias=0.05)
