"""The fused CPU step of the Mamba and Mamba-2 mixers: a C++ kernel (``csrc/ssm_step_cpu.cpp``) compiled on first use.

Each mixer's ``_step_reference`` is the PyTorch reference; ``step`` takes this path for float32 CPU inference when
the kernel builds, unless ``SSMVID_FUSED_STEP=0`` (parity: ``tests/ops/test_ssm_step.py``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
from torch import Tensor

from lightning_ssmvid.ops.cpp_extension import build_once

SOURCE = Path(__file__).with_name("csrc") / "ssm_step_cpu.cpp"
_lock = threading.Lock()
_state: dict = {}


def enabled() -> bool:
    """False when ``SSMVID_FUSED_STEP=0`` (read at every call, so a benchmark can time both paths in one process)."""
    return os.environ.get("SSMVID_FUSED_STEP", "1") != "0"


def kernel():
    """The compiled extension module, or None when it cannot be built (logged once)."""
    return build_once(_state, _lock, "ssmvid_ssm_step", SOURCE, "fused CPU mixer step", "the PyTorch step")


def usable(*tensors: Tensor) -> bool:
    """Float32 CPU inference (no autograd) with the kernel enabled and built; anything else keeps PyTorch."""
    return (not torch.is_grad_enabled() and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and enabled() and kernel() is not None)


def mamba_step(u: Tensor, conv: Tensor, ssm: Tensor, mixer) -> tuple[Tensor, Tensor, Tensor]:
    """u (B, D), conv (B, Di, K-1), ssm (B, Di, N), a ``MambaMixer`` -> (y (B, D), new conv, new ssm)."""
    args = (u, conv, ssm, mixer.in_proj.weight, mixer.conv1d.weight[:, 0], mixer.conv1d.bias, mixer.x_proj.weight,
            mixer.dt_proj.weight, mixer.dt_proj.bias, mixer.A_log, mixer.D, mixer.out_proj.weight)
    return tuple(kernel().mamba_step(*(a.contiguous() for a in args)))


def mamba2_step(u: Tensor, conv: Tensor, ssm: Tensor, mixer) -> tuple[Tensor, Tensor, Tensor]:
    """u (B, D), conv (B, conv_dim, K-1), ssm (B, H, P, N), a ``Mamba2Mixer`` -> (y (B, D), new conv, new ssm)."""
    tensors = (u, conv, ssm, mixer.in_proj.weight, mixer.conv1d.weight[:, 0], mixer.conv1d.bias, mixer.dt_bias,
               mixer.A_log, mixer.D, mixer.norm.weight)
    c = [t.contiguous() for t in tensors]
    return tuple(kernel().mamba2_step(*c, float(mixer.norm.eps), mixer.out_proj.weight.contiguous(), mixer.ngroups))
