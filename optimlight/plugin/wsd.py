"""Warmup-stable-decay's schedule after the warmup: the optimizer's lr held, then decayed over the final fraction.

The warmup in front is the scheduler node's shared linear warmup (`warmup_steps`/`warmup_epochs`), so
`StableDecayLR` counts the steps after it. Like every decaying schedule here, the floor is reached after the last
step (`total_steps` of them), so the last step still learns.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

#: decay shape -> the factor's fall from 1 to 0 as a function of the decay's progress in [0, 1].
DECAYS = {
    "linear": lambda progress: 1 - progress,
    "cosine": lambda progress: (1 + math.cos(math.pi * progress)) / 2,
    "1-sqrt": lambda progress: 1 - math.sqrt(progress),  # Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training"
}


class StableDecayLR(LRScheduler):
    """Each group's lr held for the first `(1 - decay_fraction) * total_steps` steps, then decayed to
    `end_factor * lr`, which the step after the last of `total_steps` would use.

    Args:
        optimizer: the optimizer whose groups' lr it sets.
        total_steps: scheduler steps of the whole schedule (the run's, after warmup).
        decay_fraction: the final fraction of the steps that decay, in (0, 1].
        end_factor: the floor as a fraction of each group's lr, in [0, 1).
        decay: the decay's shape, one of `DECAYS`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        decay_fraction: float = 0.2,
        end_factor: float = 0.0,
        decay: str = "linear",
        last_epoch: int = -1,
    ):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}, not {decay!r}")
        self.total_steps, self.end_factor, self.decay = total_steps, end_factor, decay
        self.decay_steps = max(1, round(decay_fraction * total_steps))
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The lr factor at scheduler step `step` (0: the first step)."""
        into_decay = step - (self.total_steps - self.decay_steps)
        if into_decay <= 0:
            return 1.0
        progress = min(into_decay, self.decay_steps) / self.decay_steps
        return self.end_factor + (1 - self.end_factor) * DECAYS[self.decay](progress)

    def get_lr(self) -> list[float | torch.Tensor]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
