"""A stochastic head: conditional rectified flow on the next latent (MAR's per-token diffusion MLP, as a flow).

The target is the normalised change ``x1 = (z_next - z) / scale`` (``scale``: a running per-dim RMS of that change,
so unit Gaussian noise fits every latent dim), or with ``target="frame"`` the normalised next latent itself,
``x1 = (z_next - center) / scale`` (running per-dim mean and RMS about it): each frame is then drawn whole, so a
draw's error is not added to the next frame's as a change's is (a random walk in a static scene).

Training draws ``t ~ U(0, 1)`` and noise ``x0 ~ N(0, I)`` and regresses the velocity ``x1 - x0`` at
``x_t = t x1 + (1 - t) x0`` with an AdaLN MLP conditioned on the core output and ``t`` (and with
``condition_on_input`` on the input latent ``z`` too: the frame it continues then reaches the head directly, not
only through the core's output, so a small object need not survive the core to be redrawn; it is normalised by a
running per-dim mean and RMS and soft-clipped, ``c tanh(u / c)`` with ``c = input_clip``, so a rollout whose
latents blow up cannot feed the blow-up back through the head: unclipped, a smoke rollout went NaN by frame 105);
sampling integrates ``dx/dt = v`` from noise with ``steps`` Euler steps. ``mean`` is one step from ``t = 0`` (the
optimal ``v(x0, 0)`` is ``E[x1] - x0``).

With ``input_skip`` (which needs ``condition_on_input``) that normalised, soft-clipped input latent also enters the
MLP's first layer beside ``x_t`` (as GameNGen concatenates past frames to the noisy frame), a linear path by which the
head can redraw the frame it read, bounded by the clip, where through AdaLN alone it must pass every latent dim as a
modulation.

With ``copy_skip`` the MLP predicts the clean target instead of the velocity (x-prediction, as in "Back to Basics:
Let Denoising Generative Models Denoise", Li & He 2025), as the input latent in target units plus the MLP's
residual, ``x1_hat = copy(z) + MLP``, and the velocity is ``(x1_hat - x_t) / (1 - t)``: an untrained head then draws
exactly the frame it read (copy-last), and training learns what changes. The loss stays the velocity's MSE (so it
weighs the last, fine-detail steps most), with ``1 - t`` floored at ``TIME_FLOOR`` where ``t`` nears 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_ssmvid.heads import register_head
from lightning_ssmvid.heads.base import Head
from lightning_ssmvid.ops import flow_euler_cpu

TARGETS = ("change", "frame")
TIME_FLOOR = 0.05  # copy_skip: training floors 1 - t here, where t ~ U(0, 1) nears 1 (sampling: 1 - t >= 1/steps)
CHUNK = 1024  # frames integrated at once: a whole clip's conditioning for every step would not fit in memory


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """t (...,) in [0, 1] -> (..., dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class AdaLNBlock(nn.Module):
    """A residual MLP block whose LayerNorm shift, scale and output gate come from the condition (as in MAR/DiT)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.modulation[1].weight)  # each block starts as the identity
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: Tensor, modulation: Tensor) -> Tensor:
        """x (N, W), modulation (N, 3W) = ``self.modulation(c)`` (computed ahead when sampling many steps)."""
        shift, scale, gate = modulation.chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


@register_head("flow")
class FlowHead(Head):
    stochastic = True
    loss_name = "flow_mse"

    def __init__(self, latent_dim: int, d_model: int, width: int = 256, depth: int = 3, steps: int = 8,
                 samples_per_frame: int = 4, temperature: float = 1.0, scale_momentum: float = 0.01,
                 target: str = "change", condition_on_input: bool = False, input_clip: float = 3.0,
                 copy_skip: bool = False, input_skip: bool = False):
        super().__init__(latent_dim, d_model)
        if target not in TARGETS:
            raise ValueError(f"head.target must be one of {TARGETS}, got {target!r}")
        if not input_clip > 0:
            raise ValueError(f"head.input_clip must be > 0 (RMS units of the input latent), got {input_clip!r}")
        if input_skip and not condition_on_input:
            raise ValueError("head.input_skip=true needs head.condition_on_input=true (it normalises the input)")
        self.target, self.input_clip, self.copy_skip = target, float(input_clip), bool(copy_skip)
        self.width, self.steps, self.samples_per_frame = width, steps, samples_per_frame
        self.temperature, self.scale_momentum = temperature, scale_momentum
        self.input = nn.Linear(latent_dim, width)
        self.condition = nn.Linear(d_model, width)
        # None when off, so checkpoints saved before the option load unchanged
        self.input_condition = nn.Linear(latent_dim, width) if condition_on_input else None
        self.input_skip = nn.Linear(latent_dim, width, bias=False) if input_skip else None
        if condition_on_input:  # running per-dim mean and RMS of the input latent, for its bounded normalisation
            self.register_buffer("input_center", torch.zeros(latent_dim))
            self.register_buffer("input_scale", torch.ones(latent_dim))
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, latent_dim)
        for layer in (self.out_modulation[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("scale", torch.ones(latent_dim))  # running RMS of the target per dim
        if target == "frame":  # only then: checkpoints of change heads keep their keys
            self.register_buffer("center", torch.zeros(latent_dim))  # running mean of z_next per dim
        self.register_buffer("scale_seen", torch.zeros((), dtype=torch.bool))

    def _bounded_input(self, z: Tensor) -> Tensor:
        """The input latent z (..., L) normalised and soft-clipped at input_clip RMS (a blown-up input cannot feed
        back)."""
        u = (z - self.input_center) / self.input_scale
        return self.input_clip * torch.tanh(u / self.input_clip)

    def _condition(self, h: Tensor, z: Tensor | None) -> Tensor:
        """h (..., D) and the input latent z (..., L) -> the time-free condition (..., W)."""
        c = self.condition(h)
        if self.input_condition is not None:
            c = c + self.input_condition(self._bounded_input(z))
        return c

    def frame_features(self, h: Tensor, z: Tensor) -> Tensor | None:
        """The time-free term the network's first layer adds to its input, the same at every Euler step: with
        ``input_skip`` the input latent's (N, W) from z (N, L); else None. (h (N, D): a subclass's spatial
        condition.)"""
        return None if self.input_skip is None else self.input_skip(self._bounded_input(z))

    def modulations(self, t: Tensor, h: Tensor, z: Tensor | None = None) -> list[Tensor]:
        """t (...,), h (..., D), z (..., L) -> every block's AdaLN modulation (..., 3W), then the output's (..., 2W)."""
        c = self._condition(h, z) + self.time(time_embedding(t, self.width).to(h.dtype))
        return [block.modulation(c) for block in self.blocks] + [self.out_modulation(c)]

    def step_modulations(self, h: Tensor, z: Tensor | None = None) -> list[Tensor]:
        """h (N, D), z (N, L) -> ``modulations`` at each Euler step's time: (steps, N, 3W) per block, then
        (steps, N, 2W). The condition is projected once and the time once per step (not once per step and row)."""
        times = torch.arange(self.steps, device=h.device, dtype=h.dtype) / self.steps
        c = self._condition(h, z)[None] + self.time(time_embedding(times, self.width).to(h.dtype))[:, None]
        return [block.modulation(c) for block in self.blocks] + [self.out_modulation(c)]

    def network(self, x_t: Tensor, modulations: list[Tensor], input_bias: Tensor | None = None) -> Tensor:
        """The AdaLN MLP: x_t (N, L) under ``modulations`` (and ``input_bias`` (N, W) added to its first layer) ->
        (N, L), the velocity (or with ``copy_skip`` the clean target's residual over the copy)."""
        x = self.input(x_t) if input_bias is None else self.input(x_t) + input_bias
        for block, modulation in zip(self.blocks, modulations):
            x = block(x, modulation)
        shift, scale = modulations[-1].chunk(2, dim=-1)
        return self.out(self.out_norm(x) * (1 + scale) + shift)

    def velocity(self, x_t: Tensor, t: Tensor, h: Tensor, z: Tensor | None = None) -> Tensor:
        """x_t (N, L) at times t (N,) given h (N, D) and the input latent z (N, L) -> the velocity (N, L)."""
        out = self.network(x_t, self.modulations(t, h, z), self.frame_features(h, z))
        if not self.copy_skip:
            return out
        return (self.copy(z) + out - x_t) / (1 - t[:, None]).clamp_min(TIME_FLOOR)

    def copy(self, z: Tensor) -> Tensor:
        """The input latent z (..., L) in target units: what the next frame is if nothing changes."""
        return (z - self.center) / self.scale if self.target == "frame" else torch.zeros_like(z)

    def _origin(self, z: Tensor) -> Tensor:
        """What the normalised target is measured from: the input latent z (..., L), or the running mean frame."""
        return self.center.expand_as(z) if self.target == "frame" else z

    @torch.no_grad()
    def _update_statistics(self, z: Tensor, z_next: Tensor) -> None:
        if not (torch.isfinite(z).all() and torch.isfinite(z_next).all()):  # its loss is skipped: keep the statistics
            return
        flat = z_next.detach().float().flatten(0, -2)
        first = not bool(self.scale_seen)
        if self.target == "frame":
            self.center.lerp_(flat.mean(0), 1.0 if first else self.scale_momentum)
        rms = (flat - self._origin(z.detach().float().flatten(0, -2))).square().mean(0).sqrt().clamp_min(1e-4)
        self.scale.lerp_(rms, 1.0 if first else self.scale_momentum)
        if self.input_condition is not None:
            inputs = z.detach().float().flatten(0, -2)
            self.input_center.lerp_(inputs.mean(0), 1.0 if first else self.scale_momentum)
            spread = (inputs - self.input_center).square().mean(0).sqrt().clamp_min(1e-4)
            self.input_scale.lerp_(spread, 1.0 if first else self.scale_momentum)
        self.scale_seen.fill_(True)

    def loss(self, h: Tensor, z: Tensor, z_next: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.training:
            self._update_statistics(z, z_next)
        batch, frames = h.shape[:2]
        k = self.samples_per_frame  # several (t, noise) draws per frame: the head is small next to the core
        x1 = ((z_next - self._origin(z)).detach() / self.scale).flatten(0, 1).repeat(k, 1)
        cond = h.flatten(0, 1).repeat(k, 1)
        z_cond = z.detach().flatten(0, 1).repeat(k, 1)
        x0 = torch.randn(x1.shape, device=x1.device, dtype=x1.dtype, generator=generator)
        t = torch.rand(x1.shape[0], device=x1.device, dtype=x1.dtype, generator=generator)
        x_t = t[:, None] * x1 + (1 - t[:, None]) * x0
        error = (self.velocity(x_t, t, cond, z=z_cond) - (x1 - x0)).square().mean(-1)
        return error.view(k, batch, frames).mean(dim=(0, 2))

    def mean(self, h: Tensor, z: Tensor) -> Tensor:
        flat = h.reshape(-1, h.shape[-1])
        x0 = torch.zeros(flat.shape[0], self.latent_dim, device=h.device, dtype=h.dtype)
        x1 = self.velocity(x0, torch.zeros(flat.shape[0], device=h.device, dtype=h.dtype), flat,
                           z=z.reshape(-1, z.shape[-1]))  # copy_skip: x1_hat itself (1 - t = 1)
        return self._origin(z) + (x1 * self.scale).view(z.shape)

    def sample(self, h: Tensor, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        flat = h.reshape(-1, h.shape[-1])
        noise = torch.randn(flat.shape[0], self.latent_dim, device=h.device, dtype=h.dtype, generator=generator)
        flat_z = z.reshape(-1, z.shape[-1])
        chunks = [self._integrate(noise[i : i + CHUNK], flat[i : i + CHUNK], flat_z[i : i + CHUNK])
                  for i in range(0, len(flat), CHUNK)]
        return self._origin(z) + (torch.cat(chunks) * self.scale).view(z.shape)

    def _integrate(self, noise: Tensor, flat: Tensor, flat_z: Tensor) -> Tensor:
        """Euler steps of dx/dt = v from ``noise`` (N, L) given conditions ``flat`` (N, D) and input latents
        ``flat_z`` (N, L) -> x1 (N, L)."""
        x = noise * self.temperature
        # the conditioning of every step in one pass: the loop below runs only the MLP
        all_steps = self.step_modulations(flat, flat_z)
        copy = self.copy(flat_z) if self.copy_skip else None
        bias = self.frame_features(flat, flat_z)
        if self._fused_ok(x, all_steps):
            return self._integrate_fused(x, all_steps, copy, bias)
        for i in range(self.steps):
            out = self.network(x, [m[i] for m in all_steps], bias)
            # copy_skip: v = (x1_hat - x) / (1 - t_i), and dt (1 / steps) over 1 - i / steps is 1 / (steps - i)
            x = x + out / self.steps if copy is None else x + (copy + out - x) / (self.steps - i)
        return x

    def _fused_ok(self, x: Tensor, all_steps: list[Tensor]) -> bool:
        """The C++ sampler serves float32 CPU inference; training, autograd, autocast, other dtypes and devices and
        a head without blocks keep PyTorch."""
        eligible = (x.device.type == "cpu" and not torch.is_grad_enabled() and len(self.blocks) > 0
                    and all(t.dtype == torch.float32 for t in (x, self.input.weight, *all_steps)))
        return eligible and flow_euler_cpu.enabled() and flow_euler_cpu.kernel() is not None

    def _integrate_fused(self, x: Tensor, all_steps: list[Tensor], copy: Tensor | None = None,
                         input_bias: Tensor | None = None) -> Tensor:
        """``_integrate``'s Euler loop in one C++ call (``ops/flow_euler_cpu``), from the same modulations."""
        block_mod = torch.stack(all_steps[:-1], dim=1)  # (steps, depth, N, 3W)
        first_bias = self.input.bias if input_bias is None else self.input.bias + input_bias  # (W) or per row (N, W)
        return flow_euler_cpu.flow_euler(x, self.input.weight, first_bias, *self._stacked_mlps(), block_mod,
                                         self.out.weight, self.out.bias, all_steps[-1], copy)

    def _stacked_mlps(self) -> tuple[Tensor, ...]:
        """The blocks' MLP weights stacked (depth, ...) for the kernel; rebuilt when a weight changes (its version
        counts every in-place update: optimiser steps, load_state_dict)."""
        layers = [(block.mlp[0], block.mlp[2]) for block in self.blocks]
        key = tuple((p.data_ptr(), p._version) for pair in layers for layer in pair for p in (layer.weight, layer.bias))
        if getattr(self, "_stack_cache", (None,))[0] != key:
            stacked = tuple(torch.stack([getattr(pair[i], name) for pair in layers])
                            for i in (0, 1) for name in ("weight", "bias"))
            self._stack_cache = (key, stacked)
        return self._stack_cache[1]
