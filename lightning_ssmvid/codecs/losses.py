"""Reconstruction losses shared by codec pretraining and joint training."""

from __future__ import annotations

import torch


def foreground_weights(x: torch.Tensor, strength: float) -> torch.Tensor:
    """(..., C, H, W) -> (..., 1, H, W): 1 + strength x how far each pixel is from its frame's mean colour.

    Small moving objects are a sliver of the pixels; without this weight an autoencoder learns the background
    first and paints objects grey for thousands of steps.
    """
    return 1 + strength * (x - x.mean(dim=(-1, -2), keepdim=True)).abs().mean(-3, keepdim=True)


def weighted_frame_error(pred: torch.Tensor, target: torch.Tensor, strength: float) -> torch.Tensor:
    """pred, target (B, T, C, H, W) -> (B,) squared error per clip, foreground-weighted (plain MSE at strength 0)."""
    error = (pred - target).square()
    if not strength:
        return error.flatten(1).mean(1)
    weight = foreground_weights(target, strength).expand_as(error)
    return (error * weight).flatten(1).mean(1) / weight.flatten(1).mean(1)
