"""Sequence cores, built by config name: ``build_core("mamba", d_model=256, n_layers=4)``.

A new core is one module in this package that decorates its class with ``@register_core("name")``, plus one
YAML in ``conf/core/``; modules here are imported on first lookup, so nothing else needs editing.
"""

from __future__ import annotations

from lightning_ssmvid.cores.base import Core, State, detach_state, map_state, reset_state_slots
from lightning_ssmvid.utils.errors import UserError
from lightning_ssmvid.utils.registry import Registry

_CORES = Registry(__name__, "core")
register_core = _CORES.register
available_cores = _CORES.names


def build_core(name: str, d_model: int, **kwargs) -> Core:
    """Build the core registered as ``name`` with width ``d_model`` (kwargs: ``n_layers`` and core options)."""
    cls = _CORES.get(name)
    for key, value in (("d_model", d_model), ("n_layers", kwargs.get("n_layers", 1))):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"core.{key}={value}: must be a positive integer")
    return cls(d_model=d_model, **kwargs)


__all__ = [
    "Core", "State", "available_cores", "build_core", "detach_state", "map_state", "register_core",
    "reset_state_slots",
]
