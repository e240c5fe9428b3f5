"""Does a rollout of a long-memory clip keep its scene? The occluder and the object colours, frame by frame.

The clip's sidecar renders its real continuation exactly (``render_frames``), so per generated frame:
``occluder_kept``: the share of the occluder band's pixels within ``tolerance`` of the real frame's (grey, or the
announce colour); ``colours_kept``: the share of objects whose colour shows in the real frame that the generated
frame shows too, anywhere, in 0.5-2x as many pixels (position-free: a stochastic rollout may move an object
elsewhere; a frame smeared in that colour does not pass).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssmvid.data.long_memory.sidecar import render_frames
from lightning_ssmvid.metrics.persistence import BandMeans


def scene_bands(n_frames: int) -> list[tuple[int, int]]:
    """Inclusive 1-based bands 1-16, 17-128, 129-240, 241-n (those that exist): the issue's 240-frame mark."""
    return [(lo, min(hi, n_frames)) for lo, hi in ((1, 16), (17, 128), (129, 240), (241, n_frames)) if lo <= n_frames]


class SceneKept:
    """``update(frame)`` with each generated (C, H, W) frame in [0, 1], the first being clip frame ``start``;
    ``summary()``: per band of ``bands``, ``occluder_kept_h{lo}-{hi}`` and ``colours_kept_h{lo}-{hi}`` (means over
    the band's frames; frames past the clip's end are not scored). Constant memory."""

    def __init__(self, sidecar: dict, start: int, bands: Iterable[tuple[int, int]], tolerance: float = 0.2):
        self.size, self.start, self.tolerance = sidecar["frame_size"], start, tolerance
        self.real = render_frames(sidecar, start)
        self.band = tuple(sidecar["occluder"][k] for k in ("y0", "y1", "x0", "x1"))
        self.palette = np.asarray(sidecar["palette"], np.float32) / 255
        self.cue, self.cue_colour = sidecar["cue"]["object"], sidecar["cue_colour"]
        self.rgb = [np.asarray(o["rgb"], np.float32) / 255 for o in sidecar["objects"]]
        self.means, self.scored = BandMeans(bands), 0

    def _count(self, frame: np.ndarray, rgb: np.ndarray) -> int:
        return int((np.abs(frame - rgb).max(-1) < self.tolerance).sum())

    def update(self, frame: Tensor) -> None:
        real = next(self.real, None)
        if real is None:  # past the clip's end: nothing to compare with
            return
        frame = frame.float().cpu()
        if not torch.isfinite(frame).all():  # a diverged frame is not scored (it would read as a lost scene)
            self.scored += 1
            self.means.add(occluder=float("nan"), colours=float("nan"))
            return
        if frame.shape[-1] != self.size:
            frame = F.interpolate(frame[None], size=(self.size, self.size), mode="nearest")[0]
        gen, real = frame.permute(1, 2, 0).numpy(), real.astype(np.float32) / 255  # (S, S, 3)
        y0, y1, x0, x1 = self.band
        occluder = float((np.abs(gen[y0:y1, x0:x1] - real[y0:y1, x0:x1]).max(-1) < self.tolerance).mean())
        t = self.start + self.scored
        self.scored += 1
        kept = []
        for k, rgb in enumerate(self.rgb):
            rgb = self.palette[self.cue_colour[t]] if k == self.cue else rgb
            shown = self._count(real, rgb)
            if shown:
                kept.append(0.5 * shown <= self._count(gen, rgb) <= 2 * shown)
        self.means.add(occluder=occluder, colours=float(np.mean(kept)) if kept else float("nan"))

    def summary(self) -> dict[str, float]:
        occluder, colours = self.means.means("occluder"), self.means.means("colours")
        out = {}
        for lo, hi in occluder:
            out[f"occluder_kept_h{lo}-{hi}"], out[f"colours_kept_h{lo}-{hi}"] = occluder[lo, hi], colours[lo, hi]
        return out



def frames_kept(sidecar: dict, frames: Iterable[int], decoded: Iterable[Tensor]) -> tuple[list[float], list[float]]:
    """Each decoded (C, H, W) frame scored against clip frame ``frames[i]`` alone (any frames, in any order) ->
    (colours kept per frame with an object in view, occluder kept per frame)."""
    colours, occluder = [], []
    for t, frame in zip(frames, decoded):
        scene = SceneKept(sidecar, start=t, bands=[(1, 1)])
        scene.update(frame)
        figures = scene.summary()
        occluder.append(figures["occluder_kept_h1-1"])
        if not np.isnan(figures["colours_kept_h1-1"]):
            colours.append(figures["colours_kept_h1-1"])
    return colours, occluder
