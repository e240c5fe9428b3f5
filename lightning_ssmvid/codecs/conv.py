"""Convolutional per-frame codec: the encoder and decoder that every core shares."""

from __future__ import annotations

import math

from torch import Tensor, nn


def _block(c_in: int, c_out: int, transpose: bool, activate: bool = True) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    layers = [conv(c_in, c_out, 4, stride=2, padding=1)]
    return nn.Sequential(*layers, nn.SiLU()) if activate else nn.Sequential(*layers)


class ConvCodec(nn.Module):
    """Frames (N, C, S, S) in [0, 1] <-> latents (N, latent_dim), S a power of two >= 8 (32 and 64 are typical).

    Stride-2 convolutions halve the frame down to 4x4 (no full-resolution layer and no norms: this codec must run
    hundreds of frames/s on a laptop CPU), then one linear layer maps to the latent vector.
    """

    def __init__(self, frame_size: int = 64, channels: int = 3, latent_dim: int = 128, width: int = 32):
        super().__init__()
        n_down = int(math.log2(frame_size // 4))
        if frame_size < 8 or 4 * 2**n_down != frame_size:
            raise ValueError(f"frame_size must be a power of two >= 8, got {frame_size}")
        self.frame_size, self.channels, self.latent_dim = frame_size, channels, latent_dim
        widths = [channels] + [min(width * 2**i, 4 * width) for i in range(n_down)]
        self.encoder_convs = nn.Sequential(*[_block(widths[i], widths[i + 1], False) for i in range(n_down)])
        self.to_latent = nn.Linear(widths[-1] * 16, latent_dim)
        self.from_latent = nn.Linear(latent_dim, widths[-1] * 16)
        self.decoder_convs = nn.Sequential(
            nn.SiLU(), *[_block(widths[i + 1], widths[i], True, activate=i > 0) for i in reversed(range(n_down))]
        )
        self._bottleneck = widths[-1]
    def encode(self, frames: Tensor) -> Tensor:
        """(..., C, S, S) float in [0, 1] -> (..., latent_dim)."""
        lead = frames.shape[:-3]
        h = self.encoder_convs(frames.reshape(-1, *frames.shape[-3:]) * 2 - 1)
        return self.to_latent(h.flatten(1)).reshape(*lead, self.latent_dim)

    def decode(self, latents: Tensor) -> Tensor:
        """(..., latent_dim) -> (..., C, S, S) logits; ``sigmoid`` gives frames in [0, 1]."""
        lead = latents.shape[:-1]
        h = self.from_latent(latents.reshape(-1, self.latent_dim)).view(-1, self._bottleneck, 4, 4)
        return self.decoder_convs(h).reshape(*lead, self.channels, self.frame_size, self.frame_size)
