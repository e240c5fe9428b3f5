"""Reconstruction losses shared by codec pretraining and joint training."""

from __future__ import annotations

import torch


def foreground_weights(x: torch.Tensor, strength: float, painted: torch.Tensor | None = None) -> torch.Tensor:
    """(..., C, H, W) -> (..., 1, H, W): 1 + strength x how far each pixel is from its frame's mean colour.

    Small moving objects are a sliver of the pixels; without this weight an autoencoder learns the background
    first and paints objects grey for thousands of steps. ``painted`` (a prediction of ``x``, same shape): weight
    also the pixels it paints off that mean colour, so a halo around an object costs as much as a missed object.
    """
    centre = x.mean(dim=(-1, -2), keepdim=True)
    distance = (x - centre).abs().mean(-3, keepdim=True)
    if painted is not None:
        distance = torch.maximum(distance, (painted.detach() - centre).abs().mean(-3, keepdim=True))
    return 1 + strength * distance


def weighted_frame_error(pred: torch.Tensor, target: torch.Tensor, strength: float,
                         symmetric: bool = False) -> torch.Tensor:
    """pred, target (B, T, C, H, W) -> (B,) squared error per clip, foreground-weighted (plain MSE at strength 0);
    ``symmetric``: pixels ``pred`` paints as foreground are weighted too (see ``foreground_weights``)."""
    error = (pred - target).square()
    if not strength:
        return error.flatten(1).mean(1)
    weight = foreground_weights(target, strength, pred if symmetric else None).expand_as(error)
    return (error * weight).flatten(1).mean(1) / weight.flatten(1).mean(1)
