"""Pixel recall probe: is the hidden cue object's colour right when it comes back, and is it there at all?

For each event of a long-memory clip (``lightning_ssmvid.data.long_memory``) the probe takes the pixels of a video
inside the cue object's ground-truth visible mask (at the first reveal frame, ``frames="first"``, or over the whole
reveal window, ``frames="window"``), their per-channel median colour, and classifies it as the nearest of the
palette colours and the scene's other colours (background, occluder grey and its announcement shade, the
distractors' pale tints, mid grey): nearest to a palette colour is that colour, nearest to any other is *absent*
(black background, grey band, a smear, a distractor: the cue object was not drawn). Absent counts as wrong and is
reported on its own, so "draws nothing" cannot pass for a colour. A model that forgot the colour but draws the object
scores chance, ``1 / palette_size``; ground truth scores 1. Confidence intervals resample whole clips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from lightning_ssmvid.data.long_memory.config import MAX_PALETTE
from lightning_ssmvid.data.long_memory.sidecar import cue_mask
from lightning_ssmvid.metrics.stats import bootstrap_ci

ABSENT = -1  # the predicted "colour" when no palette colour is near the pixels


class EventScore(NamedTuple):
    event: int  # index in sidecar["events"]
    gap: int
    gap_bin: int
    predicted: int  # palette index of the colour found, or ABSENT
    target: int  # the true palette index
    n_pixels: int  # mask pixels the colour was taken from

    @property
    def correct(self) -> bool:
        return self.predicted == self.target

    @property
    def absent(self) -> bool:
        return self.predicted == ABSENT


def event_colour(sidecar: dict, event: dict) -> int:
    """The palette index that returns at ``event``'s reveal (per event in v2 sidecars; the clip's colour in v1)."""
    return int(event.get("palette_index", sidecar["cue"]["palette_index"]))


MID_GREY = (128, 128, 128)  # a smear of everything: never a cue colour


def scene_colours(sidecar: dict) -> Tensor:
    """(M, 3) the colours of a long-memory clip that are not the cue's: background, band (and its announcement
    shade), distractors, mid grey."""
    occluder = sidecar["occluder"]
    colours = [sidecar["background"], occluder["rgb"], occluder.get("announce_rgb", occluder["rgb"]), MID_GREY]
    colours += [o["rgb"] for o in sidecar["objects"] if o.get("role") != "cue"]
    return torch.tensor(colours, dtype=torch.float32)


def classify_colours(colours: Tensor, palette: Tensor, others: Tensor | None = None) -> Tensor:
    """colours (N, 3), palette (K, 3), others (M, 3) the scene's non-cue colours, all 0..255 -> (N,) palette
    indices, ``ABSENT`` where a non-cue colour is nearer than every palette colour."""
    others = torch.tensor([[0, 0, 0], MID_GREY], dtype=torch.float32) if others is None else others.float()
    references = torch.cat([palette.float(), others])
    nearest = torch.cdist(colours.float(), references).argmin(dim=1)
    return torch.where(nearest < len(palette), nearest, ABSENT)


def _as_uint8_video(video) -> Tensor:
    video = torch.as_tensor(video)
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"video must be (T, 3, H, W), got {tuple(video.shape)}")
    if video.is_floating_point():  # frames in [0, 1] (what the model generates)
        video = (video.clamp(0, 1) * 255).round()
    return video


def score_events(video, sidecar: dict, offset: int = 0, reduce: str = "median",
                 frames: str = "window") -> list[EventScore]:
    """Score every event of ``sidecar`` whose scored frames lie inside ``video``.

    video: (T, 3, H, W), uint8 or float in [0, 1]; ``video[0]`` is frame ``offset`` of the clip. ``frames``:
    ``"first"`` scores the first reveal frame alone (``reveal_start``), ``"window"`` the reveal window
    ``[reveal_start, reveal_stop)``. ``reduce``: ``"median"`` (default) or ``"mean"`` colour of the pixels.
    """
    if frames not in ("first", "window"):
        raise ValueError(f"frames must be 'first' or 'window', got {frames!r}")
    video = _as_uint8_video(video)
    size = sidecar["frame_size"]
    if tuple(video.shape[-2:]) != (size, size):
        raise ValueError(f"video frames are {tuple(video.shape[-2:])}, the clip's are {(size, size)}: score at the "
                         "data's frame size")
    palette, others = torch.tensor(sidecar["palette"], dtype=torch.float32), scene_colours(sidecar)
    scores = []
    for k, event in enumerate(sidecar["events"]):
        start = event["reveal_start"]
        stop = start + 1 if frames == "first" else event["reveal_stop"]
        if start - offset < 0 or stop - offset > video.shape[0]:
            continue
        pixels = torch.cat([video[t - offset][:, torch.from_numpy(cue_mask(sidecar, t, visible=True))]
                            for t in range(start, stop)], dim=1).float()  # (3, N)
        if pixels.shape[1] == 0:
            continue
        colour = pixels.median(dim=1).values if reduce == "median" else pixels.mean(dim=1)
        predicted = int(classify_colours(colour[None], palette, others)[0])
        scores.append(EventScore(k, int(event["gap"]), int(event.get("gap_bin", event["gap"])), predicted,
                                 event_colour(sidecar, event), int(pixels.shape[1])))
    return scores


def score_clip(video, sidecar: dict, offset: int = 0, reduce: str = "median",
               frames: str = "window") -> list[tuple[int, bool]]:
    """``[(gap, correct), ...]`` for the events scored in ``video`` (see ``score_events``)."""
    return [(s.gap, s.correct) for s in score_events(video, sidecar, offset, reduce, frames)]


def nearest_bin(gap: float, gap_bins: Sequence[int]) -> int:
    """Index of the bin nearest to ``gap`` on a log scale (exact for the generator's gaps, which are bin values)."""
    return int(np.argmin([abs(math.log(gap / b)) for b in gap_bins]))


def clip_id(sidecar: dict) -> int:
    """A clip's number within its split (what the bootstrap resamples)."""
    return int(sidecar.get("index", abs(hash(sidecar.get("clip", ""))) % (1 << 31)))


class CueRecall(Metric):
    """Pixel cue recall per gap bin: counts are sum-reduced, per-event records cat-reduced (exact under DDP).

    ``update(videos, sidecars, offsets=0)``: videos (B, T, 3, H, W) or a list of (T_i, 3, H, W); sidecars a list of
    ``load_sidecar`` dicts (pass ``{**sidecar, "events": [event]}`` to score one event); offsets an int or one per
    video. ``compute()``: ``recall_gap{b}`` (nan without events), ``recall_gap{b}_lo``/``_hi`` (95% bootstrap CI over
    clips), ``recall_absent_gap{b}`` (share of events where the object was not drawn), ``events_gap{b}``,
    ``recall``, ``recall_absent``, ``recall_colour{k}`` (per true colour), ``chance`` (1 / palette_size).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, gap_bins: Sequence[int] = (60, 240, 960), reduce: str = "median", frames: str = "window",
                 **kwargs):
        super().__init__(**kwargs)
        if reduce not in ("median", "mean"):
            raise ValueError(f"reduce must be 'median' or 'mean', got {reduce!r}")
        self.gap_bins, self.reduce, self.frames = tuple(int(b) for b in gap_bins), reduce, frames
        n = len(self.gap_bins)
        for name, size in (("correct", n), ("total", n), ("absent", n), ("colour_correct", MAX_PALETTE),
                           ("colour_total", MAX_PALETTE)):
            self.add_state(name, torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("palette_size", torch.zeros((), dtype=torch.long), dist_reduce_fx="max")
        for name in ("event_clip", "event_bin", "event_correct"):
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, videos, sidecars: Sequence[dict], offsets: int | Sequence[int] | Tensor = 0) -> None:
        if isinstance(offsets, Tensor):
            offsets = offsets.tolist()
        if isinstance(offsets, int):
            offsets = [offsets] * len(sidecars)
        if not len(videos) == len(sidecars) == len(offsets):
            raise ValueError(f"got {len(videos)} videos, {len(sidecars)} sidecars and {len(offsets)} offsets")
        records = []
        for video, sidecar, offset in zip(videos, sidecars, offsets):
            self.palette_size = torch.maximum(self.palette_size,
                                              torch.tensor(len(sidecar["palette"]), device=self.device))
            video = video.cpu() if isinstance(video, Tensor) else video
            for score in score_events(video, sidecar, int(offset), self.reduce, self.frames):
                b = nearest_bin(score.gap_bin, self.gap_bins)
                records.append((clip_id(sidecar), b, int(score.correct), int(score.absent), score.target))
        if not records:
            return
        clip, b, correct, absent, target = (torch.tensor(column, device=self.device) for column in zip(*records))
        n = len(self.gap_bins)
        self.total += torch.bincount(b, minlength=n)
        self.correct += torch.bincount(b, weights=correct.double(), minlength=n).long()
        self.absent += torch.bincount(b, weights=absent.double(), minlength=n).long()
        self.colour_total += torch.bincount(target, minlength=MAX_PALETTE)[:MAX_PALETTE]
        self.colour_correct += torch.bincount(target, weights=correct.double(), minlength=MAX_PALETTE)[
            :MAX_PALETTE].long()
        self.event_clip.append(clip)
        self.event_bin.append(b)
        self.event_correct.append(correct)

    def _sync_dist(self, *args, **kwargs) -> None:
        """A rank without events still sends a long tensor (torchmetrics would send float32 ``[]``, which the other
        ranks' gather cannot match)."""
        for name in ("event_clip", "event_bin", "event_correct"):
            if not getattr(self, name):
                getattr(self, name).append(torch.zeros(0, dtype=torch.long, device=self.device))
        super()._sync_dist(*args, **kwargs)

    def compute(self) -> dict[str, Tensor]:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        ratio = lambda a, b: a.double() / b if b > 0 else nan  # noqa: E731
        clips, bins, correct = ((dim_zero_cat(s).cpu().numpy() if len(s) else np.zeros(0, int))
                                for s in (self.event_clip, self.event_bin, self.event_correct))
        out = {}
        for i, b in enumerate(self.gap_bins):
            out[f"recall_gap{b}"] = ratio(self.correct[i], self.total[i])
            lo, hi = bootstrap_ci(clips[bins == i], correct[bins == i])
            out[f"recall_gap{b}_lo"], out[f"recall_gap{b}_hi"] = (torch.tensor(v, dtype=torch.float64)
                                                                  for v in (lo, hi))
            out[f"recall_absent_gap{b}"] = ratio(self.absent[i], self.total[i])
            out[f"events_gap{b}"] = self.total[i].double()
        out["recall"] = ratio(self.correct.sum(), self.total.sum())
        out["recall_absent"] = ratio(self.absent.sum(), self.total.sum())
        for k in range(int(self.palette_size)):
            out[f"recall_colour{k}"] = ratio(self.colour_correct[k], self.colour_total[k])
        size = int(self.palette_size)
        out["chance"] = torch.tensor(1.0 / size if size else float("nan"), dtype=torch.float64)
        return out
