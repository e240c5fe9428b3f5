"""The one interface every sequence core implements, and the residual stack most cores are built from.

A core maps a sequence of frame embeddings to a sequence of outputs, causally:

    y, state = core(u, state=None)        # u, y: (B, T, D); parallel over T (training, prefill)
    y_t, state = core.step(u_t, state)    # u_t, y_t: (B, D); one frame (generation)
    state = core.initial_state(batch_size, device=None, dtype=None)

State is a flat ``dict[str, Tensor]`` whose tensors all have the batch on dim 0, so that it can be detached
(truncated BPTT), saved in a checkpoint, reset per batch slot (streaming) and sharded like data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

State = dict[str, Tensor]


def no_weight_decay(*parameters: nn.Parameter) -> None:
    """Flag SSM dynamics parameters (decay rates, step sizes, transition matrices) so the optimiser never decays them
    (``VideoModel.parameter_groups``; mamba_ssm's ``_no_weight_decay``): decay would pull every core's memory toward
    one horizon, which is what the comparison measures."""
    for parameter in parameters:
        parameter._no_weight_decay = True


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply ``fn`` to every tensor of a state (e.g. ``Tensor.detach``)."""
    return {key: fn(value) for key, value in state.items()}


def detach_state(state: State | None) -> State | None:
    return None if state is None else map_state(Tensor.detach, state)


def reset_state_slots(state: State, fresh: State, reset: Tensor) -> State:
    """Replace the batch slots where ``reset`` (B,) is true by the matching slots of ``fresh``."""
    out = {}
    for key, value in state.items():
        if fresh[key].shape != value.shape:
            raise ValueError(f"state {key!r} grows with time ({tuple(value.shape)} vs {tuple(fresh[key].shape)} fresh):"
                             " this core cannot restart single batch slots; stream videos of equal length, or use "
                             "data.sampling=random, or a windowed core")
        mask = reset.to(value.device).view(-1, *([1] * (value.dim() - 1)))
        out[key] = torch.where(mask, fresh[key].to(value), value)
    return out


class Core(nn.Module, ABC):
    """A causal sequence model over frame embeddings of width ``d_model``."""

    d_model: int

    @abstractmethod
    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """u: (B, T, D) -> y: (B, T, D) and the state after the last frame."""

    @abstractmethod
    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        """u_t: (B, D) -> y_t: (B, D) and the next state."""

    @abstractmethod
    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        """The state before any frame has been seen."""


class Mixer(nn.Module, ABC):
    """One sequence-mixing layer (GRU, attention, SSM, ...) with the same three methods as ``Core``."""

    @abstractmethod
    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]: ...

    @abstractmethod
    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]: ...

    @abstractmethod
    def initial_state(self, batch_size: int, device=None, dtype=None) -> State: ...

    def log_decay(self) -> Tensor | None:
        """ln|a| (< 0) of each state channel's decay per frame (at zero input for selective SSMs), any shape; None
        for mixers without per-channel decays. The memory-horizon metric reads it (metrics/half_life.py)."""
        return None


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: float):
        super().__init__()
        hidden = int(d_model * ratio)
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ResidualCore(Core):
    """``n_layers`` pre-norm residual blocks ``x + mixer(norm(x))`` (optionally ``+ mlp(norm(x))``), then a norm.

    Works on any time shape, so one code path serves both ``forward`` (B, T, D) and ``step`` (B, D); the state
    of layer ``i`` is stored under keys ``"{i}.{name}"``. ``checkpoint_layers = True`` recomputes each layer's
    activations in backward (activation checkpointing: less memory for long clips, about one more forward).
    """

    checkpoint_layers = False

    def __init__(self, d_model: int, n_layers: int, make_mixer: Callable[[int], Mixer], mlp_ratio: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.n_layers = n_layers
        self.mixers = nn.ModuleList(make_mixer(i) for i in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.mlps = nn.ModuleList(MLP(d_model, mlp_ratio) for _ in range(n_layers)) if mlp_ratio else None
        self.mlp_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers)) if mlp_ratio else None
        self.final_norm = nn.LayerNorm(d_model)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        state = {}
        for i, mixer in enumerate(self.mixers):
            for key, value in mixer.initial_state(batch_size, device=device, dtype=dtype).items():
                state[f"{i}.{key}"] = value
        return state

    def _layer_state(self, state: State, i: int) -> State:
        prefix = f"{i}."
        return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}

    def _layer(self, i: int, x: Tensor, layer_state: State | None, stepping: bool) -> tuple[Tensor, State]:
        mixer = self.mixers[i].step if stepping else self.mixers[i]
        y, layer_state = mixer(self.norms[i](x), layer_state)
        x = x + y
        if self.mlps is not None:
            x = x + self.mlps[i](self.mlp_norms[i](x))
        return x, layer_state

    def _run(self, x: Tensor, state: State | None, stepping: bool) -> tuple[Tensor, State]:
        new_state: State = {}
        recompute = self.checkpoint_layers and not stepping and torch.is_grad_enabled()
        for i in range(self.n_layers):
            layer_state = None if state is None else self._layer_state(state, i)
            if recompute:  # keep only each layer's input; its activations are recomputed in backward
                x, layer_state = checkpoint(self._layer, i, x, layer_state, False, use_reentrant=False)
            else:
                x, layer_state = self._layer(i, x, layer_state, stepping)
            new_state.update({f"{i}.{key}": value for key, value in layer_state.items()})
        return self.final_norm(x), new_state

    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return self._run(u, state, stepping=False)

    def step(self, u_t: Tensor, state: State | None) -> tuple[Tensor, State]:
        if state is None:
            state = self.initial_state(u_t.shape[0], device=u_t.device, dtype=u_t.dtype)
        return self._run(u_t, state, stepping=True)
