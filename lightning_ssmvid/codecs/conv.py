"""Convolutional per-frame codec: the encoder and decoder that every core shares."""

from __future__ import annotations

import torch
from torch import Tensor, nn

DOWNSAMPLE = 8  # three stride-2 convolutions: a frame of side S becomes an S/8 x S/8 latent grid


def latent_grid(frame_size: int, latent_dim: int, global_dim: int = 0) -> tuple[int, int]:
    """The latent's layout: (grid side S/8, channels per cell); refuses a latent that does not fill the grid."""
    grid, spatial = frame_size // DOWNSAMPLE, latent_dim - global_dim
    if frame_size % DOWNSAMPLE or grid < 1 or global_dim < 0 or spatial <= 0 or spatial % (grid * grid):
        raise ValueError(f"frame_size must be a positive multiple of {DOWNSAMPLE} and latent_dim - global_dim a "
                         f"positive multiple of (frame_size/{DOWNSAMPLE})^2; got frame_size={frame_size}, "
                         f"latent_dim={latent_dim}, global_dim={global_dim}")
    return grid, spatial // (grid * grid)


class ConvCodec(nn.Module):
    """Frames (N, C, S, S) in [0, 1] <-> latents (N, latent_dim); S a multiple of 8 (32 and 64 are typical).

    Three stride-2 convolutions map a frame to an (S/8 x S/8) grid of ``(latent_dim - global_dim) / (S/8)^2``
    channels, flattened. A spatial latent keeps where things are (a linear bottleneck learns small objects far more
    slowly), and no full-resolution layer or norm keeps it fast enough for hundreds of frames/s on a laptop CPU.
    ``global_dim`` more latent dimensions are pooled over the whole frame (appended after the grid) and broadcast
    back to every cell in the decoder: what is in the frame regardless of where (a colour), which the grid alone
    entangles with position, so a core can read it linearly.
    """

    def __init__(self, frame_size: int = 64, channels: int = 3, latent_dim: int = 128, width: int = 32,
                 global_dim: int = 0):
        super().__init__()
        self.grid, self.latent_channels = latent_grid(frame_size, latent_dim, global_dim)
        self.frame_size, self.channels, self.latent_dim, self.global_dim = frame_size, channels, latent_dim, global_dim
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(),
        )
        self.to_grid = nn.Conv2d(2 * w, self.latent_channels, 1)
        self.to_global = nn.Linear(2 * w, global_dim) if global_dim else None
        self.decoder = nn.Sequential(
            nn.Conv2d(self.latent_channels + global_dim, 2 * w, 1), nn.SiLU(),
            nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(w, channels, 4, 2, 1),
        )

    def encode(self, frames: Tensor) -> Tensor:
        """(..., C, S, S) float in [0, 1] -> (..., latent_dim): the grid, flattened, then the global part."""
        lead = frames.shape[:-3]
        features = self.features(frames.reshape(-1, *frames.shape[-3:]) * 2 - 1)
        parts = [self.to_grid(features).flatten(1)]
        if self.to_global is not None:
            parts.append(self.to_global(features.amax(dim=(2, 3))))  # max-pool: a small object is not averaged away
        return torch.cat(parts, 1).reshape(*lead, self.latent_dim)

    def decode(self, latents: Tensor) -> Tensor:
        """(..., latent_dim) -> (..., C, S, S) logits; ``sigmoid`` gives frames in [0, 1]."""
        lead = latents.shape[:-1]
        flat = latents.reshape(-1, self.latent_dim)
        grid = flat[:, : self.latent_dim - self.global_dim].reshape(-1, self.latent_channels, self.grid, self.grid)
        if self.global_dim:
            pooled = flat[:, self.latent_dim - self.global_dim :, None, None].expand(-1, -1, self.grid, self.grid)
            grid = torch.cat([grid, pooled], 1)
        return self.decoder(grid).reshape(*lead, self.channels, self.frame_size, self.frame_size)
