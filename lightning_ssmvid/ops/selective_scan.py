"""Mamba (v1) selective scan: a fast pure-PyTorch path, a sequential reference, and the CUDA kernel when available.

Same meaning and shapes as ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``::

    u, delta: (B, D, L)      A: (D, N)      B, C: (B, N, L) or (B, G, N, L) or (D, N)      D: (D,)
    z: (B, D, L)             delta_bias: (D,)              initial_state: (B, D, N)

    delta = softplus(delta + delta_bias)          (each part optional)
    x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t,     y_t = C_t . x_t + D u_t,     out = y * silu(z)

The torch path is a two-level scan: the sequence is cut into ``nc`` chunks of ``T`` steps; one sequential
recurrence of ``T`` steps runs inside all chunks at once (vectorised over chunks), a recurrence of ``nc`` steps
carries the chunk-end states from chunk to chunk, and a closed-form pass adds each chunk's incoming state,
decayed by ``exp(A * cumsum(delta))``. ``nc`` is picked so that one step touches ~2^14 elements: small problems
(Python-overhead bound) get many chunks, Mamba-sized ones (B * D * N >= 2^14, memory-bandwidth bound on CPU) get
one, i.e. a plain but lean sequential scan. Per-step decays and inputs are computed from the small (B, D, L)
inputs inside the loop, never materialised as (B, D, L, N) tensors; each loop ``unbind``-s its inputs once
(per-step indexing inside autograd makes backward quadratic); ``exp`` of log-decays below -60 is an exact zero
(subnormal floats are ~30x slower on CPU); long sequences run in blocks under activation checkpointing.
Measured on a 2-core CPU at Mamba shapes this is only on par with / slightly faster than the sequential reference
(both are bound by ~15 elementwise passes per (B, D, L, N) element); its gains are at small B * D * N and memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

try:  # pragma: no cover - mamba_ssm is not installed in CPU environments
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan_fn
except Exception:  # noqa: BLE001 - any import failure means "no kernel"
    _cuda_selective_scan_fn = None

# exp(x) for x below this is replaced by an exact zero (exp(-60) ~ 1e-26: far below fp32/fp64 tolerance of use).
EXP_CLAMP = -60.0


def exp_clamped(x: Tensor) -> Tensor:
    """``exp(x)`` with exact zeros (and zero gradient) where ``x < EXP_CLAMP`` (including ``-inf``)."""
    return torch.exp(x.masked_fill(x < EXP_CLAMP, float("-inf")))


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Resolve delta and expand B, C to (batch, D, N, L) views (groups are broadcast over their channels)."""
    dim, dstate = A.shape
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)

    def expand(M: Tensor) -> Tensor:
        if M.dim() == 2:  # (D, N): time-invariant
            return M[None, :, :, None].expand(1, dim, dstate, u.shape[-1])
        if M.dim() == 3:  # (B, N, L): shared by every channel
            return M[:, None]
        groups = M.shape[1]  # (B, G, N, L): channel d uses group d // (D / G)
        return M.repeat_interleave(dim // groups, dim=1)

    return delta, expand(B), expand(C)


def _finish(y, u, D, z):
    if D is not None:
        y = y + u * D[..., None]
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None, return_last_state=False):
    """Plain sequential scan (one Python step per time step): the reference for parity tests."""
    delta, Bx, Cx = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    dA = torch.exp(delta[..., None] * A[None, :, None, :])  # (B, D, L, N)
    dBu = (delta * u)[:, :, :, None] * Bx.transpose(2, 3)  # (B, D, L, N)
    Ct = Cx.transpose(2, 3).expand(batch, dim, length, A.shape[1])
    x = u.new_zeros(batch, dim, A.shape[1]) if initial_state is None else initial_state.to(u.dtype)
    ys = []
    for dA_t, dBu_t, C_t in zip(dA.unbind(2), dBu.unbind(2), Ct.unbind(2)):
        x = dA_t * x + dBu_t
        ys.append((x * C_t).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    y = _finish(y, u, D, z)
    return (y, x) if return_last_state else y


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         initial_state=None, return_last_state=False, chunk_size: int | None = None,
                         block_len: int | None = None):
    """The two-level chunked scan in pure PyTorch (see the module docstring).

    Long sequences are processed in blocks of ``block_len`` steps (default: about 2^25 elements of (B, D, N)
    per block), each under activation checkpointing when gradients are needed: autograd then keeps only the
    inputs and the block-boundary states instead of several (B, D, L, N) tensors (GBs at L = 16k), at the cost
    of recomputing each block's scan in backward.
    """
    delta, Bx, Cx = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    if block_len is None:
        block_len = max(256, (1 << 25) // max(1, batch * dim * dstate))
    h = u.new_zeros(batch, dim, dstate) if initial_state is None else initial_state.to(u.dtype)
    if length <= block_len:
        y, h = _scan_block(u, delta, A, Bx, Cx, h, chunk_size)
    else:
        grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (u, delta, A, Bx, Cx, h))
        ys = []
        n_blocks = -(-length // block_len)
        sizes = [block_len] * (n_blocks - 1) + [length - block_len * (n_blocks - 1)]

        blocks = zip(u.split(sizes, -1), delta.split(sizes, -1), Bx.split(sizes, -1), Cx.split(sizes, -1))
        for u_b, d_b, B_b, C_b in blocks:
            if grad:
                y_b, h = checkpoint(_scan_block, u_b, d_b, A, B_b, C_b, h, chunk_size, use_reentrant=False)
            else:
                y_b, h = _scan_block(u_b, d_b, A, B_b, C_b, h, chunk_size)
            ys.append(y_b)
        y = torch.cat(ys, dim=-1)
    y = _finish(y, u, D, z)
    return (y, h) if return_last_state else y


def _scan_block(u, delta, A, Bx, Cx, h, chunk_size):
    """y (without the D skip and gate) and the last state, from state ``h``. Bx, Cx: (B, D or 1, N, L).

    Per-step decays and inputs are computed inside the loops from the small (B, D, L) / (B, N, L) inputs, never
    materialised as (B, D, L, N) tensors: on CPU, full passes over such tensors cost more than the Python steps.
    The number of chunks ``nc`` is chosen so that one step works on ~2^14 elements (cache-sized); with large
    B * D * N that is one chunk, i.e. a plain sequential scan without the cross-chunk passes.
    """
    batch, dim, length = u.shape
    dstate = A.shape[1]
    if chunk_size is None:
        nc = max(1, min(max(1, length // 8), (1 << 14) // max(1, batch * dim * dstate)))
        T = -(-length // nc)
    else:
        T = chunk_size
    nc = max(1, -(-length // T))
    pad = nc * T - length

    def time_major(M: Tensor) -> Tensor:  # (..., L) -> (T, ..., nc); padding with delta = 0 makes identity steps
        M = F.pad(M, (0, pad)) if pad else M
        return M.unflatten(-1, (nc, T)).movedim(-1, 0)

    dl = time_major(delta).transpose(2, 3)[..., None]  # (T, B, nc, D, 1)
    du = time_major(delta * u).transpose(2, 3)[..., None]  # (T, B, nc, D, 1)
    Bt = time_major(Bx).permute(0, 1, 4, 2, 3)  # (T, B, nc, D or 1, N)
    Ct = time_major(Cx).permute(0, 1, 4, 2, 3)
    shared_C = Cx.shape[1] == 1

    def contract(x: Tensor, C: Tensor) -> Tensor:  # sum_n x[..., d, n] C[..., n] -> (..., D)
        return (x @ C.transpose(-1, -2))[..., 0] if shared_C else (x * C).sum(-1)

    # 1. Scan all chunks at once (T sequential steps): from h with one chunk, else from zero (local scans).
    x = h[:, None] if nc == 1 else None
    ys = []
    for dl_t, du_t, B_t, C_t in zip(dl.unbind(0), du.unbind(0), Bt.unbind(0), Ct.unbind(0)):
        b_t = du_t * B_t
        x = b_t if x is None else torch.addcmul(b_t, exp_clamped(dl_t * A), x)
        ys.append(contract(x, C_t))
    y = torch.stack(ys, dim=0)  # (T, B, nc, D)
    if nc == 1:
        return y.permute(1, 3, 2, 0).reshape(batch, dim, T)[..., :length], x[:, 0]

    # 2. Carry the states across chunks (nc sequential steps); x is each chunk's local end state (B, nc, D, N).
    Sd = time_major(delta).cumsum(0).transpose(2, 3)[..., None]  # (T, B, nc, D, 1): within-chunk sum of delta
    h_in = []
    for decay_c, end_c in zip(exp_clamped(Sd[-1] * A).unbind(1), x.unbind(1)):
        h_in.append(h)
        h = torch.addcmul(end_c, decay_c, h)
    h_in = torch.stack(h_in, dim=1)  # (B, nc, D, N): the state entering each chunk

    # 3. Each chunk's incoming state decayed to every step (T steps): y_t += C_t . (exp(A sum delta) h_in).
    corr = [contract(exp_clamped(Sd_t * A) * h_in, C_t) for Sd_t, C_t in zip(Sd.unbind(0), Ct.unbind(0))]
    y = y + torch.stack(corr, dim=0)
    return y.permute(1, 3, 2, 0).reshape(batch, dim, nc * T)[..., :length], h


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False):
    """Selective scan: the ``mamba_ssm`` CUDA kernel when importable, on CUDA and without ``initial_state``
    (the kernel takes none); otherwise the chunked PyTorch path."""
    if _cuda_selective_scan_fn is not None and u.is_cuda and initial_state is None:  # pragma: no cover
        return _cuda_selective_scan_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                       delta_softplus=delta_softplus, return_last_state=return_last_state)
    return selective_scan_torch(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                                initial_state=initial_state, return_last_state=return_last_state)
