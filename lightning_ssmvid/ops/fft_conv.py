"""Causal long convolution ``y_t = sum_{s <= t} k_{t-s} u_s`` of a (B, H, L) signal with an (H, L) kernel."""

from __future__ import annotations

import torch
from torch import Tensor

# Below this length the direct (Toeplitz) product is cheaper than two FFTs, and exactly causal (FFT round-off
# otherwise leaks ~1e-16 of later inputs into earlier outputs).
DIRECT_MAX_LEN = 64


def fft_conv(u: Tensor, k: Tensor) -> Tensor:
    """Causal convolution by FFT (zero-padded to 2L, so no wrap-around): O(L log L)."""
    length = u.shape[-1]
    n = 2 * length
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)
    return y[..., :length].to(u.dtype)


def direct_conv(u: Tensor, k: Tensor) -> Tensor:
    """Causal convolution as a lower-triangular Toeplitz matmul: O(L^2), exact causality."""
    length = u.shape[-1]
    idx = torch.arange(length, device=u.device)
    lag = idx[:, None] - idx[None, :]  # (t, s) -> t - s
    toeplitz = k[:, lag.clamp(min=0)].masked_fill(lag < 0, 0.0)  # (H, L, L)
    return torch.einsum("hts,bhs->bht", toeplitz, u)


def causal_conv(u: Tensor, k: Tensor) -> Tensor:
    """Dispatch: direct product for short sequences, FFT otherwise."""
    return direct_conv(u, k) if u.shape[-1] <= DIRECT_MAX_LEN else fft_conv(u, k)
