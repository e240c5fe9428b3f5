"""The flow head with a convolutional denoiser over the codec's latent grid (``head=flow_grid``).

The MLP head (``flow``) sees the latent as one flat vector, so to redraw a small object it must pass every grid value
through a few dense layers; measured on the long-memory protocol, its one-step latent error was ~3x that of copying
the input frame. This head keeps the flow objective, targets, statistics and sampling of ``FlowHead`` and replaces
the network: the noisy frame's grid ``(grid_channels, S, S)`` and the bounded input latent's grid enter a 3x3
convolution side by side (as GameNGen concatenates past frames to the noisy one), the global dims of both are
projected and broadcast to every cell, and the core output ``h`` gives a per-cell map (where the core expects things)
and, with the flow time, the AdaLN modulation of each residual conv block. The grid velocity is a 1x1 conv per
cell; the global dims' velocity is read from the cells' mean and max. A copy or a small shift of the input is then
a local linear map, which a dense layer over 144 dims had to learn cell by cell.

Latent layout: the conv codec's, the grid flattened channel-major, then ``global_dim`` pooled dims
(``codecs/conv.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_ssmvid.codecs.conv import latent_grid
from lightning_ssmvid.heads import register_head
from lightning_ssmvid.heads.flow import FlowHead


def channel_norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """LayerNorm over the channels of each cell: x (N, W, S, S) -> the same shape."""
    mean = x.mean(1, keepdim=True)
    return (x - mean) * torch.rsqrt(x.var(1, keepdim=True, unbiased=False) + eps)


class AdaLNConvBlock(nn.Module):
    """A residual conv block (k x k, SiLU, 1x1) whose per-cell norm shift, scale and gate come from the condition."""

    def __init__(self, width: int, kernel_size: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(width, width, kernel_size, padding=kernel_size // 2), nn.SiLU(),
                                 nn.Conv2d(width, width, 1))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.modulation[1].weight)  # each block starts as the identity
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: Tensor, modulation: Tensor) -> Tensor:
        """x (N, W, S, S), modulation (N, 3W) -> (N, W, S, S)."""
        shift, scale, gate = modulation[..., None, None].chunk(3, dim=1)
        return x + gate * self.mlp(channel_norm(x) * (1 + scale) + shift)


@register_head("flow_grid")
class GridFlowHead(FlowHead):
    """``FlowHead`` with the conv denoiser above; always reads the input latent (``condition_on_input``)."""

    def __init__(self, latent_dim: int, d_model: int, frame_size: int = 64, global_dim: int = 0, width: int = 32,
                 depth: int = 2, kernel_size: int = 3, **flow_options):
        if flow_options.pop("condition_on_input", True) is not True:
            raise ValueError("head=flow_grid always reads the input latent (head.condition_on_input must be true)")
        if flow_options.get("input_skip"):
            raise ValueError("head=flow_grid already feeds the input grid to its first conv (no head.input_skip)")
        grid_size, grid_channels = latent_grid(frame_size, latent_dim, global_dim)  # the conv codec's layout
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"head.kernel_size must be odd and positive, got {kernel_size}")
        super().__init__(latent_dim, d_model, width=width, depth=depth, condition_on_input=True, **flow_options)
        self.grid_size, self.grid_channels, self.global_dim = grid_size, grid_channels, global_dim
        cells, pad = grid_size * grid_size, kernel_size // 2
        # the flat MLP's layers are replaced (its time and condition projections and statistics are kept)
        self.input = nn.Conv2d(self.grid_channels, width, kernel_size, padding=pad)
        self.input_grid = nn.Conv2d(self.grid_channels, width, kernel_size, padding=pad, bias=False)
        self.global_in = nn.Linear(2 * global_dim, width, bias=False) if global_dim else None
        self.condition_map = nn.Linear(d_model, width * cells)
        self.position = nn.Parameter(torch.zeros(width, grid_size, grid_size))
        self.blocks = nn.ModuleList(AdaLNConvBlock(width, kernel_size) for _ in range(depth))
        self.out = nn.Conv2d(width, self.grid_channels, 1)
        self.out_global = nn.Linear(2 * width, global_dim) if global_dim else None
        for layer in (self.out, self.out_global):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def _split(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """(N, L) -> the grid (N, grid_channels, S, S) and the global dims (N, global_dim)."""
        spatial = flat.shape[-1] - self.global_dim
        grid = flat[:, :spatial].reshape(-1, self.grid_channels, self.grid_size, self.grid_size)
        return grid, flat[:, spatial:]

    def frame_features(self, h: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """h (N, D), z (N, L) -> the time-free cell features (N, W, S, S) (the input grid's conv, the core's
        per-cell map and the position) and the input's global dims (N, global_dim)."""
        grid, pooled = self._split(self._bounded_input(z))
        features = self.input_grid(grid) + self.position
        features = features + self.condition_map(h).view(-1, self.width, self.grid_size, self.grid_size)
        return features, pooled

    def network(self, x_t: Tensor, modulations: list[Tensor], input_bias: tuple[Tensor, Tensor] | None = None
                ) -> Tensor:
        """x_t (N, L) under ``modulations`` given ``frame_features`` -> (N, L), the velocity (or copy_skip's
        residual)."""
        features, input_pooled = input_bias
        grid, pooled = self._split(x_t)
        x = self.input(grid) + features
        if self.global_in is not None:
            x = x + self.global_in(torch.cat([pooled, input_pooled], -1))[..., None, None]
        for block, modulation in zip(self.blocks, modulations):
            x = block(x, modulation)
        shift, scale = modulations[-1][..., None, None].chunk(2, dim=1)
        x = channel_norm(x) * (1 + scale) + shift
        out = self.out(x).flatten(1)
        if self.out_global is None:
            return out
        return torch.cat([out, self.out_global(torch.cat([x.mean((2, 3)), x.amax((2, 3))], -1))], -1)

    def _fused_ok(self, x: Tensor, all_steps: list[Tensor]) -> bool:
        return False  # the C++ sampler runs the flat MLP only
