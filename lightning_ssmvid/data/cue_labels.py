"""Per-frame cue-colour labels of a long-memory clip (the memory arm's training target), read from its sidecar."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_cue_labels(video: Path) -> np.ndarray | None:
    """(n_frames,) int64 palette index of the cue object at every frame of ``video``, or None for a video without a
    long-memory sidecar (``<clip>.npz`` with a ``cue_colour`` array, written by ``data.long_memory`` v2)."""
    arrays = Path(video).with_suffix(".npz")
    if not arrays.is_file():
        return None
    with np.load(arrays) as data:
        return data["cue_colour"].astype(np.int64) if "cue_colour" in data.files else None
