"""Segmented SSM core: a fast inner SSM per segment, a recurrence across segments.

The sequence is cut into segments of ``segment_length`` frames. Each segment is processed in parallel by an inner
SSM mixer (``inner="mamba2"``, default, or ``"s4d"``) started from the state carried out of the previous segment.
At every segment boundary the carried state may be transformed by a small recurrent cell (``use_cell=True``):

    summary = mean of the inner mixer's outputs over the segment            (B, D)
    h       = GRUCell(summary, h)                                           (B, d_cell), carried across segments
    ssm     = ssm + rows(h) cols(h)^T                                       rank-1 additive update of the state

``rows`` is zero-initialised, so the transform starts as the identity (the core starts equal to the plain inner
SSM). Segment boundaries are absolute: ``step`` and pieces of any length with a carried state give the same
results as one pass, because the state also holds the position inside the current segment (``seg_pos``), the
running sum of the segment's outputs (``seg_sum``) and the cell's hidden state (``cell``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_ssmvid.cores import register_core
from lightning_ssmvid.cores.base import Mixer, ResidualCore, State
from lightning_ssmvid.cores.mamba2 import Mamba2Mixer
from lightning_ssmvid.cores.s4d import S4DMixer

INNER = "inner."


class SegmentedSSMMixer(Mixer):
    def __init__(self, d_model: int, segment_length: int = 32, inner: str = "mamba2", use_cell: bool = True,
                 d_cell: int | None = None, **inner_kwargs):
        super().__init__()
        self.d_model, self.segment_length, self.use_cell = d_model, segment_length, use_cell
        if inner == "mamba2":
            inner_kwargs.setdefault("chunk_size", min(64, segment_length))
            self.inner = Mamba2Mixer(d_model, **inner_kwargs)
            self.state_key = "ssm"
        elif inner == "s4d":
            self.inner = S4DMixer(d_model, **inner_kwargs)
            self.state_key = "x"
        else:
            raise ValueError(f"unknown inner mixer {inner!r}; valid: mamba2, s4d")
        if use_cell:
            shape = self.inner.initial_state(1)[self.state_key].shape[1:]
            self.state_shape = tuple(shape)
            self.d_cell = d_cell or d_model
            self.cell = nn.GRUCell(d_model, self.d_cell)
            self.to_rows = nn.Linear(self.d_cell, math.prod(shape[:-1]))
            self.to_cols = nn.Linear(self.d_cell, shape[-1])
            nn.init.zeros_(self.to_rows.weight)
            nn.init.zeros_(self.to_rows.bias)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        state = {INNER + k: v for k, v in self.inner.initial_state(batch_size, device=device, dtype=dtype).items()}
        state["seg_pos"] = torch.zeros(batch_size, device=device, dtype=torch.long)
        if self.use_cell:
            state["seg_sum"] = torch.zeros(batch_size, self.d_model, device=device, dtype=dtype)
            state["cell"] = torch.zeros(batch_size, self.d_cell, device=device, dtype=dtype)
        return state

    def _boundary(self, inner: State, seg_sum: Tensor, cell: Tensor) -> tuple[State, Tensor]:
        """The segment-boundary transform of the carried state."""
        cell = self.cell(seg_sum / self.segment_length, cell)
        update = self.to_rows(cell)[:, :, None] * self.to_cols(cell)[:, None, :]
        inner = dict(inner)
        inner[self.state_key] = inner[self.state_key] + update.view(-1, *self.state_shape)
        return inner, cell

    @staticmethod
    def _split(state: State) -> tuple[State, State]:
        inner = {k[len(INNER):]: v for k, v in state.items() if k.startswith(INNER)}
        return inner, {k: v for k, v in state.items() if not k.startswith(INNER)}

    def _join(self, inner: State, **rest: Tensor) -> State:
        return {**{INNER + k: v for k, v in inner.items()}, **rest}

    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        batch, length, _ = u.shape
        if state is None:
            state = self.initial_state(batch, device=u.device, dtype=u.dtype)
        inner, rest = self._split(state)
        S = self.segment_length
        if not self.use_cell:  # segments change nothing without the cell: one pass of the inner mixer
            y, inner = self.inner(u, inner)
            return y, self._join(inner, seg_pos=(rest["seg_pos"] + length) % S)
        if length == 0 or bool((rest["seg_pos"] != rest["seg_pos"][0]).any()):
            return self._forward_by_steps(u, state)  # batch slots at different segment positions (after a reset)
        k = int(rest["seg_pos"][0])
        sizes = [min(S - k, length)]
        while sum(sizes) < length:
            sizes.append(min(S, length - sum(sizes)))
        seg_sum, cell = rest["seg_sum"].to(u.dtype), rest["cell"].to(u.dtype)
        ys = []
        for piece in u.split(sizes, dim=1):
            y, inner = self.inner(piece, inner)
            ys.append(y)
            seg_sum = seg_sum + y.sum(1)
            k += piece.shape[1]
            if k == S:
                inner, cell = self._boundary(inner, seg_sum, cell)
                seg_sum, k = torch.zeros_like(seg_sum), 0
        seg_pos = torch.full_like(rest["seg_pos"], k)
        return torch.cat(ys, dim=1), self._join(inner, seg_pos=seg_pos, seg_sum=seg_sum, cell=cell)

    def _forward_by_steps(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        ys = []
        for u_t in u.unbind(1):
            y_t, state = self.step(u_t, state)
            ys.append(y_t)
        return (torch.stack(ys, 1) if ys else u[:, :0]), state

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        inner, rest = self._split(state)
        y, inner = self.inner.step(u_t, inner)
        seg_pos = rest["seg_pos"] + 1
        if not self.use_cell:
            return y, self._join(inner, seg_pos=seg_pos % self.segment_length)
        seg_sum, cell = rest["seg_sum"].to(y.dtype) + y, rest["cell"].to(y.dtype)
        at = seg_pos == self.segment_length
        if bool(at.any()):
            new_inner, new_cell = self._boundary(inner, seg_sum, cell)

            def pick(new: Tensor, old: Tensor) -> Tensor:
                return torch.where(at.view(-1, *([1] * (old.dim() - 1))), new, old)

            inner = {key: pick(new_inner[key], inner[key]) for key in inner}
            cell = pick(new_cell, cell)
            seg_sum = pick(torch.zeros_like(seg_sum), seg_sum)
            seg_pos = torch.where(at, 0, seg_pos)
        return y, self._join(inner, seg_pos=seg_pos, seg_sum=seg_sum, cell=cell)


@register_core("segmented_ssm")
class SegmentedSSMCore(ResidualCore):
    """State per layer ``i``: ``"i.inner.*"`` (the inner mixer's), ``"i.seg_pos"`` (B,), and with the cell
    ``"i.seg_sum"`` (B, D) and ``"i.cell"`` (B, d_cell). ``inner_kwargs`` go to the inner mixer."""

    def __init__(self, d_model: int, n_layers: int = 2, segment_length: int = 32, inner: str = "mamba2",
                 use_cell: bool = True, d_cell: int | None = None, mlp_ratio: float = 0.0,
                 inner_kwargs: dict | None = None):
        opts = dict(inner_kwargs or {})
        super().__init__(
            d_model, n_layers,
            lambda i: SegmentedSSMMixer(d_model, segment_length, inner, use_cell, d_cell, **dict(opts)),
            mlp_ratio=mlp_ratio,
        )
