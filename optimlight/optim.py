"""Parameter groups (which tensors skip weight decay) and the optimizer built from its config node.

Plain functions over an `nn.Module` and a mapping; nothing here knows the data, the models or Hydra's app,
so a user's own LightningModule can call them as they are.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from optimlight.errors import ConfigError

log = logging.getLogger(__name__)

#: Keys of an optimizer node that the plugin reads; every other key goes to the optimizer's constructor.
PLUGIN_KEYS = ("_target_", "no_decay")
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
    "bias": "parameters named `bias`",
    "norm": "every parameter of a normalization layer",
    "embedding": "every parameter of an nn.Embedding / nn.EmbeddingBag",
    "1d": "every parameter with one dimension or fewer",
}
GLOB_CHARS = "*?["
#: Optimizers whose step re-evaluates the loss through the closure: torch allows them a single parameter group
#: (and they have no weight decay), and AMP's gradient scaler cannot drive them.
CLOSURE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.LBFGS,)
MIXED_PRECISIONS = ("16-mixed", "bf16-mixed", "16", "bf16")


def to_dict(node) -> dict:
    """A config node as a plain dict: DictConfig (resolved), any Mapping, or None (-> {})."""
    if node is None:
        return {}
    if hasattr(node, "_metadata"):  # DictConfig, without importing omegaconf for users who do not have it
        from omegaconf import OmegaConf

        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


def import_object(path: str, key: str):
    """`package.module.Name` -> the object, with an error naming the config key when it does not exist."""
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(key, path, "an importable `package.module.Class` path") from None


def optimizer_class(cfg: Mapping) -> type[torch.optim.Optimizer]:
    target = cfg.get("_target_")
    if not target:
        raise ConfigError("optimizer._target_", target, "a torch.optim class path such as torch.optim.AdamW")
    return import_object(target, "optimizer._target_")


def constructor_args(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's keyword arguments (everything but `self` and `params`)."""
    return {
        name: p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "params") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def optimizer_kwargs(cfg: Mapping) -> dict:
    """The constructor arguments of the node: unknown names refused, lists turned into the tuples torch expects."""
    cls = optimizer_class(cfg)
    allowed = constructor_args(cls)
    kwargs = {}
    for key, value in cfg.items():
        if key in PLUGIN_KEYS:
            continue
        if key not in allowed:
            raise ConfigError(f"optimizer.{key}", value, f"an argument of {cls.__name__}: {', '.join(allowed)}")
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return kwargs


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


def _excluded_by_kind(module: nn.Module, param_name: str, param: torch.Tensor, kinds: set[str]) -> bool:
    return (
        ("bias" in kinds and param_name == "bias")
        or ("norm" in kinds and isinstance(module, NORM_LAYERS))
        or ("embedding" in kinds and isinstance(module, (nn.Embedding, nn.EmbeddingBag)))
        or ("1d" in kinds and param.ndim <= 1)
    )


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every parameter that trains: frozen ones left out, a tied one once (its first name)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def no_decay_names(model: nn.Module, no_decay: Iterable[str] = ("bias", "norm")) -> set[str]:
    """Names (as `model.named_parameters()` gives them) of the trainable parameters that get no weight decay.

    A tied parameter is excluded when any module that owns it, or any of its names, matches a rule.
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


def param_groups(
    model: nn.Module, weight_decay: float = 0.0, no_decay: Iterable[str] = ("bias", "norm")
) -> list[dict]:
    """Trainable parameters split into a `decay` group and a `no_decay` group (weight_decay=0).

    The split does not depend on the value of `weight_decay`, so a sweep over it (0 included) logs the same
    group names. Frozen parameters are left out, tied parameters appear once, empty groups are dropped.
    `params` holds (name, tensor) pairs, which torch.optim keeps as the group's `param_names`; `name` labels the
    group for LearningRateMonitor (`lr-AdamW/decay`) and the audit.
    """
    named = trainable(model)
    skip = no_decay_names(model, no_decay)
    groups = [
        {"name": "decay", "weight_decay": weight_decay, "params": [(n, p) for n, p in named if n not in skip]},
        {"name": "no_decay", "weight_decay": 0.0, "params": [(n, p) for n, p in named if n in skip]},
    ]
    groups = [g for g in groups if g["params"]]
    grouped = [id(p) for g in groups for _, p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(named), "every trainable parameter must be in exactly one group"
    return groups


def build_optimizer(model: nn.Module, cfg: Mapping) -> torch.optim.Optimizer:
    """The optimizer of the node `{_target_: torch.optim.X, <constructor args>, no_decay: [...]}` over `model`."""
    cfg = to_dict(cfg)
    cls, kwargs = optimizer_class(cfg), optimizer_kwargs(cfg)
    if issubclass(cls, CLOSURE_OPTIMIZERS):
        log.warning("%s takes a single parameter group: weight-decay grouping (no_decay) skipped", cls.__name__)
        return cls([{"name": "all", "params": trainable(model)}], **kwargs)
    default_decay = getattr(constructor_args(cls).get("weight_decay"), "default", 0.0)  # AdamW's is 0.01
    groups = param_groups(model, kwargs.get("weight_decay", default_decay), cfg.get("no_decay", ("bias", "norm")))
    return cls(groups, **kwargs)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: constructor argument -> (test of a value, what is allowed); checked for every optimizer that has the argument.
VALUE_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "eps": (lambda v: _number(v) and v > 0, "a number > 0"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "momentum": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "betas": (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1), e.g. [0.9, 0.999]",
    ),
    "line_search_fn": (lambda v: v in (None, "strong_wolfe"), "null or strong_wolfe"),  # torch checks at step 1
}


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
            "optimizer.fused", True, "false or null with trainer.precision=16-mixed and trainer.gradient_clip_val "
            "(a fused step unscales the gradients itself, so Lightning cannot clip them before it)"
        )


def check_optimizer(cfg: Mapping, precision: str = "32-true", gradient_clip_val: float | None = None) -> None:
    """Refuse a node the optimizer would reject (or silently misuse) before the run builds anything."""
    cfg = to_dict(cfg)
    cls = optimizer_class(cfg)
    optimizer_kwargs(cfg)  # unknown arguments
    split_no_decay(cfg.get("no_decay", ()))
    for key, (ok, allowed) in VALUE_RULES.items():
        if key in cfg and not ok(cfg[key]):
            raise ConfigError(f"optimizer.{key}", cfg[key], allowed)
    momentum, dampening = cfg.get("momentum", 0), cfg.get("dampening", 0)
    if cfg.get("nesterov") and (momentum <= 0 or dampening != 0):
        raise ConfigError(
            "optimizer.nesterov", True, f"false, or momentum > 0 with dampening 0 (momentum={momentum}, dampening={dampening})"
        )
    check_implementation(cfg, precision, gradient_clip_val)
    if issubclass(cls, CLOSURE_OPTIMIZERS) and str(precision) in MIXED_PRECISIONS:
        raise ConfigError(
            "trainer.precision", precision, f"a precision that is not mixed (32-true, 64-true) with {cls.__name__}"
        )
