"""Mamba (v1) selective scan: a fused C++ CPU kernel, a chunked pure-PyTorch path, a sequential reference, and the
``mamba_ssm`` CUDA kernel when available (``selective_scan`` dispatches; ``selective_scan_ref`` is the reference).

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
That is why CPU runs use the fused kernel (``selective_scan_cpu``), which makes one pass with the state in cache;
this path remains the fallback (other dtypes, time-invariant B/C, no compiler).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from lightning_ssmvid.ops.decay import EXP_CLAMP, exp_clamped  # noqa: F401 - re-exported
from lightning_ssmvid.ops.dispatch import log_fallback
from lightning_ssmvid.ops.scan_inputs import expand_groups, resolve_delta
from lightning_ssmvid.ops.selective_scan_cpu import enabled as fused_enabled
from lightning_ssmvid.ops.selective_scan_cpu import fused_selective_scan, kernel
from lightning_ssmvid.ops.selective_scan_cuda import selective_scan_with_state

try:  # pragma: no cover - mamba_ssm is not installed in CPU environments
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan_fn
except Exception:  # noqa: BLE001 - any import failure means "no kernel"
    _cuda_selective_scan_fn = None


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Resolve delta and expand B, C to (batch, D, N, L) views (groups are broadcast over their channels)."""
    dim, dstate = A.shape

    def expand(M: Tensor) -> Tensor:
        if M.dim() == 2:  # (D, N): time-invariant
            return M[None, :, :, None].expand(1, dim, dstate, u.shape[-1])
        return expand_groups(M, dim)

    return resolve_delta(delta, delta_bias, delta_softplus), expand(B), expand(C)


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


def selective_scan_fused(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         initial_state=None, return_last_state=False):
    """The fused C++ CPU kernel (``selective_scan_cpu``) for the recurrence; delta, the D skip and the gate stay in
    PyTorch (cheap (B, D, L) passes). B, C must be (B, N, L) or (B, G, N, L)."""
    delta = resolve_delta(delta, delta_bias, delta_softplus)
    h0 = u.new_zeros(u.shape[0], u.shape[1], A.shape[1]) if initial_state is None else initial_state.to(u.dtype)
    y, last = fused_selective_scan(u, delta, A.to(u.dtype), B.to(u.dtype), C.to(u.dtype), h0)
    y = _finish(y, u, D, z)
    return (y, last) if return_last_state else y


def _fused_cpu_reason(u: Tensor, B: Tensor, C: Tensor) -> str | None:
    """Why the fused CPU kernel cannot take these inputs (None: it can)."""
    if u.dtype not in (torch.float32, torch.float64):
        return f"dtype {u.dtype}"
    if B.dim() == 2 or C.dim() == 2 or B.shape != C.shape:
        return "time-invariant or differently shaped B, C"
    if not fused_enabled():
        return "SSMVID_FUSED_SCAN=0"
    if kernel() is None:
        return "the fused kernel could not be built"
    return None


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False):
    """Selective scan dispatch: on CUDA the ``mamba_ssm`` kernel (a carried ``initial_state`` is added in closed
    form, see ``selective_scan_cuda``); on CPU the fused C++ kernel; otherwise, with a log line naming why, the
    chunked PyTorch path."""
    kw = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, initial_state=initial_state,
              return_last_state=return_last_state)
    if u.is_cuda:
        reason = "mamba_ssm is not installed" if _cuda_selective_scan_fn is None else None
        if reason is None:  # pragma: no cover - needs a GPU
            return selective_scan_with_state(_cuda_selective_scan_fn, u, delta, A, B, C, **kw)
    else:
        reason = _fused_cpu_reason(u, B, C)
        if reason is None:
            return selective_scan_fused(u, delta, A, B, C, **kw)
    log_fallback("selective_scan", u.device.type, reason)
    return selective_scan_torch(u, delta, A, B, C, **kw)
