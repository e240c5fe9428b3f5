"""Hybrid core: Mamba-2 layers interleaved with sliding-window attention layers.

Layer ``i`` is windowed attention when ``(i + 1) % attn_every == 0`` and a Mamba-2 (SSD) block otherwise, so the
default ``attn_every=2`` alternates SSM, attention, SSM, attention... The step state is the SSM states plus the
attention layers' KV caches, which are bounded by ``window`` (``window=None`` would make them grow: full attention).
"""

from __future__ import annotations

from lightning_ssmvid.cores import register_core
from lightning_ssmvid.cores.base import ResidualCore
from lightning_ssmvid.cores.mamba2 import Mamba2Mixer
from lightning_ssmvid.cores.transformer import AttentionMixer


@register_core("hybrid")
class HybridCore(ResidualCore):
    """State: Mamba-2 layers ``"i.conv"``, ``"i.ssm"``; attention layers ``"i.k"``, ``"i.v"``, ``"i.kpos"``,
    ``"i.pos"``."""

    def __init__(self, d_model: int, n_layers: int = 2, attn_every: int = 2, window: int | None = 32,
                 n_heads: int = 4, block_size: int = 64, d_state: int = 64, d_conv: int = 4, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1, chunk_size: int = 64, mlp_ratio: float = 0.0):
        if attn_every < 1:
            raise ValueError("attn_every must be >= 1")

        def make_mixer(i: int):
            if (i + 1) % attn_every == 0:
                return AttentionMixer(d_model, n_heads, window, block_size)
            return Mamba2Mixer(d_model, d_state, d_conv, expand, headdim, ngroups, chunk_size)

        super().__init__(d_model, n_layers, make_mixer, mlp_ratio=mlp_ratio)
        self.attn_every = attn_every
