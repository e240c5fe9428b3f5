"""Sequence cores, built by config name: ``build_core("mamba", d_model=256, n_layers=4)``.

A new core is one module in this package that decorates its class with ``@register_core("name")``, plus one
YAML in ``conf/core/``; modules here are imported on first lookup, so nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from lightning_ssmvid.cores.base import Core, State, detach_state, map_state, reset_state_slots
from lightning_ssmvid.utils.errors import UserError

_REGISTRY: dict[str, Callable[..., Core]] = {}


def register_core(name: str) -> Callable:
    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"core name {name!r} is registered twice")
        _REGISTRY[name] = cls
        return cls

    return decorate


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def available_cores() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def build_core(name: str, d_model: int, **kwargs) -> Core:
    """Build the core registered as ``name`` with width ``d_model`` (kwargs: ``n_layers`` and core options)."""
    names = available_cores()
    if name not in _REGISTRY:
        raise ValueError(f"unknown core {name!r}; valid cores: {', '.join(names)}")
    for key, value in (("d_model", d_model), ("n_layers", kwargs.get("n_layers", 1))):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"core.{key}={value}: must be a positive integer")
    return _REGISTRY[name](d_model=d_model, **kwargs)


__all__ = [
    "Core", "State", "available_cores", "build_core", "detach_state", "map_state", "register_core",
    "reset_state_slots",
]
