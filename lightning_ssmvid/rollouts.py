"""Rollout evaluation: generate from real context and score quality vs horizon, consistency, FVD and the cue recall
of a free rollout through each gap (the memory probes are ``memory_probes``).

Run by the ``callbacks.evaluation.RolloutEvaluation`` callback, in training and in ``lightning_ssmvid.evaluate``.
Clips are dealt to ranks without padding and every metric is a torchmetrics ``Metric`` (sum- or cat-reduced), so 1
and N processes log identical numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_ssmvid.data.video_io import open_video, read_frames
from lightning_ssmvid.frames import to_unit
from lightning_ssmvid.memory_probes import at_sidecar_size, encode_video, load_clip_sidecar
from lightning_ssmvid.metrics import keys
from lightning_ssmvid.metrics.fvd import load_fvd_metric
from lightning_ssmvid.metrics.persistence import ForegroundMotion, SampleDiversity
from lightning_ssmvid.metrics.recall import CueRecall
from lightning_ssmvid.metrics.temporal import (
    FlowWarpingError,
    HorizonQuality,
    TemporalFlicker,
    default_horizon_bins,
    summarise,
)
from lightning_ssmvid.model import VideoModel

log = logging.getLogger(__name__)


class Evaluator:
    """Accumulates every rollout metric over clips; ``compute()`` returns scalars (``prefix/...``) and curves."""

    def __init__(self, context: int = 16, horizon: int = 64, fvd_frames: int = 16, gap_bins: Sequence[int] = (),
                 fvd_detector_path: str | None = None, fvd_detector_sha256: str | None = None,
                 max_events_per_clip: int = 8, prefix: str = "val"):
        self.context, self.horizon, self.fvd_frames, self.prefix = context, horizon, fvd_frames, prefix
        self.max_events_per_clip = max_events_per_clip
        self.quality = HorizonQuality(max_horizon=horizon)
        self.copy_last = HorizonQuality(max_horizon=horizon)  # the baseline: the last context frame, repeated
        self.persistence = ForegroundMotion(max_horizon=horizon)  # cannot be passed by an empty or frozen rollout
        self.diversity = SampleDiversity(max_horizon=horizon)  # stochastic heads: two draws from one context
        self.flicker = TemporalFlicker()
        self.warping = FlowWarpingError()
        # the free rollout: real frames until the cue is hidden, then generated through the gap and the reveal window
        self.recall_rollout = CueRecall(gap_bins=gap_bins) if gap_bins else None
        self.fvd = load_fvd_metric(fvd_detector_path, fvd_detector_sha256, num_frames=fvd_frames) if (
            fvd_frames and horizon >= fvd_frames) else None
        self.samples: list[tuple[Tensor, Tensor]] = []  # (real, generated) of the first clips, for W&B

    def metrics(self) -> list:
        return [m for m in (self.quality, self.copy_last, self.persistence, self.diversity, self.flicker, self.warping,
                            self.recall_rollout, self.fvd) if m is not None]

    def to(self, device) -> Evaluator:
        for metric in self.metrics():
            metric.to(device)
        return self

    @torch.no_grad()
    def update(self, model: VideoModel, video_path: Path, frame_size: int, keep_sample: bool = False,
               stride: int = 1) -> None:
        """Score one clip: a rollout after ``context`` real frames (read ``stride`` apart, as in training), and for
        long-memory clips one rollout per cue event (only at stride 1, the sidecar's frame rate)."""
        reader = open_video(video_path, frame_size)
        n_frames = (len(reader) - 1) // stride + 1
        horizon = min(self.horizon, n_frames - self.context)
        if horizon < 2:
            log.warning("skipped %s in evaluation: %d frames, fewer than context %d + 2", video_path, n_frames,
                        self.context)
            return
        real = read_frames(reader, 0, self.context + horizon, stride=stride, frame_size=frame_size)
        generated = torch.stack(list(model.rollout(real[None, : self.context], horizon)), 1).cpu()
        target = to_unit(real[self.context :])[None]
        self.quality.update(generated, target)
        context = to_unit(real[: self.context])[None]
        self.copy_last.update(context[:, -1:].expand_as(target), target)
        self.persistence.update(generated, target, context)
        if getattr(getattr(model, "head", None), "stochastic", False):
            second = torch.stack(list(model.rollout(real[None, : self.context], horizon, seed=1)), 1).cpu()
            self.diversity.update(generated, second)
        self.flicker.update(generated, target)
        self.warping.update(generated, target)
        if self.fvd is not None and horizon >= self.fvd_frames:
            self.fvd.update(target[:, : self.fvd_frames], real=True)
            self.fvd.update(generated[:, : self.fvd_frames], real=False)
        if keep_sample:
            self.samples.append((to_unit(real)[None], generated))
        sidecar = load_clip_sidecar(video_path) if self.recall_rollout is not None and stride == 1 else None
        if sidecar is not None:
            self._update_recall(model, reader, frame_size, sidecar)

    def _update_recall(self, model: VideoModel, reader, frame_size: int, sidecar: dict) -> None:
        """Per event: real frames until the cue object is fully hidden, then a free rollout through the gap and its
        reveal window (``recall_rollout``: memory and a rollout that stays coherent for the whole gap)."""
        events = sorted(sidecar["events"][: self.max_events_per_clip], key=lambda e: e["hide_start"])
        if not events:
            return
        z = encode_video(model, reader, frame_size, stop=events[-1]["hide_start"])
        state, position, z_hat = None, 0, None
        generator = model.sampling_generator(0)  # a stochastic head's draws, fixed per clip
        for event in events:  # the teacher-forced pass, in pieces with carried state (== one pass)
            piece_hat, state = model.predict_latents(z[:, position : event["hide_start"]], state, generator)
            z_hat, position = (piece_hat if piece_hat.shape[1] else z_hat), event["hide_start"]
            start = {key: value.clone() for key, value in state.items()}  # the real pass goes on from `state`
            window = event["reveal_start"] - position
            latents = list(model.rollout_latents(z_hat[:, -1], start, event["reveal_stop"] - position,
                                                 generator=generator))[window:]
            frames = at_sidecar_size(torch.sigmoid(model.codec.decode(torch.cat(latents))), sidecar)
            self.recall_rollout.update([frames], [{**sidecar, "events": [event]}], offsets=[event["reveal_start"]])

    def compute(self) -> tuple[dict[str, float], dict[str, Any]]:
        """(scalars keyed ``prefix/name``, curves) — curves: per-horizon PSNR/SSIM lists."""
        p = self.prefix
        scalars: dict[str, float] = {}
        quality = self.quality.compute()
        bins = default_horizon_bins(self.horizon)
        copy_last = self.copy_last.compute()
        for name in ("psnr", "ssim"):
            scalars.update({f"{p}/{k}": v for k, v in summarise(quality[name], bins, name).items()})
            scalars.update({f"{p}/{keys.COPY_LAST}_{k}": v for k, v in summarise(copy_last[name], bins, name).items()})
        scalars.update({f"{p}/{k}": v for k, v in self.persistence.summary(bins).items()})
        scalars.update({f"{p}/{k}": v for k, v in self.diversity.summary(bins).items()})
        scalars.update({f"{p}/{k}": float(v) for k, v in self.flicker.compute().items()})
        scalars.update({f"{p}/{k}": float(v) for k, v in self.warping.compute().items()})
        if self.recall_rollout is not None:  # compute() syncs across ranks: every rank calls it, events or not
            rollout = self.recall_rollout.compute()
            scalars.update({f"{p}/{k.replace('recall', keys.RECALL_ROLLOUT, 1)}": float(v) for k, v in rollout.items()
                            if k.startswith("recall") and "colour" not in k})
        if self.fvd is not None:
            with self.fvd.sync_context():
                n_videos, key = self.fvd.n_videos, self.fvd.key(p)
            if n_videos >= 2:
                scalars[key] = float(self.fvd.compute())
        curves = {"horizon": list(range(1, self.horizon + 1)),
                  "psnr": [_finite_or_none(v) for v in quality["psnr"].tolist()],
                  "ssim": [_finite_or_none(v) for v in quality["ssim"].tolist()]}
        if self.fvd is not None:
            curves["fvd"] = self.fvd.describe()
        return scalars, curves


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evaluate_clips(model: VideoModel, videos: list[Path], frame_size: int, rank: int = 0, world_size: int = 1,
                   n_samples: int = 2, stride: int = 1, **evaluator_kwargs) -> Evaluator:
    """Run an ``Evaluator`` over this rank's share of ``videos`` (``videos[rank::world_size]``)."""
    evaluator = Evaluator(**evaluator_kwargs).to(model.device)
    was_training = model.training
    model.eval()
    for i, path in enumerate(videos[rank::world_size]):
        evaluator.update(model, Path(path), frame_size, keep_sample=rank == 0 and i < n_samples, stride=stride)
    model.train(was_training)
    return evaluator
