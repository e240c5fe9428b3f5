"""The fused CPU Euler sampler of the flow head: a C++ kernel (``csrc/flow_euler_cpu.cpp``) compiled on first use.

``heads.flow.FlowHead._integrate`` is the PyTorch reference; the head takes this path for float32 CPU inference
when the kernel builds, unless ``SSMVID_FUSED_FLOW=0`` (parity: ``tests/ops/test_flow_euler.py``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from torch import Tensor

from lightning_ssmvid.ops.cpp_extension import build_once

SOURCE = Path(__file__).with_name("csrc") / "flow_euler_cpu.cpp"
_lock = threading.Lock()
_state: dict = {}


def enabled() -> bool:
    """False when ``SSMVID_FUSED_FLOW=0`` (read at every call, so a benchmark can time both paths in one process)."""
    return os.environ.get("SSMVID_FUSED_FLOW", "1") != "0"


def kernel():
    """The compiled extension module, or None when it cannot be built (logged once)."""
    return build_once(_state, _lock, "ssmvid_flow_euler", SOURCE, "fused CPU flow sampler", "the PyTorch sampler")


def flow_euler(x0: Tensor, w_in: Tensor, b_in: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor,
               block_mod: Tensor, w_out: Tensor, b_out: Tensor, out_mod: Tensor, copy: Tensor | None = None) -> Tensor:
    """x0 (N, L); the MLP's weights (b_in (W), or (N, W) for an ``input_skip`` head); block_mod (steps, depth, N, 3W),
    out_mod (steps, N, 2W); ``copy`` (N, L) for a ``copy_skip`` head (its MLP predicts the clean target's residual
    over it) -> x1 (N, L).
    See ``csrc/flow_euler_cpu.cpp``."""
    copy = x0.new_empty(0) if copy is None else copy
    args = (x0, w_in, b_in, w1, b1, w2, b2, block_mod, w_out, b_out, out_mod, copy)
    return kernel().flow_euler(*(a.contiguous() for a in args))
