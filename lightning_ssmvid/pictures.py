"""Frames as pictures: (H, W, 3) uint8 images, the red frame that marks real context, and the real | generated layout
that ``make generate side_by_side=true`` and the evaluation's sample videos share."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

RED = np.array([255, 0, 0], np.uint8)


def to_image(frame: Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] or uint8 -> (H, W, 3) uint8."""
    if frame.dtype != torch.uint8:
        frame = frame.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    if frame.shape[0] == 1:
        frame = frame.expand(3, *frame.shape[1:])
    return frame[:3].permute(1, 2, 0).cpu().numpy()


def with_border(image: np.ndarray, colour: np.ndarray = RED) -> np.ndarray:
    """A copy of (H, W, 3) ``image`` with a thin border (2 px per 64 px, even so yuv420p keeps it red)."""
    out = image.copy()
    t = max(2, 2 * round(min(image.shape[:2]) / 64))
    out[:t], out[-t:], out[:, :t], out[:, -t:] = colour, colour, colour, colour
    return out


def side_by_side(real: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """(H, W, 3) real and generated images -> (H, 2W, 3): real | generated."""
    return np.concatenate([real, generated], axis=1)


def side_by_side_video(real: Tensor, generated: Tensor, context: int) -> np.ndarray:
    """real (1, T, C, H, W) and generated (1, T - context, C, H, W) in [0, 1] -> (T, H, 2W, 3) uint8: real |
    generated, the first ``context`` frames (real on both sides) framed in red."""
    frames = []
    for t in range(real.shape[1]):
        actual = to_image(real[0, t])
        if t < context:
            frames.append(side_by_side(with_border(actual), with_border(actual)))
        else:
            frames.append(side_by_side(actual, to_image(generated[0, t - context])))
    return np.stack(frames)
