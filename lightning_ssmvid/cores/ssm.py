"""The dense nonlinear SSM: x_{t+1} = tanh(A x_t + B u_t), y = C x + D u, with dense A, B, C, D.

Indexing: the state after frame t is ``x_t = tanh(A x_{t-1} + B u_t)`` and ``y_t = C x_t + D u_t`` (so y_t sees
u_t through the nonlinearity too). A is initialised orthogonal * ``radius`` (spectral radius < 1: stable). The
recurrence is sequential by nature: ``B u`` for all frames is one matmul, then one ``addmm + tanh`` per frame
over an ``unbind``-ed sequence, then ``C x`` for all frames is one matmul.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_ssmvid.cores import register_core
from lightning_ssmvid.cores.base import Mixer, ResidualCore, State, no_weight_decay


class TanhSSMMixer(Mixer):
    def __init__(self, d_model: int, d_state: int | None = None, radius: float = 0.9):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state or d_model
        self.A = nn.Parameter(torch.nn.init.orthogonal_(torch.empty(self.d_state, self.d_state)) * radius)
        no_weight_decay(self.A)
        self.B = nn.Linear(d_model, self.d_state, bias=True)
        self.C = nn.Linear(self.d_state, d_model, bias=False)
        self.D = nn.Linear(d_model, d_model, bias=False)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        return {"x": torch.zeros(batch_size, self.d_state, device=device, dtype=dtype)}

    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x = u.new_zeros(u.shape[0], self.d_state) if state is None else state["x"].to(u.dtype)
        At = self.A.t()
        xs = []
        for bu_t in self.B(u).unbind(1):
            x = torch.tanh(torch.addmm(bu_t, x, At))
            xs.append(x)
        xs = torch.stack(xs, dim=1) if xs else u.new_zeros(u.shape[0], 0, self.d_state)
        return self.C(xs) + self.D(u), {"x": x}

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        x = torch.tanh(torch.addmm(self.B(u_t), state["x"], self.A.t()))
        return self.C(x) + self.D(u_t), {"x": x}


@register_core("ssm")
class TanhSSMCore(ResidualCore):
    """State per layer ``i``: ``"i.x"`` (B, d_state)."""

    def __init__(self, d_model: int, n_layers: int = 2, d_state: int | None = None, radius: float = 0.9,
                 mlp_ratio: float = 0.0):
        super().__init__(d_model, n_layers, lambda i: TanhSSMMixer(d_model, d_state, radius), mlp_ratio=mlp_ratio)
