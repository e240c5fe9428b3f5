"""Per-frame heads: from the core output ``h`` and the input latent ``z`` to the next latent.

``mse`` regresses the next latent (deterministic); ``flow`` samples it with a conditional rectified-flow MLP
(stochastic, deterministic given a seeded generator; ``flow_grid`` and ``residual`` are variants); ``categorical``
draws each latent cell's code from the run's codebook (``model.train_snap``). A new head is one module here
decorated with ``@register_head("name")`` plus one YAML in ``conf/head/``.
"""

from __future__ import annotations

from lightning_ssmvid.heads.base import Head
from lightning_ssmvid.utils.registry import Registry

_HEADS = Registry(__name__, "head")
register_head = _HEADS.register
available_heads = _HEADS.names


def build_head(name: str, latent_dim: int, d_model: int, **kwargs) -> Head:
    """Build the head registered as ``name`` mapping core outputs of width ``d_model`` to ``latent_dim`` latents."""
    return _HEADS.get(name)(latent_dim=latent_dim, d_model=d_model, **kwargs)


def head_loss_name(name: str) -> str:
    """The name the head registered as ``name`` logs its training loss under (``Head.loss_name``)."""
    return _HEADS.get(name).loss_name


__all__ = ["Head", "available_heads", "build_head", "head_loss_name", "register_head"]
