"""The type of every config leaf, read from the signature of what takes it, checked right after composition.

No second copy of the defaults: a node with a `_target_` is typed by its class's (or function's) annotated
constructor, torch's optimizers, Lightning's Trainer and callbacks and optimlight's own classes alike; the nodes
without one are typed by the function that reads them (`OWNERS`). A range is `Annotated` metadata from
annotated-types (`Annotated[int, Ge(1)]`) in optimlight's own signatures, and `RANGES` for the few arguments of
other libraries' classes whose constructors take any number; every other range is the constructor's own check,
which the preflight runs (`optimlight.app.preflight`). No number in a config may be NaN or infinite.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import annotated_types as at
from omegaconf import DictConfig

from optimlight.app.module import Classifier
from optimlight.app.ranges import NonNegative, NonNegativeInt, PositiveInt, Seed
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.nodes import import_object, to_dict
from optimlight.plugin.registry import optimizer_info, scheduler_info
from optimlight.plugin.schedulers import LIGHTNING_KEYS, WARMUP_KEYS

#: Keys of a node that belong to optimlight or Lightning, not to the constructor, with their types.
EXTRA_KEYS: dict[str, dict[str, Any]] = {
    "optimizer": {"no_decay": Sequence[str]},
    "scheduler": {**LIGHTNING_KEYS, **WARMUP_KEYS},
}


#: Arguments of other libraries' classes that their constructors take unchecked, by class path.
RANGES: dict[str, dict[str, Any]] = {
    "lightning.pytorch.Trainer": {
        "check_val_every_n_epoch": PositiveInt | None,
        "log_every_n_steps": PositiveInt | None,
        "accumulate_grad_batches": PositiveInt,
        "num_sanity_val_steps": Annotated[int, at.Ge(-1)] | None,
        "max_steps": Annotated[int, at.Ge(-1)],
        "val_check_interval": Annotated[float, at.Interval(gt=0, le=1)] | PositiveInt | str | dict | None,
        "gradient_clip_val": NonNegative | None,
    },
    "lightning.pytorch.callbacks.RichProgressBar": {"refresh_rate": NonNegativeInt},
    # the constructor checks swa_lrs and swa_epoch_start; a negative annealing_epochs fails once averaging starts
    "lightning.pytorch.callbacks.StochasticWeightAveraging": {"annealing_epochs": NonNegativeInt},
}


@dataclass
class RunSettings:
    """The top-level keys of the config (see conf/config.yaml)."""

    seed: Seed
    ckpt_path: str | None = None
    skip_completed: bool = False


@dataclass
class SpeedSettings:
    num_threads: PositiveInt | Literal["auto"] | None = "auto"
    float32_matmul_precision: Literal["highest", "high", "medium"] | None = None


@dataclass
class ReportSettings:
    targets: Sequence[float] = ()


#: Nodes without a `_target_`: the callable whose signature types them.
OWNERS: dict[str, Callable[[], Callable]] = {
    "": lambda: RunSettings,
    "speed": lambda: SpeedSettings,
    "report": lambda: ReportSettings,
    "module": lambda: Classifier.__init__,
}


def type_hints(owner: Callable) -> dict[str, Any]:
    """The owner's annotated parameters; a parameter whose annotation cannot be resolved is left untyped."""
    function = owner.__init__ if inspect.isclass(owner) else owner
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # a forward reference the module does not import at runtime
        parameters = inspect.signature(function).parameters.values()
        return {p.name: p.annotation for p in parameters if p.annotation is not p.empty and not isinstance(p.annotation, str)}


#: annotated-types' bounds: the comparison and its sign (each class keeps its bound in its lower-cased name).
BOUNDS = {
    at.Ge: (lambda v, b: v >= b, ">="),
    at.Gt: (lambda v, b: v > b, ">"),
    at.Le: (lambda v, b: v <= b, "<="),
    at.Lt: (lambda v, b: v < b, "<"),
}


def bounds_of(metadata: Any) -> list[tuple[Any, Any]]:
    """(bound class, bound value) of Ge/Gt/Le/Lt metadata, an Interval giving each of its bounds."""
    parts = list(metadata) if isinstance(metadata, at.Interval) else [metadata]
    return [(type(p), getattr(p, type(p).__name__.lower())) for p in parts if type(p) in BOUNDS]


