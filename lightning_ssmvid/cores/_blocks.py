"""Helper for mixers whose parallel forward is faster on long sequences when cut into blocks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lightning_ssmvid.cores.base import State


def forward_in_blocks(forward: Callable[[Tensor, State | None], tuple[Tensor, State]], u: Tensor,
                      state: State | None, block_len: int | None) -> tuple[Tensor, State]:
    """``forward`` over pieces of ``block_len`` frames, carrying the state: the same result as one call (every
    mixer satisfies pieces-with-carried-state == whole), but each op's working set stays cache-sized. On CPU,
    (B, L, ...) tensors of long sequences fall out of cache and a single pass becomes ~2x slower per frame."""
    if not block_len or u.shape[1] <= block_len:
        return forward(u, state)
    ys = []
    for piece in u.split(block_len, dim=1):
        y, state = forward(piece, state)
        ys.append(y)
    return torch.cat(ys, dim=1), state
