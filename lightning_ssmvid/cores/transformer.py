"""Causal pre-norm Transformer core over frame tokens, with rotary positions and a KV cache in the state.

Rotary angles are computed from absolute positions on the fly, so the model runs past its training length.
State per layer (all batch-first): ``k``, ``v`` (B, heads, S, head_dim) rotated keys / values, ``kpos`` (B, S)
their absolute positions (-1 = empty slot), ``pos`` (B,) the position of the next frame. Without a window the
cache grows with every frame (S = frames seen). With ``window = w`` a query at position p attends to keys in
(p - w, p], and the cache is a fixed ``w`` slots (the last w keys, empty slots masked): memory is bounded, and
the fixed shape lets ``reset_state_slots`` reset a batch slot. The parallel windowed pass attends block-wise (query
blocks against their block plus the w keys before it), so it costs O(L w), not O(L^2), and masks exactly the keys
that ``step`` sees; sequences longer than 2048 frames run in blocks with the cache carried (same result, smaller
working set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssmvid.cores import register_core
from lightning_ssmvid.cores._blocks import forward_in_blocks
from lightning_ssmvid.cores.base import Mixer, ResidualCore, State


def rotary(x: Tensor, pos: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate pairs (first half, second half) of the last dim of x (B, H, T, hd) by angles pos (B, T) * freq."""
    half = x.shape[-1] // 2
    freq = base ** (-torch.arange(half, device=x.device, dtype=x.dtype) / half)
    angle = pos.to(x.dtype)[:, None, :, None] * freq  # (B, 1, T, half)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., :half], x[..., half:2 * half]
    rotated = [x1 * cos - x2 * sin, x1 * sin + x2 * cos]
    if x.shape[-1] > 2 * half:
        rotated.append(x[..., 2 * half:])
    return torch.cat(rotated, dim=-1)


class AttentionMixer(Mixer):
    def __init__(self, d_model: int, n_heads: int = 4, window: int | None = None, block_size: int = 64,
                 rope_base: float = 10000.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not a multiple of n_heads={n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.window = window
        self.block_size = block_size
        self.block_len = 2048 if window is not None else None  # frames per forward block (local attention only)
        self.rope_base = rope_base
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        slots = self.window or 0
        kv = torch.zeros(batch_size, self.n_heads, slots, self.head_dim, device=device, dtype=dtype)
        return {
            "k": kv, "v": kv.clone(),
            "kpos": torch.full((batch_size, slots), -1, device=device, dtype=torch.long),
            "pos": torch.zeros(batch_size, device=device, dtype=torch.long),
        }

    def _mask(self, qpos: Tensor, kpos: Tensor) -> Tensor:
        """qpos (..., Tq), kpos (..., Tk) -> allowed (..., 1, Tq, Tk)."""
        q, k = qpos[..., :, None], kpos[..., None, :]
        allowed = (k >= 0) & (k <= q)
        if self.window is not None:
            allowed = allowed & (k > q - self.window)
        return allowed.unsqueeze(-3)

    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        # Windowed attention is local: long sequences run in cache-sized blocks (same result, see forward_in_blocks).
        return forward_in_blocks(self._forward, u, state, self.block_len)

    def _forward(self, u: Tensor, state: State | None) -> tuple[Tensor, State]:
        batch, length, _ = u.shape
        if state is None:
            state = self.initial_state(batch, device=u.device, dtype=u.dtype)
        q, k, v = self.qkv(u).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qpos = state["pos"][:, None] + torch.arange(length, device=u.device)  # (B, T)
        q, k = rotary(q, qpos, self.rope_base), rotary(k, qpos, self.rope_base)
        keys = torch.cat([state["k"].to(k.dtype), k], dim=2)
        values = torch.cat([state["v"].to(v.dtype), v], dim=2)
        kpos = torch.cat([state["kpos"], qpos], dim=1)
        if self.window is None:
            if state["k"].shape[2] == 0:
                y = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=self._mask(qpos, kpos))
            new_k, new_v, new_kpos = keys, values, kpos
        else:
            y = self._windowed(q, keys, values, qpos, kpos)
            w = self.window
            new_k, new_v, new_kpos = keys[:, :, -w:], values[:, :, -w:], kpos[:, -w:]
        y = self.out(y.transpose(1, 2).reshape(batch, length, self.d_model))
        return y, {"k": new_k, "v": new_v, "kpos": new_kpos, "pos": state["pos"] + length}

    def _windowed(self, q: Tensor, keys: Tensor, values: Tensor, qpos: Tensor, kpos: Tensor) -> Tensor:
        """Block-wise windowed attention. keys/values/kpos hold the ``w`` cache slots, then the T new keys."""
        batch, heads, length, hd = q.shape
        w = self.window
        Q = min(max(self.block_size, w), length)  # query block
        nblk = -(-length // Q)
        pad = nblk * Q - length
        if pad:  # padded keys get position +inf-like (never <= a real query); padded queries are dropped
            q = F.pad(q, (0, 0, 0, pad))
            qpos = F.pad(qpos, (0, pad), value=-1)
            keys = F.pad(keys, (0, 0, 0, pad))
            values = F.pad(values, (0, 0, 0, pad))
            kpos = F.pad(kpos, (0, pad), value=torch.iinfo(torch.long).max)
        # Block j holds queries [jQ, jQ+Q) whose keys lie in cache-index range [jQ, jQ+Q+w) (new key t is at w+t).
        kb = keys.unfold(2, Q + w, Q).permute(0, 2, 1, 4, 3)  # (B, nblk, H, Q+w, hd)
        vb = values.unfold(2, Q + w, Q).permute(0, 2, 1, 4, 3)
        kposb = kpos.unfold(1, Q + w, Q)  # (B, nblk, Q+w)
        qb = q.view(batch, heads, nblk, Q, hd).transpose(1, 2)  # (B, nblk, H, Q, hd)
        qposb = qpos.view(batch, nblk, Q)
        mask = self._mask(qposb, kposb)  # (B, nblk, 1, Q, Q+w)
        # Padded query rows see no key: give them their own (discarded) diagonal to avoid NaNs.
        mask = mask | (qposb < 0)[:, :, None, :, None]
        y = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)  # (B, nblk, H, Q, hd)
        return y.transpose(1, 2).reshape(batch, heads, nblk * Q, hd)[:, :, :length]

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        y, state = self(u_t[:, None], state)
        return y[:, 0], state


@register_core("transformer")
class TransformerCore(ResidualCore):
    """Pre-norm Transformer (attention + MLP per layer). ``window=None``: full causal attention."""

    def __init__(self, d_model: int, n_layers: int = 2, n_heads: int = 4, mlp_ratio: float = 4.0,
                 window: int | None = None, block_size: int = 64, rope_base: float = 10000.0):
        super().__init__(
            d_model, n_layers, lambda i: AttentionMixer(d_model, n_heads, window, block_size, rope_base),
            mlp_ratio=mlp_ratio,
        )
