"""Mamba (v1) core: residual stack of selective-SSM blocks (Gu & Dao 2023).

Block: in_proj -> (x, z); x -> depthwise causal conv1d (d_conv) -> SiLU -> x_proj -> (dt, B, C);
dt -> dt_proj (+ bias, softplus); selective scan with A = -exp(A_log) (S4D-real init, A = -[1..N]) and a D skip;
y * SiLU(z) -> out_proj. Step state: conv window (B, d_inner, d_conv - 1) and SSM state (B, d_inner, N).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lightning_ssmvid.cores import register_core
from lightning_ssmvid.cores.base import Mixer, ResidualCore, State, no_weight_decay
from lightning_ssmvid.ops import selective_scan, ssm_step_cpu


def inverse_softplus_dt_bias(n: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> Tensor:
    """Standard Mamba dt init: dt log-uniform in [dt_min, dt_max], stored as softplus^{-1}(dt)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


def causal_depthwise_conv(x: Tensor, conv: nn.Conv1d, conv_state: Tensor | None) -> tuple[Tensor, Tensor]:
    """x: (B, C, L) -> causal depthwise conv (B, C, L) and the last ``k - 1`` inputs (B, C, k - 1) as new state."""
    k = conv.kernel_size[0]
    if conv_state is None:
        conv_state = x.new_zeros(x.shape[0], x.shape[1], k - 1)
    padded = torch.cat([conv_state.to(x.dtype), x], dim=-1)
    y = F.conv1d(padded, conv.weight, conv.bias, groups=conv.groups)
    return y, padded[..., padded.shape[-1] - (k - 1):]


class MambaMixer(Mixer):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1, block_len: int | None = 1024):
        super().__init__()
        self.block_len = block_len
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(inverse_softplus_dt_bias(self.d_inner, dt_min, dt_max))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        no_weight_decay(self.A_log, self.D, self.dt_proj.bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def log_decay(self) -> Tensor:
        """(d_inner, N) decays at the zero-input step size softplus(dt_proj.bias)."""
        return -F.softplus(self.dt_proj.bias)[:, None] * torch.exp(self.A_log)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        return {
            "conv": torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            "ssm": torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype),
        }

    def _dt_B_C(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (..., d_inner) -> dt (pre-bias, pre-softplus) (..., d_inner), B, C (..., N)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return dt @ self.dt_proj.weight.t(), B, C

    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Sequences longer than ``block_len`` run block by block with the state carried (same result): each
        block's working set stays cache-sized, and under autograd each block is checkpointed (recomputed in
        backward), so memory does not hold (B, d_inner, L, N) scan intermediates for the whole sequence."""
        if not self.block_len or u.shape[1] <= self.block_len:
            return self._forward(u, state)
        if state is None:
            state = self.initial_state(u.shape[0], device=u.device, dtype=u.dtype)
        grad = torch.is_grad_enabled()
        ys = []
        for piece in u.split(self.block_len, dim=1):
            if grad:
                # Reentrant checkpointing is ~1.5x faster here (no saved-tensor hooks on the many per-step tensors
                # of the scan) but only correct when an input requires grad; otherwise use the non-reentrant one.
                y, conv, ssm = checkpoint(self._forward_flat, piece, state["conv"], state["ssm"],
                                          use_reentrant=piece.requires_grad)
                state = {"conv": conv, "ssm": ssm}
            else:
                y, state = self._forward(piece, state)
            ys.append(y)
        return torch.cat(ys, dim=1), state

    def _forward_flat(self, u: Tensor, conv: Tensor, ssm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y, state = self._forward(u, {"conv": conv, "ssm": ssm})
        return y, state["conv"], state["ssm"]

    def _forward(self, u: Tensor, state: State | None) -> tuple[Tensor, State]:
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, L, d_inner)
        x, conv_state = causal_depthwise_conv(x.transpose(1, 2), self.conv1d, None if state is None else state["conv"])
        x = F.silu(x)  # (B, d_inner, L)
        dt, B, C = self._dt_B_C(x.transpose(1, 2))
        y, ssm_state = selective_scan(
            x, dt.transpose(1, 2), -torch.exp(self.A_log), B.transpose(1, 2), C.transpose(1, 2), D=self.D,
            z=z.transpose(1, 2), delta_bias=self.dt_proj.bias, delta_softplus=True,
            initial_state=None if state is None else state["ssm"], return_last_state=True,
        )
        return self.out_proj(y.transpose(1, 2)), {"conv": conv_state, "ssm": ssm_state}

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        if ssm_step_cpu.usable(u_t, state["ssm"], self.in_proj.weight) and self.in_proj.bias is None:
            y, conv, ssm = ssm_step_cpu.mamba_step(u_t, state["conv"], state["ssm"], self)  # one C++ call
            return y, {"conv": conv, "ssm": ssm}
        return self._step_reference(u_t, state)

    def _step_reference(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        """The PyTorch step (the fused kernel's reference): u_t (B, D) -> (B, D) and the next state."""
        x, z = self.in_proj(u_t).chunk(2, dim=-1)  # (B, d_inner)
        window = torch.cat([state["conv"], x[..., None]], dim=-1)  # (B, d_inner, d_conv)
        x = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        dt, B, C = self._dt_B_C(x)
        delta = F.softplus(dt + self.dt_proj.bias)  # (B, d_inner)
        A = -torch.exp(self.A_log)
        ssm = torch.exp(delta[..., None] * A) * state["ssm"] + (delta * x)[..., None] * B[:, None, :]
        y = (ssm * C[:, None, :]).sum(-1) + self.D * x
        y = y * F.silu(z)
        return self.out_proj(y), {"conv": window[..., 1:], "ssm": ssm}


@register_core("mamba")
class MambaCore(ResidualCore):
    """State per layer ``i``: ``"i.conv"`` (B, d_inner, d_conv - 1), ``"i.ssm"`` (B, d_inner, d_state)."""

    def __init__(self, d_model: int, n_layers: int = 2, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", mlp_ratio: float = 0.0):
        super().__init__(d_model, n_layers, lambda i: MambaMixer(d_model, d_state, d_conv, expand, dt_rank),
                         mlp_ratio=mlp_ratio)
