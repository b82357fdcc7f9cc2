"""Output shapes, the seed network's layout, and a few optimizer steps lowering the loss."""

import torch
from torch import nn

from optimlight.app.models import CNN, MLP
from optimlight.plugin.optimizers import build_optimizer


def test_mlp_is_the_seed_network():
    layers = [m for m in MLP() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(784, 256), (256, 128), (128, 10)]


def test_output_shapes():
    x = torch.randn(5, 1, 28, 28)
    assert MLP(hidden=[64])(x).shape == (5, 10)
    assert CNN()(x).shape == (5, 10)
    assert CNN(channels=[8, 16, 32], hidden=20, num_classes=3)(x).shape == (5, 3)


def test_a_few_adamw_steps_lower_the_loss():
    torch.manual_seed(0)
    x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    for net in (MLP(), CNN()):
        opt = build_optimizer(net, {"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 0.01})
        losses = []
        for _ in range(25):
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.8 * losses[0]
