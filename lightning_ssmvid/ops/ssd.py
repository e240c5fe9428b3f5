"""Mamba-2 state-space duality (SSD) scan: chunked matmul form, sequential reference, CUDA/Triton kernel if present.

Shapes of ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined``::

    x: (b, l, h, p)   dt: (b, l, h) (already positive)   A: (h,)   B, C: (b, l, g, n)   D: (h,) or (h, p)
    initial_states / final state: (b, h, p, n)

    S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T     (per head; a scalar decay),     y_t = S_t C_t + D x_t

The chunked form (Dao & Gu 2024, "ssd_minimal"): within chunks, outputs are a masked matmul (C B^T o L) X with
L the decay matrix; chunk-end states are a matmul; a short sequential loop (one step per chunk) carries states
across chunks; each chunk's incoming state is decayed onto its outputs. Lengths that are not a multiple of the
chunk size are zero-padded (dt = 0 steps are identities, so the final state is unaffected).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssmvid.ops.decay import exp_clamped
from lightning_ssmvid.ops.dispatch import log_fallback

try:  # pragma: no cover - mamba_ssm is not installed in CPU environments
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as _cuda_chunk_scan
except Exception:  # noqa: BLE001
    _cuda_chunk_scan = None


def segsum(x: Tensor) -> Tensor:
    """x: (..., T) -> (..., T, T) with ``out[..., i, j] = sum_{j < k <= i} x_k`` for i >= j and -inf above."""
    T = x.shape[-1]
    x = x[..., None].expand(*x.shape, T)  # x[..., i, j] = x_i
    strict = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)
    out = x.masked_fill(~strict, 0).cumsum(dim=-2)
    return out.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), float("-inf"))


def _heads(M: Tensor, nheads: int) -> Tensor:
    """(b, l, g, n) -> (b, l, h, n): head i uses group i // (h / g)."""
    return M.repeat_interleave(nheads // M.shape[2], dim=2) if M.shape[2] != nheads else M


def _skip(y: Tensor, x: Tensor, D: Tensor | None) -> Tensor:
    if D is None:
        return y
    return y + x * (D[:, None] if D.dim() == 1 else D)


def ssd_scan_ref(x, dt, A, B, C, chunk_size=None, D=None, initial_states=None, return_final_states=True):
    """Plain sequential recurrence (one Python step per time step): the reference for parity tests."""
    b, l, h, p = x.shape
    Bh, Ch = _heads(B, h), _heads(C, h)
    state = x.new_zeros(b, h, p, B.shape[-1]) if initial_states is None else initial_states.to(x.dtype)
    dA = torch.exp(dt * A)  # (b, l, h)
    dtx = dt[..., None] * x  # (b, l, h, p)
    ys = []
    for dA_t, dtx_t, B_t, C_t in zip(dA.unbind(1), dtx.unbind(1), Bh.unbind(1), Ch.unbind(1)):
        state = dA_t[:, :, None, None] * state + dtx_t[..., None] * B_t[:, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C_t))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)
    y = _skip(y, x, D)
    return (y, state) if return_final_states else y


def ssd_scan_torch(x, dt, A, B, C, chunk_size=64, D=None, initial_states=None, return_final_states=True):
    """The chunked SSD algorithm in pure PyTorch, written as batched matmuls that never expand B or C over the
    heads of a group (the heads of a group share them; only the decays differ per head)."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = h // g  # heads per group
    T = chunk_size
    nc = max(1, -(-l // T))
    pad = nc * T - l
    X = x * dt[..., None]
    Adt = dt * A  # (b, l, h)
    if pad:  # dt = 0 steps: decay 1, no input
        X = F.pad(X, (0, 0, 0, 0, 0, pad))
        Adt = F.pad(Adt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    X = X.reshape(b, nc, T, h, p)
    Bg = B.reshape(b, nc, T, g, n).transpose(2, 3)  # (b, c, g, T, n)
    Cg = C.reshape(b, nc, T, g, n).transpose(2, 3)
    A_cum = Adt.reshape(b, nc, T, h).cumsum(2)  # (b, c, T, h) inclusive cumulative log-decay in the chunk

    # 1. Intra-chunk: y_i = sum_{j <= i} (C_i . B_j) exp(A_cum_i - A_cum_j) X_j (differences of cumsums, as the
    #    mamba_ssm kernels; -inf above the diagonal gives exact zeros).
    Ah = A_cum.transpose(2, 3)  # (b, c, h, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    Lmat = exp_clamped((Ah[..., :, None] - Ah[..., None, :]).masked_fill(~causal, float("-inf")))
    CB = Cg @ Bg.transpose(-1, -2)  # (b, c, g, T, T)
    M = (CB[:, :, :, None] * Lmat.view(b, nc, g, hg, T, T)).view(b, nc, h, T, T)
    y = (M @ X.permute(0, 1, 3, 2, 4)).permute(0, 1, 3, 2, 4)  # (b, c, T, h, p)

    # 2. Chunk-end states from each chunk's own inputs, kept as (b, c, g, n, hg * p).
    decay_states = exp_clamped(A_cum[:, :, -1:] - A_cum)  # (b, c, T, h)
    X_dec = (X * decay_states[..., None]).view(b, nc, T, g, hg * p).transpose(2, 3)  # (b, c, g, T, hg p)
    states = Bg.transpose(-1, -2) @ X_dec  # (b, c, g, n, hg p)

    # 3. Carry states across chunks (one sequential step per chunk).
    chunk_decay = exp_clamped(A_cum[:, :, -1]).view(b, nc, g, 1, hg, 1)
    if initial_states is None:
        state = x.new_zeros(b, g, n, hg, p)
    else:  # (b, h, p, n) -> (b, g, n, hg, p)
        state = initial_states.to(x.dtype).reshape(b, g, hg, p, n).permute(0, 1, 4, 2, 3)
    incoming = []
    for decay_c, state_c in zip(chunk_decay.unbind(1), states.view(b, nc, g, n, hg, p).unbind(1)):
        incoming.append(state)
        state = torch.addcmul(state_c, decay_c, state)
    incoming = torch.stack(incoming, dim=1).view(b, nc, g, n, hg * p)

    # 4. Incoming state decayed onto the chunk's outputs: y_i += exp(A_cum_i) C_i . state.
    y_off = (Cg @ incoming).view(b, nc, g, T, hg, p).transpose(2, 3).reshape(b, nc, T, h, p)
    y = y + y_off * exp_clamped(A_cum)[..., None]
    y = y.reshape(b, nc * T, h, p)[:, :l]
    y = _skip(y, x, D)
    if not return_final_states:
        return y
    return y, state.permute(0, 1, 3, 4, 2).reshape(b, h, p, n)


def ssd_scan(x, dt, A, B, C, chunk_size=64, D=None, initial_states=None, return_final_states=True):
    """SSD scan: the ``mamba_ssm`` Triton kernel when importable and on CUDA, else the chunked PyTorch path."""
    if x.is_cuda:
        if _cuda_chunk_scan is not None:  # pragma: no cover - needs a GPU; the Triton kernel takes initial_states
            return _cuda_chunk_scan(x, dt, A, B, C, chunk_size, D=D, initial_states=initial_states,
                                    return_final_states=return_final_states)
        log_fallback("ssd_scan", "cuda", "mamba_ssm is not installed")
    return ssd_scan_torch(x, dt, A, B, C, chunk_size=chunk_size, D=D, initial_states=initial_states,
                          return_final_states=return_final_states)
