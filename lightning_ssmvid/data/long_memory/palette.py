"""The colours and shapes of the long-memory scenes."""

from __future__ import annotations

import functools
import math

import numpy as np

from lightning_ssmvid.data.long_memory.config import MAX_PALETTE, SHAPES


# Colours ------------------------------------------------------------------------------------------------------------
def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def make_palette(k: int) -> np.ndarray:
    """(k, 3) uint8 clearly distinct saturated colours: evenly spaced hues, in rings of darker value past 12."""
    if not 2 <= k <= MAX_PALETTE:
        raise ValueError(f"palette size must be in [2, {MAX_PALETTE}], got {k}")
    rings = math.ceil(k / 12)
    colours = []
    for i in range(k):
        ring, j = i % rings, i // rings
        per_ring = math.ceil(k / rings)
        hue = j / per_ring + ring / (2 * per_ring)
        colours.append(_hsv_to_rgb(hue, 1.0, 1.0 - 0.45 * ring))
    return np.array(colours, np.uint8)


def distractor_colours() -> np.ndarray:
    """(6, 3) uint8 pale tints: far from every palette colour, the background and the occluder grey."""
    return np.array([_hsv_to_rgb(i / 6 + 1 / 12, 0.3, 0.95) for i in range(6)], np.uint8)


# Shapes -------------------------------------------------------------------------------------------------------------
@functools.cache  # masks are rasterised at every frame of every clip: build each stamp once
def shape_stamp(shape: str, size: int) -> np.ndarray:
    """(size, size) bool mask of a shape in its bounding box (read-only: it is shared)."""
    stamp = _shape_stamp(shape, int(size))
    stamp.setflags(write=False)
    return stamp


def _shape_stamp(shape: str, size: int) -> np.ndarray:
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "disc":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (size / 2) ** 2
    if shape == "diamond":
        return np.abs(yy - c) + np.abs(xx - c) <= size / 2
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
