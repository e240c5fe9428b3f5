"""Input preparation shared by every selective-scan path (PyTorch, fused CPU, CUDA with a carried state)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resolve_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """``softplus(delta + delta_bias)``, each part optional. delta: (B, D, L); delta_bias: (D,)."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    return F.softplus(delta) if delta_softplus else delta


def expand_groups(M: Tensor, dim: int) -> Tensor:
    """B or C of shape (B, N, L) or (B, G, N, L) -> (B, 1 or D, N, L) (channel d uses group d // (D / G))."""
    if M.dim() == 3:
        return M[:, None]
    return M.repeat_interleave(dim // M.shape[1], dim=1)