def within(value: Any, metadata: Any) -> bool:
    return all(BOUNDS[kind][0](value, bound) for kind, bound in bounds_of(metadata))


def bound_text(metadata: Any) -> str:
    return " and ".join(f"{BOUNDS[kind][1]} {bound}" for kind, bound in bounds_of(metadata))


def matches(value: Any, hint: Any) -> bool:
    """Whether a config value (plain Python, after OmegaConf.to_container) fits the annotation."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return matches(value, args[0]) and all(within(value, bound) for bound in args[1:])
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        return all(matches(v, args[0]) for v in value) if args else True
    if origin in (list, Sequence, typing.Sequence) or hint in (list, Sequence):
        return isinstance(value, (list, tuple)) and (not args or all(matches(v, args[0]) for v in value))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, dict)
    if inspect.isclass(hint) and isinstance(value, (bool, int, float, str, list, dict)):
        # a class the config cannot hold (a Tensor, an Accelerator object): only other union members fit
        return isinstance(value, hint)
    return True  # a Callable, a TypeVar: nothing a config value can be checked against


def holds_config_value(hint: Any) -> bool:
    """False for the classes a YAML value cannot be (a Tensor, a timedelta, an Accelerator object)."""
    return not inspect.isclass(hint) or hint in (bool, int, float, str, list, tuple, dict)


def describe(hint: Any) -> str:
    """The annotation as a user reads it: `an integer`, `one of epoch, step`, `a list of integers`, ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return f"{describe(args[0])} {' and '.join(bound_text(b) for b in args[1:])}"
    if origin in (typing.Union, types.UnionType):
        named = [describe(a) for a in args if a is not type(None) and holds_config_value(a)]
        text = " or ".join(dict.fromkeys(named)) or "a value"
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, Sequence, typing.Sequence, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


def node_owner(path: str, node: Mapping) -> Callable | None:
    target = node.get("_target_")
    if target:
        return import_object(target, f"{path}._target_" if path else "_target_")
    factory = OWNERS.get(path)
    return factory() if factory else None


def check_node(path: str, node: Mapping, owner: Callable | None = None) -> None:
    """Check each key of one node against its owner's annotations; nested nodes are checked on their own, an
    optimizer's nested optimizer node (Muon's `optimizer.adamw`) against the class the registry names for it."""
    owner = owner or node_owner(path, node)
    if owner is None:
        return
    if path == "optimizer" and inspect.isclass(owner):
        for key, nested in optimizer_info(owner).nested.items():
            if isinstance(node.get(key), dict):
                check_node(f"{path}.{key}", node[key], nested)
    hints = {**type_hints(owner), **EXTRA_KEYS.get(path, {}), **RANGES.get(node.get("_target_") or "", {})}
    fills = set(scheduler_info(owner).run_sized) if path == "scheduler" and inspect.isclass(owner) else set()
    for key, value in node.items():
        if key.startswith("_") or isinstance(value, dict) and (value.get("_target_") or f"{path}.{key}".strip(".") in OWNERS):
            continue
        if key in hints and not (value is None and key in fills) and not matches(value, hints[key]):
            raise ConfigError(f"{path}.{key}".strip("."), value, describe(hints[key]))


def check_entries(path: str, node: Mapping | None, kind: str) -> None:
    """A `callbacks` or `logger` entry is null or a node with a `_target_` (one without would be skipped silently)."""
    for key, value in (node or {}).items():
        if value is not None and not (isinstance(value, dict) and value.get("_target_")):
            raise ConfigError(f"{path}.{key}", value, f"null, or a node with a _target_ (the class of a {kind})")


def check_types(cfg: DictConfig) -> None:
    """Every node of the composed config (Hydra's own settings aside), first wrong type first."""
    plain = to_dict(cfg)
    plain.pop("hydra", None)

    def walk(path: str, node: dict) -> None:
        check_node(path, node)
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{path}.{key}".strip("."), value)

    walk("", plain)
    check_entries("callbacks", plain.get("callbacks"), "Lightning callback")
    check_entries("logger", plain.get("logger"), "Lightning logger")
