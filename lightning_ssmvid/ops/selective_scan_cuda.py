"""A carried initial state for selective-scan kernels that take none (``mamba_ssm``'s CUDA kernel).

The scan is linear in its state, so with ``S_t = sum_{s <= t} delta_s`` (after bias and softplus):

    x_t = x_t|zero-start + exp(A S_t) * h0         y_t += C_t . (exp(A S_t) * h0)

The kernel runs from zero without the gate; the initial state's contribution is added in closed form, in blocks
of time steps (so no (B, D, L, N) tensor), then the gate is applied. Any kernel with ``selective_scan_fn``'s
signature works, which is how the CPU tests check this composition against the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssmvid.ops.decay import exp_clamped
from lightning_ssmvid.ops.scan_inputs import expand_groups, resolve_delta

BLOCK = 256  # time steps per block of the closed-form correction


def selective_scan_with_state(kernel_fn: Callable, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                              D: Tensor | None = None, z: Tensor | None = None, delta_bias: Tensor | None = None,
                              delta_softplus: bool = False, initial_state: Tensor | None = None,
                              return_last_state: bool = False):
    """``kernel_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)`` with an initial state
    (B, D, N) added in closed form. B, C: (B, N, L) or (B, G, N, L) (time-varying, as in the Mamba block)."""
    if initial_state is None:
        return kernel_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                         return_last_state=return_last_state)
    y, last = kernel_fn(u, delta, A, B, C, D=D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus,
                        return_last_state=True)
    d = resolve_delta(delta, delta_bias, delta_softplus)
    work = torch.promote_types(u.dtype, torch.float32)  # bf16 inputs: the correction in fp32
    S = d.to(work).cumsum(-1)  # (B, D, L): cumulative log-decay per unit A
    Cx = expand_groups(C, u.shape[1])
    h0 = initial_state.to(work)[..., None]  # (B, D, N, 1)
    Af = A.to(work)[None, :, :, None]  # (1, D, N, 1)
    corrections = []
    for start in range(0, u.shape[-1], BLOCK):
        block = slice(start, start + BLOCK)
        decayed = exp_clamped(S[:, :, None, block] * Af) * h0  # (B, D, N, l)
        corrections.append((decayed * Cx[..., block].to(work)).sum(2))
    y = y + torch.cat(corrections, dim=-1).to(y.dtype)
    if z is not None:
        y = y * F.silu(z)
    last = last + (exp_clamped(S[..., -1:] * A.to(work)) * initial_state.to(work)).to(last.dtype)
    return (y, last) if return_last_state else y

