"""The optimizer of a config node `{_target_: torch.optim.X, <constructor args>, no_decay: [...]}`, and the checks
that refuse a node the optimizer would reject (or silently misuse) before a run builds anything."""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from optimlight.plugin.errors import ConfigError
from optimlight.plugin.nodes import constructor_args, constructor_defaults, import_object, is_integer, is_number, to_dict
from optimlight.plugin.param_groups import DEFAULT_NO_DECAY, param_groups, split_no_decay, trainable
from optimlight.plugin.registry import EXTRAS, optimizer_info

log = logging.getLogger(__name__)

#: Keys of an optimizer node that the plugin reads; every other key goes to the optimizer's constructor.
PLUGIN_KEYS = ("_target_", "no_decay")
MIXED_PRECISIONS = ("16-mixed", "bf16-mixed", "16", "bf16")


def optimizer_class(cfg: Mapping) -> type[torch.optim.Optimizer]:
    """The class the node's `_target_` names."""
    target = cfg.get("_target_")
    if not target:
        raise ConfigError("optimizer._target_", target, "a torch.optim class path such as torch.optim.AdamW")
    package = str(target).split(".", 1)[0]
    if package in EXTRAS and importlib.util.find_spec(package) is None:
        extra = EXTRAS[package]
        raise ConfigError("optimizer._target_", target, f"an installed class: pip install -e '.[{extra}]' (package {package})")
    return import_object(target, "optimizer._target_")


def arguments_of(cls: type, node: Mapping, prefix: str = "optimizer", skip: tuple[str, ...] = PLUGIN_KEYS) -> dict:
    """`node`'s constructor arguments of `cls`: unknown names refused, lists turned into the tuples torch expects,
    nested optimizer nodes (the registry's `nested`) checked against their own class."""
    allowed, nested = constructor_args(cls), optimizer_info(cls).nested
    kwargs = {}
    for key, value in node.items():
        if key in skip:
            continue
        if key not in allowed:
            raise ConfigError(f"{prefix}.{key}", value, f"an argument of {cls.__name__}: {', '.join(allowed)}")
        if key in nested:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}.{key}", value, f"a node of {nested[key].__name__}'s arguments")
            value = arguments_of(nested[key], value, f"{prefix}.{key}", skip=())
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return kwargs


def optimizer_kwargs(cfg: Mapping) -> dict:
    """The constructor arguments of the node (see `arguments_of`)."""
    return arguments_of(optimizer_class(cfg), cfg)


def has_sparse_gradients(model: nn.Module) -> bool:
    """Whether any trainable parameter gets a sparse gradient (an nn.Embedding/EmbeddingBag with sparse=True)."""
    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse and m.weight.requires_grad for m in model.modules())


def check_model(cfg: Mapping, model: nn.Module) -> None:
    """Refuse an optimizer that cannot train `model`: one for sparse gradients only, on a model that has none."""
    cls = optimizer_class(to_dict(cfg))
    if optimizer_info(cls).sparse_only and not has_sparse_gradients(model):
        allowed = (
            f"an optimizer for dense gradients: {cls.__name__} updates sparse gradients only "
            f"(nn.Embedding(sparse=True)) and {type(model).__name__} has none"
        )
        raise ConfigError("optimizer._target_", cfg.get("_target_"), allowed)


def build_optimizer(model: nn.Module, cfg: Mapping) -> torch.optim.Optimizer:
    """The optimizer of `cfg` over `model`'s trainable parameters.

    Args:
        model: any `nn.Module` (a LightningModule included).
        cfg: the optimizer node, as DictConfig or dict.

    Returns:
        The optimizer, with `decay`/`no_decay` parameter groups where the class takes groups (see the registry).
    """
    cfg = to_dict(cfg)
    cls, kwargs = optimizer_class(cfg), optimizer_kwargs(cfg)
    check_model(cfg, model)
    info, no_decay = optimizer_info(cls), cfg.get("no_decay", DEFAULT_NO_DECAY)
    if info.groups is not None:
        return cls(info.groups(model, kwargs, no_decay), **kwargs)
    if not info.param_groups:
        log.warning("%s takes a single parameter group: weight-decay grouping (no_decay) skipped", cls.__name__)
        return cls([{"name": "all", "params": trainable(model)}], **kwargs)
    default_decay = constructor_defaults(cls).get("weight_decay", 0.0)  # AdamW's is 0.01
    groups = param_groups(model, kwargs.get("weight_decay", default_decay), no_decay)
    return cls(groups, **kwargs)


