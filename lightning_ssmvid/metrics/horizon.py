"""Memory horizon: per-channel half-lives (in frames) implied by an SSM core's learned decays.

A state channel that decays by ``a`` per frame (|a| < 1) keeps half of what it held after ``ln 2 / -ln|a|`` frames,
so the distribution of half-lives shows how far back a model can remember at all, whatever it chose to store.
For input-dependent decays (Mamba) the step size at zero input, ``softplus(dt_bias)``, is used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssmvid.metrics import keys


def half_lives(log_decay_per_frame: Tensor) -> Tensor:
    """ln|a| (negative) -> half-life in frames."""
    return math.log(2) / (-log_decay_per_frame).clamp_min(1e-12)


@torch.no_grad()
def memory_half_lives(core: nn.Module) -> Tensor | None:
    """All half-lives (frames) of the decays found in ``core`` (S4D, Mamba, Mamba-2 layers); None for other cores."""
    found = []
    for module in core.modules():
        if hasattr(module, "log_A_real") and hasattr(module, "log_dt"):  # S4D: |exp(dt A)| = exp(-dt exp(log_A_real))
            found.append(half_lives(-torch.exp(module.log_dt)[:, None] * torch.exp(module.log_A_real)).flatten())
        elif hasattr(module, "A_log") and hasattr(module, "dt_bias"):  # Mamba-2: one decay per head
            found.append(half_lives(-F.softplus(module.dt_bias) * torch.exp(module.A_log)).flatten())
        elif hasattr(module, "A_log") and hasattr(module, "dt_proj"):  # Mamba: (d_inner, N) decays
            dt = F.softplus(module.dt_proj.bias)[:, None]
            found.append(half_lives(-dt * torch.exp(module.A_log)).flatten())
    return torch.cat(found).float().cpu() if found else None


def horizon_summary(values: Tensor, prefix: str = "val") -> dict[str, float]:
    """Quantiles of the half-lives, logged as scalars (``val/memory_halflife_p50`` ...)."""
    quantiles = torch.quantile(values.double(), torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    return {f"{prefix}/{keys.MEMORY_HALFLIFE}_p{q}": float(v) for q, v in zip((50, 90, 99), quantiles)}
