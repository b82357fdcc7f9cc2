"""Reading a config node: plain dicts from DictConfig, classes from `_target_` paths, constructor signatures, and
the value tests the checks share."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from optimlight.plugin.errors import ConfigError


def to_dict(node: Mapping | None) -> dict:
    """A config node as a plain dict: DictConfig (resolved), any Mapping, or None (-> {})."""
    if node is None:
        return {}
    if hasattr(node, "_metadata"):  # DictConfig, without importing omegaconf for users who do not have it
        from omegaconf import OmegaConf

        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def import_object(path: str, key: str) -> Any:
    """`package.module.Name` -> the object, with an error naming the config key when it does not exist."""
    module_name, _, attr = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(key, path, "an importable `package.module.Class` path") from None


def constructor_args(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's keyword arguments (everything but `self` and `params`)."""
    parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    return {
        name: p
        for name, p in parameters.items()
        if name not in ("self", "params") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def constructor_defaults(cls: type) -> dict[str, Any]:
    """The constructor's keyword arguments with their default values (`inspect.Parameter.empty` when none)."""
    return {name: p.default for name, p in constructor_args(cls).items()}


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
