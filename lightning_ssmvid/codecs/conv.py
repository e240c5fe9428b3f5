"""Convolutional per-frame codec: the encoder and decoder that every core shares."""

from __future__ import annotations

from torch import Tensor, nn


class ConvCodec(nn.Module):
    """Frames (N, C, S, S) in [0, 1] <-> latents (N, latent_dim); S a multiple of 8 (32 and 64 are typical).

    Three stride-2 convolutions map a frame to an (S/8 x S/8) grid of ``latent_dim / (S/8)^2`` channels, flattened.
    A spatial latent keeps where things are (a linear bottleneck learns small objects far more slowly), and no
    full-resolution layer or norm keeps it fast enough for hundreds of frames/s on a laptop CPU.
    """

    def __init__(self, frame_size: int = 64, channels: int = 3, latent_dim: int = 128, width: int = 32):
        super().__init__()
        self.grid = frame_size // 8
        if frame_size % 8 or latent_dim % (self.grid * self.grid):
            raise ValueError(f"frame_size must be a multiple of 8 and latent_dim a multiple of (frame_size/8)^2 = "
                             f"{self.grid * self.grid}; got frame_size={frame_size}, latent_dim={latent_dim}")
        self.frame_size, self.channels, self.latent_dim = frame_size, channels, latent_dim
        self.latent_channels = latent_dim // (self.grid * self.grid)
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(), nn.Conv2d(2 * w, self.latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(self.latent_channels, 2 * w, 1), nn.SiLU(), nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(w, channels, 4, 2, 1),
        )

    def encode(self, frames: Tensor) -> Tensor:
        """(..., C, S, S) float in [0, 1] -> (..., latent_dim)."""
        lead = frames.shape[:-3]
        return self.encoder(frames.reshape(-1, *frames.shape[-3:]) * 2 - 1).reshape(*lead, self.latent_dim)

    def decode(self, latents: Tensor) -> Tensor:
        """(..., latent_dim) -> (..., C, S, S) logits; ``sigmoid`` gives frames in [0, 1]."""
        lead = latents.shape[:-1]
        grid = latents.reshape(-1, self.latent_channels, self.grid, self.grid)
        return self.decoder(grid).reshape(*lead, self.channels, self.frame_size, self.frame_size)
