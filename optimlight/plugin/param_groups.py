"""Which parameters get weight decay: `no_decay` rules (kinds and name globs) and the two parameter groups.

Plain functions over an `nn.Module`; `NO_DECAY_KINDS` says what each rule excludes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from optimlight.plugin.errors import ConfigError

#: The normalization layers whose parameters `no_decay: [norm]` excludes (subclasses included).
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm1d/2d/3d, lazy variants
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.LocalResponseNorm,
)
#: What `no_decay` may name besides glob patterns on parameter names.
NO_DECAY_KINDS = {
    "bias": "parameters whose name has the word bias (`bias`, `in_proj_bias`, `bias_ih_l0`, ...)",
    "norm": "every parameter of a normalization layer",
    "embedding": "every parameter of an nn.Embedding / nn.EmbeddingBag",
    "1d": "every parameter with one dimension or fewer",
}
DEFAULT_NO_DECAY = ("bias", "norm")
GLOB_CHARS = "*?["


def split_no_decay(rules: Iterable[str]) -> tuple[set[str], list[str]]:
    """`no_decay` entries -> (kinds, glob patterns); a bare word that is no known kind is an error, not a glob."""
    allowed = ", ".join(NO_DECAY_KINDS) + " or a glob pattern on parameter names (with * ? [)"
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
        raise ConfigError("optimizer.no_decay", rules, f"a list of: {allowed}")  # a string would split into letters
    kinds, patterns = set(), []
    for rule in rules:
        if any(c in str(rule) for c in GLOB_CHARS):
            patterns.append(str(rule))
        elif rule in NO_DECAY_KINDS:
            kinds.add(rule)
        else:
            raise ConfigError("optimizer.no_decay", rule, allowed)
    return kinds, patterns


def is_bias_name(param_name: str) -> bool:
    """A module's own parameter name with `bias` as one of its underscore-separated words: nn.Linear's `bias`,
    nn.MultiheadAttention's `in_proj_bias`, nn.LSTM's `bias_ih_l0` / `bias_hh_l0`, but not `unbiased_scale`."""
    return "bias" in param_name.split("_")


def _excluded_by_kind(module: nn.Module, param_name: str, param: torch.Tensor, kinds: set[str]) -> bool:
    return (
        ("bias" in kinds and is_bias_name(param_name))
        or ("norm" in kinds and isinstance(module, NORM_LAYERS))
        or ("embedding" in kinds and isinstance(module, (nn.Embedding, nn.EmbeddingBag)))
        or ("1d" in kinds and param.ndim <= 1)
    )


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every parameter that trains: frozen ones left out, a tied one once (its first name)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def no_decay_names(model: nn.Module, no_decay: Iterable[str] = DEFAULT_NO_DECAY) -> set[str]:
    """Names of the trainable parameters that get no weight decay.

    Args:
        model: the module whose `named_parameters()` names are returned.
        no_decay: kinds (`bias`, `norm`, `embedding`, `1d`) and glob patterns on parameter names.

    Returns:
        The excluded names. A tied parameter is excluded when any module that owns it, or any of its names,
        matches a rule.
    """
    kinds, patterns = split_no_decay(no_decay)
    canonical = {id(p): name for name, p in trainable(model)}
    excluded = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) not in canonical:
                continue
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            if _excluded_by_kind(module, param_name, param, kinds) or any(
                fnmatch.fnmatchcase(full_name, pattern) for pattern in patterns
            ):
                excluded.add(canonical[id(param)])
    return excluded


def param_groups(model: nn.Module, weight_decay: float = 0.0, no_decay: Iterable[str] = DEFAULT_NO_DECAY) -> list[dict]:
    """Trainable parameters split into a `decay` group and a `no_decay` group (weight_decay=0).

    The split does not depend on the value of `weight_decay`, so a sweep over it (0 included) logs the same
    group names. Frozen parameters are left out, tied parameters appear once, empty groups are dropped.

    Returns:
        Groups whose `params` hold (name, tensor) pairs, which torch.optim keeps as the group's `param_names`;
        `name` labels the group for LearningRateMonitor (`lr-AdamW/decay`) and the audit.
    """
    named = trainable(model)
    skip = no_decay_names(model, no_decay)
    groups: list[dict[str, Any]] = [
        {"name": "decay", "weight_decay": weight_decay, "params": [(n, p) for n, p in named if n not in skip]},
        {"name": "no_decay", "weight_decay": 0.0, "params": [(n, p) for n, p in named if n in skip]},
    ]
    groups = [g for g in groups if g["params"]]
    grouped = [id(p) for g in groups for _, p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(named), "every trainable parameter must be in exactly one group"
    return groups
