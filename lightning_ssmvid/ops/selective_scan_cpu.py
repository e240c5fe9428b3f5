"""The fused CPU selective scan: a C++ kernel (``csrc/selective_scan_cpu.cpp``) compiled on first use.

Built by ``ops.cpp_extension`` (once per source, flags and CPU). If the build fails ``kernel()`` returns None; then,
or with ``SSMVID_FUSED_SCAN=0``, ``selective_scan`` logs one line and uses the PyTorch path.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lightning_ssmvid.ops.cpp_extension import build_once

SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.cpp"
_lock = threading.Lock()
_state: dict = {}


def enabled() -> bool:
    """False when ``SSMVID_FUSED_SCAN=0`` (read at every call, so a benchmark can time both paths in one process)."""
    return os.environ.get("SSMVID_FUSED_SCAN", "1") != "0"


@contextlib.contextmanager
def fused_scan_disabled():
    """Within this block ``selective_scan`` takes the PyTorch path (for before/after measurements)."""
    previous = os.environ.get("SSMVID_FUSED_SCAN")
    os.environ["SSMVID_FUSED_SCAN"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SSMVID_FUSED_SCAN"]
        else:
            os.environ["SSMVID_FUSED_SCAN"] = previous


def kernel():
    """The compiled extension module, or None when it cannot be built (logged once)."""
    return build_once(_state, _lock, "ssmvid_selective_scan", SOURCE, "fused CPU selective scan", "the PyTorch scan")


class FusedSelectiveScan(torch.autograd.Function):
    """x_t = exp(delta_t A) x_{t-1} + delta_t u_t B_t, y_t = C_t . x_t. Inputs: u, delta (B, D, L); A (D, N);
    B, C (B, G, N, L); h0 (B, D, N). Returns y (B, D, L) and the last state (B, D, N)."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor):
        ext = kernel()
        Bt, Ct = B.transpose(-1, -2).contiguous(), C.transpose(-1, -2).contiguous()  # time-major (B, G, L, N)
        u, delta, A, h0 = u.contiguous(), delta.contiguous(), A.contiguous(), h0.contiguous()
        y, last = ext.forward(u, delta, A, Bt, Ct, h0)
        ctx.save_for_backward(u, delta, A, Bt, Ct, h0)
        return y, last

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor | None, glast: Tensor | None):
        u, delta, A, Bt, Ct, h0 = ctx.saved_tensors
        gy = torch.zeros_like(u) if gy is None else gy.contiguous()
        glast = torch.zeros_like(h0) if glast is None else glast.contiguous()
        gu, gdelta, gA, gB, gC, gh0 = kernel().backward(u, delta, A, Bt, Ct, h0, gy, glast)
        return gu, gdelta, gA, gB.transpose(-1, -2), gC.transpose(-1, -2), gh0


def fused_selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor
) -> tuple[Tensor, Tensor]:
    """See ``FusedSelectiveScan``; B, C of shape (B, N, L) are one group."""
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]
    return FusedSelectiveScan.apply(u, delta, A, B, C, h0)
