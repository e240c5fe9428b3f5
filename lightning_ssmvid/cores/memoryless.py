"""Memoryless control: any core with its state reset before every frame (so nothing survives from one frame to the
next). It has exactly the inner core's parameters, so it isolates memory from capacity in the comparison."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_ssmvid.cores import Core, State, build_core, register_core


@register_core("memoryless")
class MemorylessCore(Core):
    """``inner`` (a core name, e.g. ``lstm``) applied to each frame as a sequence of length 1 from its initial state.

    State: ``{"none": (B, 0)}`` (empty, batch-first like every core's state).
    """

    def __init__(self, d_model: int, inner: str = "lstm", **inner_kwargs):
        super().__init__()
        if inner == "memoryless":
            raise ValueError("core.inner must be a core with memory, not 'memoryless'")
        self.d_model, self.inner = d_model, build_core(inner, d_model=d_model, **inner_kwargs)

    @property
    def checkpoint_layers(self) -> bool:
        return getattr(self.inner, "checkpoint_layers", False)

    @checkpoint_layers.setter
    def checkpoint_layers(self, value: bool) -> None:
        self.inner.checkpoint_layers = value

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        return {"none": torch.zeros(batch_size, 0, device=device, dtype=dtype)}

    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        B, T, D = u.shape
        y, _ = self.inner(u.reshape(B * T, 1, D))  # every frame its own sequence: a fresh state for each
        return y.view(B, T, D), self.initial_state(B, device=u.device, dtype=u.dtype)

    def step(self, u_t: Tensor, state: State | None) -> tuple[Tensor, State]:
        y, state = self(u_t[:, None], state)
        return y[:, 0], state
