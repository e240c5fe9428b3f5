"""The fused CPU selective scan: a C++ kernel (``csrc/selective_scan_cpu.cpp``) compiled on first use.

``torch.utils.cpp_extension.load`` builds it with the machine's gcc (and ninja) into the torch extensions
cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), once per source, flags and CPU: the
build name carries a hash of all three, because ``-march=native`` code must not run on another CPU model
(clusters share home folders). If the build fails ``kernel()`` returns None; then, or with ``SSMVID_FUSED_SCAN=0``,
``selective_scan`` logs one line and uses the PyTorch path.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sys
import threading
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.cpp"
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
_lock = threading.Lock()
_state: dict = {}


def _cpu_fingerprint() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + "".join(lines)


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
    if "module" in _state:
        return _state["module"]
    with _lock:
        if "module" in _state:
            return _state["module"]
        module = None
        digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + _cpu_fingerprint().encode())
        name = f"ssmvid_selective_scan_{digest.hexdigest()[:12]}"
        try:
            from torch.utils.cpp_extension import is_ninja_available, load

            if not is_ninja_available():  # the `ninja` wheel sits beside this interpreter, maybe not on PATH
                os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

            module = load(name=name, sources=[str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                          verbose=False)
        except Exception as err:  # noqa: BLE001 - no compiler, no ninja, a failed build: fall back
            text = str(err).strip() or type(err).__name__
            first = next((ln.strip() for ln in text.splitlines() if "error:" in ln), text.splitlines()[0])[:200]
            log.warning("fused CPU selective scan could not be built (%s): using the PyTorch scan", first)
        _state["module"] = module
        return module


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
