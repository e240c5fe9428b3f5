"""Memory horizon: per-channel half-lives (in frames) implied by an SSM core's learned decays.

A state channel that decays by ``a`` per frame (|a| < 1) keeps half of what it held after ``ln 2 / -ln|a|`` frames,
so the distribution of half-lives shows how far back a model can remember at all, whatever it chose to store.
For input-dependent decays (Mamba) the step size at zero input, ``softplus(dt_bias)``, is used.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_ssmvid.cores.base import Mixer
from lightning_ssmvid.metrics import keys


def half_lives(log_decay_per_frame: Tensor) -> Tensor:
    """ln|a| (negative) -> half-life in frames."""
    return math.log(2) / (-log_decay_per_frame).clamp_min(1e-12)


@torch.no_grad()
def memory_half_lives(core: nn.Module) -> Tensor | None:
    """All half-lives (frames) of the decays the core's mixers report (``Mixer.log_decay``: S4D, Mamba, Mamba-2
    layers, also inside hybrids); None for cores without any."""
    decays = (m.log_decay() for m in core.modules() if isinstance(m, Mixer))
    found = [d.flatten() for d in decays if d is not None]
    return torch.cat([half_lives(d) for d in found]).float().cpu() if found else None


def horizon_summary(values: Tensor, prefix: str = "val") -> dict[str, float]:
    """Quantiles of the half-lives, logged as scalars (``val/memory_halflife_p50`` ...)."""
    quantiles = torch.quantile(values.double(), torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    return {f"{prefix}/{keys.MEMORY_HALFLIFE}_p{q}": float(v) for q, v in zip((50, 90, 99), quantiles)}
