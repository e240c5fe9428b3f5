"""GRU core: residual stack of single-layer GRUs (the RNN baseline of the comparison)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_ssmvid.cores import register_core
from lightning_ssmvid.cores.base import Mixer, ResidualCore, State


class GRUMixer(Mixer):
    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.rnn = nn.GRU(d_model, d_model, batch_first=True)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        return {"h": torch.zeros(batch_size, self.d_model, device=device, dtype=dtype)}

    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        h0 = None if state is None else state["h"].unsqueeze(0).contiguous()
        y, h = self.rnn(u, h0)
        return y, {"h": h[0]}

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        y, state = self(u_t.unsqueeze(1), state)
        return y[:, 0], state


@register_core("gru")
class GRUCore(ResidualCore):
    """State: ``{"i.h": (B, D)}`` per layer."""

    def __init__(self, d_model: int, n_layers: int = 2, mlp_ratio: float = 0.0):
        super().__init__(d_model, n_layers, lambda i: GRUMixer(d_model), mlp_ratio=mlp_ratio)
