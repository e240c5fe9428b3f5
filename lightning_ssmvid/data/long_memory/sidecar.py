"""Reading a long-memory clip's sidecar, its object masks and its exact frames (a leaf: metrics import it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lightning_ssmvid.data.long_memory.config import ARRAY_KEYS
from lightning_ssmvid.data.long_memory.palette import shape_stamp


# Sidecars, masks and frames -----------------------------------------------------------------------------------------
def load_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar of a clip (``path``: its .json, .mp4 or .npz), with its arrays (``ARRAY_KEYS``: ``"positions"``,
    ``"cue_visible"``, ``"cue_colour"``) loaded as numpy arrays."""
    path = Path(path).with_suffix(".json")
    sidecar = json.loads(path.read_text())
    with np.load(path.with_name(sidecar["arrays"])) as arrays:
        sidecar.update({key: arrays[key] for key in ARRAY_KEYS})
    return sidecar


def object_mask(sidecar: dict, obj: int, t: int) -> np.ndarray:
    """(S, S) bool: pixels covered by object ``obj`` at frame ``t`` (ignoring anything drawn over it)."""
    S = sidecar["frame_size"]
    spec = sidecar["objects"][obj]
    x, y = (int(v) for v in sidecar["positions"][t, obj])
    mask = np.zeros((S, S), bool)
    mask[y : y + spec["size"], x : x + spec["size"]] = shape_stamp(spec["shape"], spec["size"])
    return mask


def cue_mask(sidecar: dict, t: int, visible: bool = True) -> np.ndarray:
    """(S, S) bool mask of the cue object at frame ``t``; with ``visible``, only its pixels not behind the occluder
    (the cue object is drawn over every other object, so this is exactly where its colour shows in the frame)."""
    mask = object_mask(sidecar, sidecar["cue"]["object"], t)
    if visible:
        occ = sidecar["occluder"]
        mask[occ["y0"] : occ["y1"], occ["x0"] : occ["x1"]] = False
    return mask


def render_frames(sidecar: dict, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Yield frames ``start..stop-1`` (S, S, 3) uint8 of a clip, exactly as written to its MP4.

    The cue object is drawn in its colour of each frame (``cue_colour``), the occluder band last, in
    ``announce_rgb`` on the announce frames (``event["announce"]``) and in ``rgb`` otherwise."""
    S = sidecar["frame_size"]
    stop = sidecar["n_frames"] if stop is None else stop
    positions = sidecar["positions"]
    cue = sidecar["cue"]["object"]
    cue_rgb = np.array(sidecar["palette"], np.uint8)[sidecar["cue_colour"]]  # (T, 3)
    objs = [(k, o["size"], shape_stamp(o["shape"], o["size"]), np.array(o["rgb"], np.uint8))
            for k, o in enumerate(sidecar["objects"])]
    occ = sidecar["occluder"]
    background, grey = np.array(sidecar["background"], np.uint8), np.array(occ["rgb"], np.uint8)
    signal_rgb = np.array(occ["announce_rgb"], np.uint8)
    announce = {int(event["announce"]) for event in sidecar["events"]}
    for t in range(start, stop):
        frame = np.empty((S, S, 3), np.uint8)
        frame[:] = background
        for k, s, stamp, rgb in objs:  # drawing order: distractors, then the cue object
            x, y = positions[t, k]
            frame[y : y + s, x : x + s][stamp] = cue_rgb[t] if k == cue else rgb
        frame[occ["y0"] : occ["y1"], occ["x0"] : occ["x1"]] = signal_rgb if t in announce else grey
        yield frame
