"""Muon for the hidden weight matrices and AdamW for every other parameter, as one optimizer.

torch's `Muon` orthogonalizes 2-D updates only, and its authors use it for hidden matrices alone: the input
embedding, the output layer, biases and norm gains train better with AdamW. Lightning's automatic optimization
drives one optimizer, so `MuonAdamW` holds both and steps both; its `param_groups` are theirs (the same dicts),
so schedulers, LearningRateMonitor and the audit see every group with its own lr and weight decay.

The routing rule (`muon_groups`): a parameter goes to Muon when it is the 2-D `weight` of an `nn.Linear` that is
not the output layer (the last `nn.Linear` in module order) and not tied to an `nn.Embedding`. Everything else
goes to AdamW: biases, norm layers, embeddings, the output layer, and convolution kernels, which torch's Muon
refuses (4-D) and which this rule does not reshape, so the CNN's convolutions train with AdamW and only its
hidden Linear layer with Muon.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from optimlight.plugin.nodes import constructor_defaults
from optimlight.plugin.param_groups import DEFAULT_NO_DECAY, param_groups, trainable


def muon_names(model: nn.Module) -> set[str]:
    """Names of the trainable parameters the rule routes to Muon (see the module docstring)."""
    canonical = {id(p): name for name, p in trainable(model)}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    tied = {id(p) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for p in m.parameters()}
    hidden = linears[:-1]  # the last Linear is the output layer
    return {
        canonical[id(m.weight)] for m in hidden if id(m.weight) in canonical and m.weight.ndim == 2 and id(m.weight) not in tied
    }


def muon_groups(model: nn.Module, muon_weight_decay: float, adamw_weight_decay: float, no_decay: Iterable[str]) -> list[dict]:
    """The `muon` group, then AdamW's `adamw_decay`/`adamw_no_decay` groups (the no-decay rules apply to AdamW's
    share only: every Muon matrix is a weight that decays). Each group carries `use_muon`."""
    to_muon = muon_names(model)
    muon = [(n, p) for n, p in trainable(model) if n in to_muon]
    groups = [{"name": "muon", "use_muon": True, "weight_decay": muon_weight_decay, "params": muon}] if muon else []
    for group in param_groups(model, adamw_weight_decay, no_decay):
        rest = [(n, p) for n, p in group["params"] if n not in to_muon]
        if rest:
            groups.append({**group, "name": f"adamw_{group['name']}", "use_muon": False, "params": rest})
    return groups


class MuonAdamW(torch.optim.Optimizer):
    """torch's Muon over the groups with `use_muon: true`, AdamW over the others, stepped together.

    Args:
        params: parameter groups, each with `use_muon` (see `muon_groups`).
        lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn: Muon's arguments.
        adamw: AdamW's arguments (lr, betas, eps, weight_decay, ...) for the other groups.
    """

    def __init__(
        self,
        params: Iterable[dict],
        lr: float = 0.02,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        eps: float = 1e-07,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        adamw: Mapping[str, Any] | None = None,
    ):
        groups = list(params)
        muon = [g for g in groups if g.get("use_muon")]
        other = [g for g in groups if not g.get("use_muon")]
        self.muon = (
            torch.optim.Muon(
                muon,
                lr=lr,
                weight_decay=weight_decay,
                momentum=momentum,
                nesterov=nesterov,
                ns_coefficients=ns_coefficients,
                eps=eps,
                ns_steps=ns_steps,
                adjust_lr_fn=adjust_lr_fn,
            )
            if muon
            else None
        )
        self.adamw = torch.optim.AdamW(other, **(adamw or {})) if other else None
        inner = [o for o in (self.muon, self.adamw) if o is not None]
        super().__init__([g for o in inner for g in o.param_groups], {})
        self._link()

    def _link(self) -> None:
        """Make the inner optimizers read and write this optimizer's groups and state (after init and a load)."""
        start = 0
        for inner in (self.muon, self.adamw):
            if inner is not None:
                inner.param_groups = self.param_groups[start : start + len(inner.param_groups)]
                inner.state = self.state
                start += len(inner.param_groups)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for inner in (self.muon, self.adamw):
            if inner is not None:
                inner.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if not isinstance(self.state, defaultdict):
            self.state = defaultdict(dict, self.state)
        self._link()


def groups_of(model: nn.Module, kwargs: Mapping[str, Any], no_decay: Iterable[str] = DEFAULT_NO_DECAY) -> list[dict]:
    """`muon_groups` from a node's constructor arguments, each class's default weight decay where none is set
    (the registry's `groups` for MuonAdamW)."""
    muon_decay = kwargs.get("weight_decay", constructor_defaults(MuonAdamW)["weight_decay"])
    adamw_decay = (kwargs.get("adamw") or {}).get("weight_decay", constructor_defaults(torch.optim.AdamW)["weight_decay"])
    return muon_groups(model, muon_decay, adamw_decay, no_decay)
