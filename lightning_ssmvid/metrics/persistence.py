"""Metrics that an empty or frozen rollout cannot pass: foreground persistence and motion, generated vs real.

Flicker alone rewards a rollout that goes black (nothing changes). Per horizon, ``ForegroundMotion`` accumulates
the fraction of *foreground* pixels (further than ``threshold`` from the clip's background, ``scene_background``)
and the mean absolute frame difference, of the generated and of the real continuation; their ratios per horizon
band are ~1 for a rollout that keeps its objects and keeps them moving, 0 for an empty one
(foreground) or a frozen one (motion).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor
from torchmetrics import Metric

LEVELS = 16  # colour quantisation for finding the backdrop colour: coarser than codec noise, finer than a palette
BACKDROP_SHARE = 0.8  # the median frame is the backdrop colour on at least this share: no static structure


def scene_background(context: Tensor, threshold: float = 0.1) -> Tensor:
    """context (K, C, H, W) in [0, 1] -> (C, H, W) the background its foreground is measured against.

    The per-pixel median over the context (objects move, a static scene stays), unless that median frame is one
    backdrop colour (within ``threshold``) on ``BACKDROP_SHARE`` of its pixels, as in the bouncing data: then that
    colour everywhere. The median alone counts an object that moves less than its own size in the context as
    background (measured: a slow square of the smoke data read as a sliver of its pixels); a scene with static
    structure (the long-memory data's occluder, a third of the frame) keeps the median.
    """
    median = context.float().median(dim=0).values
    if not torch.isfinite(median).all():  # no colour to find; foreground_fraction reads the NaN as unscored
        return median
    levels = (median.clamp(0, 1) * (LEVELS - 1)).round().flatten(1).T  # (H*W, C) each pixel's quantised colour
    _, which, counts = torch.unique(levels, dim=0, return_inverse=True, return_counts=True)
    colour = median.flatten(1)[:, which == counts.argmax()].mean(dim=1)  # (C,) the commonest colour
    if ((median - colour[:, None, None]).abs().amax(dim=0) <= threshold).double().mean() >= BACKDROP_SHARE:
        return colour[:, None, None].expand_as(median).clone()
    return median


def foreground_fraction(frames: Tensor, background: Tensor, threshold: float) -> Tensor:
    """frames (B, T, C, H, W), background (B, C, H, W) in [0, 1] -> (B, T) share of pixels off the background;
    NaN for a frame holding NaN or inf (a diverged frame must not read as an empty one)."""
    distance = (frames - background[:, None]).abs().amax(dim=2)
    fraction = (distance > threshold).double().mean(dim=(2, 3))
    return fraction.masked_fill(~torch.isfinite(distance).all(dim=-1).all(dim=-1), float("nan"))


def motion(frames: Tensor, previous: Tensor) -> Tensor:
    """frames (B, T, C, H, W), previous (B, C, H, W): the frame before -> (B, T) mean |x_t - x_{t-1}|."""
    pairs = torch.cat([previous[:, None], frames], dim=1)
    return (pairs[:, 1:] - pairs[:, :-1]).abs().double().mean(dim=(2, 3, 4))


def seen_bands(count: Tensor, bins: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive 1-based bands clipped to the horizons seen (``count > 0``), empty ones dropped."""
    seen = int((count > 0).sum())
    return [(lo, min(hi, seen)) for lo, hi in bins if min(hi, seen) >= lo]


class ForegroundMotion(Metric):
    """``update(pred, target, context)``: pred/target (B, T, C, H, W) in [0, 1] continuing ``context``
    (B, K, C, H, W). ``compute()``: per-horizon curves ``foreground_gen``, ``foreground_real``, ``motion_gen``,
    ``motion_real`` (H,), NaN where never seen. ``summary(bins)``: ``foreground_ratio_h{lo}-{hi}`` and
    ``motion_ratio_h{lo}-{hi}`` (generated / real, pooled over the band)."""

    full_state_update = False

    def __init__(self, max_horizon: int, threshold: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.max_horizon, self.threshold = max_horizon, threshold
        for name in ("foreground_gen", "foreground_real", "motion_gen", "motion_real", "count"):
            self.add_state(name, torch.zeros(max_horizon, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, context: Tensor) -> None:
        pred, target, context = pred.float(), target.float(), context.float()
        steps = min(pred.shape[1], self.max_horizon)
        pred, target = pred[:, :steps], target[:, :steps]
        background = torch.stack([scene_background(clip, self.threshold) for clip in context])
        last = context[:, -1]
        self.foreground_gen[:steps] += foreground_fraction(pred, background, self.threshold).sum(0)
        self.foreground_real[:steps] += foreground_fraction(target, background, self.threshold).sum(0)
        self.motion_gen[:steps] += motion(pred, last).sum(0)
        self.motion_real[:steps] += motion(target, last).sum(0)
        self.count[:steps] += pred.shape[0]

    def compute(self) -> dict[str, Tensor]:
        count = torch.where(self.count > 0, self.count, torch.nan)
        return {name: getattr(self, name) / count for name in
                ("foreground_gen", "foreground_real", "motion_gen", "motion_real")}

    def summary(self, bins: Iterable[tuple[int, int]]) -> dict[str, float]:
        """Generated / real per inclusive 1-based horizon band (bands clipped to the horizons seen, as in
        ``temporal.summarise``); synced over DDP ranks (a collective: every rank calls it)."""
        with self.sync_context():
            sums = {name: getattr(self, name).clone() for name in
                    ("foreground_gen", "foreground_real", "motion_gen", "motion_real", "count")}
        out = {}
        for lo, top in seen_bands(sums["count"], bins):
            band = slice(lo - 1, top)
            for name in ("foreground", "motion"):
                real, gen = float(sums[f"{name}_real"][band].sum()), float(sums[f"{name}_gen"][band].sum())
                out[f"{name}_ratio_h{lo}-{top}"] = gen / real if real > 0 else float("nan")
        return out


class SampleDiversity(Metric):
    """``update(first, second)``: two rollouts (B, T, C, H, W) of a stochastic head from one context (different
    seeds). ``summary(bins)``: ``diversity_h{lo}-{hi}``, their mean absolute pixel difference per horizon band (0
    for a deterministic head; it grows with the horizon as the futures part)."""

    full_state_update = False

    def __init__(self, max_horizon: int, **kwargs):
        super().__init__(**kwargs)
        self.max_horizon = max_horizon
        for name in ("difference", "count"):
            self.add_state(name, torch.zeros(max_horizon, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, first: Tensor, second: Tensor) -> None:
        steps = min(first.shape[1], self.max_horizon)
        gap = (first[:, :steps].float() - second[:, :steps].float()).abs().double().mean(dim=(2, 3, 4))
        self.difference[:steps] += gap.sum(0)
        self.count[:steps] += first.shape[0]

    def compute(self) -> Tensor:
        return self.difference / torch.where(self.count > 0, self.count, torch.nan)

    def summary(self, bins: Iterable[tuple[int, int]]) -> dict[str, float]:
        """Per inclusive 1-based band (clipped to the horizons seen); a collective under DDP."""
        with self.sync_context():
            difference, count = self.difference.clone(), self.count.clone()
        return {f"diversity_h{lo}-{top}": float(difference[lo - 1 : top].sum() / count[lo - 1 : top].sum())
                for lo, top in seen_bands(count, bins)}


class BandMeans:
    """Running means of per-frame values over inclusive 1-based frame bands: sums, not lists, so a rollout of any
    length takes constant memory. ``add(name=value, ...)`` once per frame (NaN values are skipped);
    ``means(name)``: {(lo, hi): mean} for the bands seen, ``hi`` clipped to the frames added."""

    def __init__(self, bands: Iterable[tuple[int, int]]):
        self.bands, self.frames = list(bands), 0
        self.sums: dict[str, list[float]] = {}
        self.counts: dict[str, list[int]] = {}

    def add(self, **values: float) -> None:
        self.frames += 1
        for name, value in values.items():
            sums = self.sums.setdefault(name, [0.0] * len(self.bands))
            counts = self.counts.setdefault(name, [0] * len(self.bands))
            if math.isnan(value):
                continue
            for i, (lo, hi) in enumerate(self.bands):
                if lo <= self.frames <= hi:
                    sums[i] += value
                    counts[i] += 1

    def means(self, name: str) -> dict[tuple[int, int], float]:
        out = {}
        for i, (lo, hi) in enumerate(self.bands):
            if self.frames >= lo and name in self.sums:
                count = self.counts[name][i]
                out[(lo, min(hi, self.frames))] = self.sums[name][i] / count if count else float("nan")
        return out


class RolloutPersistence:
    """Foreground and motion of a generated video against its own context, frame by frame (constant memory).

    ``update(frame)`` with each generated (C, H, W) frame in [0, 1]; ``summary()`` gives per inclusive 1-based
    band of ``bands`` ``foreground_ratio_h{lo}-{hi}`` (mean generated foreground fraction / the context's) and
    ``motion_ratio_h{lo}-{hi}`` (mean |x_t - x_{t-1}| / the context's). Background: ``scene_background``.
    """

    def __init__(self, context: Tensor, bands: Iterable[tuple[int, int]], threshold: float = 0.1):
        context = context.float()  # (K, C, H, W) in [0, 1]
        self.background, self.threshold = scene_background(context, threshold), threshold
        self.context_foreground = float(foreground_fraction(context[None], self.background[None], threshold).mean())
        self.context_motion = float(motion(context[None, 1:], context[None, 0]).mean())
        self.previous = context[-1]
        self.means = BandMeans(bands)

    def update(self, frame: Tensor) -> None:
        frame = frame.float().cpu()  # a diverged (NaN) frame adds NaN foreground and motion, which BandMeans skips
        self.means.add(foreground=float(foreground_fraction(frame[None, None], self.background[None], self.threshold)),
                       motion=float((frame - self.previous).abs().mean()))
        self.previous = frame

    def summary(self) -> dict[str, float]:
        out = {"context_foreground": self.context_foreground, "context_motion": self.context_motion}
        moving = self.means.means("motion")
        for (lo, hi), foreground in self.means.means("foreground").items():
            out[f"foreground_ratio_h{lo}-{hi}"] = foreground / max(self.context_foreground, 1e-12)
            out[f"motion_ratio_h{lo}-{hi}"] = moving[lo, hi] / max(self.context_motion, 1e-12)
        return out


def rollout_bands(n_frames: int) -> list[tuple[int, int]]:
    """The horizon bands a long rollout is judged on: 1-16, 17-128, 129-n (those that exist)."""
    return [(lo, min(hi, n_frames)) for lo, hi in ((1, 16), (17, 128), (129, n_frames)) if lo <= n_frames]
