"""The type of every config leaf, read from the signature of what takes it, checked right after composition.

No second copy of the defaults: a node with a `_target_` is typed by its class's (or function's) annotated
constructor, torch's optimizers, Lightning's Trainer and callbacks and optimlight's own classes alike; the nodes
without one are typed by the function that reads them (`OWNERS`). Ranges the types cannot say are the
constructors' own checks, which the preflight runs (`optimlight.app.preflight`).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from omegaconf import DictConfig

from optimlight.plugin.errors import ConfigError
from optimlight.plugin.nodes import import_object, to_dict
from optimlight.plugin.registry import scheduler_info

#: Keys of a node that belong to optimlight or Lightning, not to the constructor, with their types.
EXTRA_KEYS: dict[str, dict[str, Any]] = {
    "optimizer": {"no_decay": Sequence[str]},
    "scheduler": {
        "interval": Literal["epoch", "step"],
        "frequency": int,
        "monitor": str | None,
        "strict": bool,
        "name": str | None,
        "warmup_epochs": int | None,
        "warmup_steps": int | None,
        "warmup_start_factor": float | None,
    },
}


@dataclass
class RunSettings:
    """The top-level keys of the config (see conf/config.yaml)."""

    seed: int
    ckpt_path: str | None = None
    skip_completed: bool = False


@dataclass
class SpeedSettings:
    num_threads: int | None = None
    float32_matmul_precision: Literal["highest", "high", "medium"] | None = None


@dataclass
class ReportSettings:
    targets: Sequence[float] = ()


def _module_owner() -> Callable:
    from optimlight.app.module import Classifier

    return Classifier.__init__


#: Nodes without a `_target_`: the callable whose signature types them.
OWNERS: dict[str, Callable[[], Callable]] = {
    "": lambda: RunSettings,
    "speed": lambda: SpeedSettings,
    "report": lambda: ReportSettings,
    "module": _module_owner,
}


def type_hints(owner: Callable) -> dict[str, Any]:
    """The owner's annotated parameters; a parameter whose annotation cannot be resolved is left untyped."""
    function = owner.__init__ if inspect.isclass(owner) else owner
    try:
        return typing.get_type_hints(function)
    except Exception:  # a forward reference the module does not import at runtime
        parameters = inspect.signature(function).parameters.values()
        return {p.name: p.annotation for p in parameters if p.annotation is not p.empty and not isinstance(p.annotation, str)}


def matches(value: Any, hint: Any) -> bool:
    """Whether a config value (plain Python, after OmegaConf.to_container) fits the annotation."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
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
        return isinstance(value, (int, float)) and not isinstance(value, bool)
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
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, f"a {getattr(hint, '__name__', hint)}"
    )


def node_owner(path: str, node: Mapping) -> Callable | None:
    target = node.get("_target_")
    if target:
        return import_object(target, f"{path}._target_" if path else "_target_")
    factory = OWNERS.get(path)
    return factory() if factory else None


def check_node(path: str, node: Mapping) -> None:
    """Check each key of one node against its owner's annotations; nested nodes are checked on their own."""
    owner = node_owner(path, node)
    if owner is None:
        return
    hints = {**type_hints(owner), **EXTRA_KEYS.get(path, {})}
    fills = set(scheduler_info(owner).run_sized) if path == "scheduler" and inspect.isclass(owner) else set()
    for key, value in node.items():
        if key.startswith("_") or isinstance(value, dict) and (value.get("_target_") or f"{path}.{key}".strip(".") in OWNERS):
            continue
        if key in hints and not (value is None and key in fills) and not matches(value, hints[key]):
            raise ConfigError(f"{path}.{key}".strip("."), value, describe(hints[key]))


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
