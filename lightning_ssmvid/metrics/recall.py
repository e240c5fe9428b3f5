"""Long-range recall probe: is the hidden cue object's colour right when it comes back?

For each event of a long-memory clip (``lightning_ssmvid.data.long_memory``) whose reveal window lies inside the
scored video, the probe takes the pixels of the video inside the cue object's ground-truth visible mask over the
reveal window, their per-channel median colour, maps it to the nearest palette colour (Euclidean RGB) and compares
with the true cue. A model that forgot the colour scores chance, ``1 / palette_size``; ground truth scores 1.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_ssmvid.data.long_memory import cue_mask


class EventScore(NamedTuple):
    event: int  # index in sidecar["events"]
    gap: int
    gap_bin: int
    predicted: int  # palette index of the colour found
    target: int  # the true palette index
    n_pixels: int  # mask pixels the colour was taken from

    @property
    def correct(self) -> bool:
        return self.predicted == self.target


def _as_uint8_video(video) -> Tensor:
    video = torch.as_tensor(video)
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"video must be (T, 3, H, W), got {tuple(video.shape)}")
    if video.is_floating_point():  # frames in [0, 1] (what the model generates)
        video = (video.clamp(0, 1) * 255).round()
    return video


def score_events(video, sidecar: dict, offset: int = 0, reduce: str = "median") -> list[EventScore]:
    """Score every event of ``sidecar`` whose reveal window ``[reveal_start, reveal_stop)`` lies inside ``video``.

    video: (T, 3, H, W), uint8 or float in [0, 1]; ``video[0]`` is frame ``offset`` of the clip (a generated
    rollout after ``offset`` context frames). ``reduce``: ``"median"`` (default) or ``"mean"`` colour of the pixels.
    """
    video = _as_uint8_video(video)
    size = sidecar["frame_size"]
    if tuple(video.shape[-2:]) != (size, size):
        raise ValueError(f"video frames are {tuple(video.shape[-2:])}, the clip's are {(size, size)}: score at the "
                         "data's frame size")
    palette = torch.tensor(sidecar["palette"], dtype=torch.float32)
    target = int(sidecar["cue"]["palette_index"])
    scores = []
    for k, event in enumerate(sidecar["events"]):
        start, stop = event["reveal_start"] - offset, event["reveal_stop"] - offset
        if start < 0 or stop > video.shape[0]:
            continue
        pixels = []
        for t in range(event["reveal_start"], event["reveal_stop"]):
            mask = torch.from_numpy(cue_mask(sidecar, t, visible=True))
            pixels.append(video[t - offset][:, mask])
        pixels = torch.cat(pixels, dim=1).float()  # (3, N)
        if pixels.shape[1] == 0:
            continue
        colour = pixels.median(dim=1).values if reduce == "median" else pixels.mean(dim=1)
        predicted = int(torch.cdist(colour[None], palette)[0].argmin())
        scores.append(EventScore(k, int(event["gap"]), int(event.get("gap_bin", event["gap"])), predicted, target,
                                 int(pixels.shape[1])))
    return scores


def score_clip(video, sidecar: dict, offset: int = 0, reduce: str = "median") -> list[tuple[int, bool]]:
    """``[(gap, correct), ...]`` for the events whose reveal window lies inside ``video`` (see ``score_events``)."""
    return [(s.gap, s.correct) for s in score_events(video, sidecar, offset, reduce)]


def nearest_bin(gap: float, gap_bins: Sequence[int]) -> int:
    """Index of the bin nearest to ``gap`` on a log scale (exact for the generator's gaps, which are bin values)."""
    return int(np.argmin([abs(math.log(gap / b)) for b in gap_bins]))


class CueRecall(Metric):
    """Cue-recall accuracy per gap bin, accumulated as sum-reduced counts (exact under DDP).

    ``update(videos, sidecars, offsets=0)``: videos (B, T, 3, H, W) or a list of (T_i, 3, H, W); sidecars a list of
    ``load_sidecar`` dicts; offsets an int or one per video. ``compute()``: ``{"recall_gap{bin}": accuracy (nan if
    no event of that bin was scored), "recall": over all bins, "chance": 1 / palette_size}``.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, gap_bins: Sequence[int] = (60, 240, 960), reduce: str = "median", **kwargs):
        super().__init__(**kwargs)
        if reduce not in ("median", "mean"):
            raise ValueError(f"reduce must be 'median' or 'mean', got {reduce!r}")
        self.gap_bins, self.reduce = tuple(int(b) for b in gap_bins), reduce
        self.add_state("correct", torch.zeros(len(self.gap_bins), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(len(self.gap_bins), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("palette_size", torch.zeros((), dtype=torch.long), dist_reduce_fx="max")

    def update(self, videos, sidecars: Sequence[dict], offsets: int | Sequence[int] | Tensor = 0) -> None:
        if isinstance(offsets, Tensor):
            offsets = offsets.tolist()
        if isinstance(offsets, int):
            offsets = [offsets] * len(sidecars)
        if not len(videos) == len(sidecars) == len(offsets):
            raise ValueError(f"got {len(videos)} videos, {len(sidecars)} sidecars and {len(offsets)} offsets")
        correct, total = torch.zeros_like(self.correct), torch.zeros_like(self.total)
        for video, sidecar, offset in zip(videos, sidecars, offsets):
            palette_size = len(sidecar["palette"])
            self.palette_size = torch.maximum(self.palette_size, torch.tensor(palette_size, device=self.device))
            for score in score_events(video.cpu() if isinstance(video, Tensor) else video, sidecar, int(offset),
                                      self.reduce):
                b = nearest_bin(score.gap_bin, self.gap_bins)
                total[b] += 1
                correct[b] += int(score.correct)
        self.correct += correct
        self.total += total

    def compute(self) -> dict[str, Tensor]:
        correct, total = self.correct.double(), self.total.double()
        out = {f"recall_gap{b}": correct[i] / total[i] if total[i] > 0 else torch.tensor(float("nan"))
               for i, b in enumerate(self.gap_bins)}
        out["recall"] = correct.sum() / total.sum() if total.sum() > 0 else torch.tensor(float("nan"))
        size = int(self.palette_size)
        out["chance"] = torch.tensor(1.0 / size if size else float("nan"), dtype=torch.float64)
        return out
