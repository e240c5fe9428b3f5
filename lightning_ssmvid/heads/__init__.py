"""Per-frame heads: from the core output ``h`` and the input latent ``z`` to the next latent.

``mse`` regresses the next latent (deterministic); ``flow`` samples it with a conditional rectified-flow MLP
(stochastic, deterministic given a seeded generator). A new head is one module here decorated with
``@register_head("name")`` plus one YAML in ``conf/head/``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from lightning_ssmvid.heads.base import Head

_REGISTRY: dict[str, Callable[..., Head]] = {}


def register_head(name: str) -> Callable:
    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"head name {name!r} is registered twice")
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_heads() -> list[str]:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    return sorted(_REGISTRY)


def build_head(name: str, latent_dim: int, d_model: int, **kwargs) -> Head:
    """Build the head registered as ``name`` mapping core outputs of width ``d_model`` to ``latent_dim`` latents."""
    names = available_heads()
    if name not in _REGISTRY:
        raise ValueError(f"unknown head {name!r}; valid heads: {', '.join(names)}")
    return _REGISTRY[name](latent_dim=latent_dim, d_model=d_model, **kwargs)


__all__ = ["Head", "available_heads", "build_head", "register_head"]