#: constructor argument -> (test of a value, what is allowed); checked for every optimizer that has the argument.
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "eps": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "weight_decay": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "momentum": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),  # torch checks only >= 0
    "dampening": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "max_iter": (lambda v: is_integer(v) and v >= 1, "a positive integer"),  # L-BFGS: unchecked by torch
    "max_eval": (lambda v: v is None or (is_integer(v) and v >= 1), "null or a positive integer"),
    "history_size": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "ns_steps": (lambda v: is_integer(v) and v >= 1, "a positive integer"),  # Muon's Newton-Schulz iterations
    "warmup_steps": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),  # schedule-free's own warmup
    "betas": (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(is_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1), e.g. [0.9, 0.999]",
    ),
    "line_search_fn": (lambda v: v in (None, "strong_wolfe"), "null or strong_wolfe"),  # torch checks at step 1
}


def check_values(cls: type, node: Mapping, prefix: str = "optimizer") -> None:
    """`VALUE_RULES` (the class's own rules from the registry first) on `node`, and on its nested nodes."""
    info = optimizer_info(cls)
    for key, value in node.items():
        if is_number(value) and not math.isfinite(value):  # torch's range checks let NaN through (NaN < 0 is false)
            raise ConfigError(f"{prefix}.{key}", value, "a finite number")
    for key, (ok, allowed) in (VALUE_RULES | dict(info.rules)).items():
        if key in node and not ok(node[key]):
            raise ConfigError(f"{prefix}.{key}", node[key], allowed)
    for key, nested_cls in info.nested.items():
        check_values(nested_cls, node.get(key) or {}, f"{prefix}.{key}")


def check_implementation(cfg: Mapping, precision: str, gradient_clip_val: float | None) -> None:
    """`fused`/`foreach` combinations torch or Lightning would only reject at the first step."""
    if not cfg.get("fused"):
        return
    if cfg.get("foreach"):
        raise ConfigError("optimizer.fused", True, "false or null with optimizer.foreach=true (pick one implementation)")
    if cfg.get("differentiable"):
        raise ConfigError("optimizer.fused", True, "false or null with optimizer.differentiable=true (no fused form)")
    if str(precision) in ("16-mixed", "16") and gradient_clip_val:
        raise ConfigError(
            "optimizer.fused",
            True,
            "false or null with trainer.precision=16-mixed and trainer.gradient_clip_val "
            "(a fused step unscales the gradients itself, so Lightning cannot clip them before it)",
        )


def check_optimizer(cfg: Mapping, precision: str = "32-true", gradient_clip_val: float | None = None) -> None:
    """Refuse a node the optimizer would reject (or silently misuse) before the run builds anything.

    Args:
        cfg: the optimizer node.
        precision: Lightning's `trainer.precision`, for the optimizers that cannot run mixed.
        gradient_clip_val: Lightning's `trainer.gradient_clip_val`, for the fused checks.

    Raises:
        ConfigError: naming the first bad key, its value and what is allowed.
    """
    cfg = to_dict(cfg)
    cls = optimizer_class(cfg)
    optimizer_kwargs(cfg)  # unknown arguments
    split_no_decay(cfg.get("no_decay", ()))
    check_values(cls, cfg)
    momentum, dampening = cfg.get("momentum", 0), cfg.get("dampening", 0)
    if cfg.get("nesterov") and (momentum <= 0 or dampening != 0):
        raise ConfigError(
            "optimizer.nesterov", True, f"false, or momentum > 0 with dampening 0 (momentum={momentum}, dampening={dampening})"
        )
    check_implementation(cfg, precision, gradient_clip_val)
    if not optimizer_info(cls).mixed_precision and str(precision) in MIXED_PRECISIONS:
        raise ConfigError("trainer.precision", precision, f"a precision that is not mixed (32-true, 64-true) with {cls.__name__}")
