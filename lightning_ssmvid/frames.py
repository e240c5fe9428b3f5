"""Frame and batch helpers shared by the model, the codecs, the data pipeline and the metrics (a leaf module, so
that none of them has to import the model for them)."""

from __future__ import annotations

import torch
from torch import Tensor


def clip_shape(batch: dict) -> tuple[int, int]:
    """(B, T) of a batch of frames or latents."""
    data = batch["frames"] if "frames" in batch else batch["latents"]
    return data.shape[0], data.shape[1]


def to_unit(frames: Tensor) -> Tensor:
    """uint8 frames -> float in [0, 1]; float frames are passed through."""
    return frames.float().div(255) if frames.dtype == torch.uint8 else frames
