"""Rollout evaluation: generate from real context and score quality vs horizon, consistency, FVD and the cue recall
of a free rollout through each gap; plus the memory probes of ``memory_evaluation`` on long-memory data.

Runs at the end of validation (``RolloutEvaluation`` callback) and from ``lightning_ssmvid.evaluate``. Clips are
dealt to ranks without padding and every metric is a torchmetrics ``Metric`` (sum- or cat-reduced), so 1 and N
processes log identical numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from lightning_ssmvid.data.video_io import open_video, read_frames, write_video
from lightning_ssmvid.frames import to_unit
from lightning_ssmvid.memory_evaluation import MemoryEvaluator, at_sidecar_size, encode_video, load_clip_sidecar
from lightning_ssmvid.metrics import keys
from lightning_ssmvid.metrics.fvd import load_fvd_metric
from lightning_ssmvid.metrics.horizon import horizon_summary, memory_half_lives
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
from lightning_ssmvid.utils.files import write_json_atomic

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


class RolloutEvaluation(L.Callback):
    """At the end of validation (every ``every_n_epochs`` and always at the last epoch), evaluate rollouts on the
    first ``n_clips`` validation videos and, on long-memory data (``gap_bins``), the memory probes on
    ``memory_clips`` validation videos (null: all) with the state read-out fitted on ``memory_fit_clips`` training
    videos (null: all); logs ``val/...`` scalars, W&B curves and real|generated sample videos, and writes
    ``curves.json`` in the run folder."""

    def __init__(self, n_clips: int = 4, context: int = 16, horizon: int = 64, every_n_epochs: int = 1,
                 gap_bins: Sequence[int] | None = (), fvd_detector_path: str | None = None,
                 fvd_detector_sha256: str | None = None, fvd_frames: int = 16, max_events_per_clip: int = 8,
                 n_samples: int = 2, fps: float = 24, output_dir: str | None = None,
                 memory_clips: int | None = None, memory_fit_clips: int | None = None, palette_size: int = 8):
        self.n_clips, self.every_n_epochs, self.n_samples, self.fps = n_clips, every_n_epochs, n_samples, fps
        self.memory_clips, self.memory_fit_clips, self.palette_size = memory_clips, memory_fit_clips, palette_size
        self.output_dir = Path(output_dir) if output_dir else None
        self.evaluator_kwargs = dict(context=context, horizon=horizon, gap_bins=tuple(gap_bins or ()),
                                     fvd_detector_path=fvd_detector_path, fvd_detector_sha256=fvd_detector_sha256,
                                     fvd_frames=fvd_frames, max_events_per_clip=max_events_per_clip)

    def _due(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking or self.n_clips <= 0:
            return False
        if trainer.state.fn == "validate":  # make evaluate: always
            return True
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        last_step = 0 < trainer.max_steps <= trainer.global_step
        return bool(last_epoch or last_step or trainer.fast_dev_run
                    or (trainer.current_epoch + 1) % self.every_n_epochs == 0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: VideoModel) -> None:
        if not self._due(trainer):
            return
        datamodule = trainer.datamodule
        kwargs, n_clips = dict(self.evaluator_kwargs), self.n_clips
        if trainer.fast_dev_run:  # a wiring check: one clip, one event
            kwargs["max_events_per_clip"], n_clips = 1, 1
        videos = [entry.path for entry in datamodule.val_set.videos][:n_clips]
        evaluator = evaluate_clips(pl_module, videos, datamodule.frame_size, trainer.global_rank,
                                   trainer.world_size, self.n_samples, datamodule.stride, **kwargs)
        scalars, curves = evaluator.compute()
        if self.evaluator_kwargs["gap_bins"]:
            memory = self.memory_probes(trainer, pl_module, fast=bool(trainer.fast_dev_run))
            scalars.update(memory.compute())
            curves["codec_ceiling_per_colour"] = memory.codec_per_colour
        lives = memory_half_lives(pl_module.core)
        if lives is not None:
            scalars.update(horizon_summary(lives))
            curves["memory_halflife"] = sorted(lives.tolist())
        for key, value in scalars.items():
            if math.isfinite(value):
                pl_module.log(key, value, sync_dist=True)  # equal on every rank (synced metrics): their mean is exact
        if trainer.is_global_zero:
            out = self.output_dir or Path(trainer.default_root_dir)
            videos = write_samples(evaluator.samples, out / "samples" / f"epoch{trainer.current_epoch:03d}", self.fps,
                                   self.evaluator_kwargs["context"])
            log_to_wandb(trainer, scalars, curves, videos, self.fps, lives)
            write_json_atomic(out / "curves.json", {"epoch": trainer.current_epoch, "scalars": scalars, **curves})


    def memory_probes(self, trainer: L.Trainer, pl_module: VideoModel, fast: bool = False) -> MemoryEvaluator:
        """The memory probes (``memory_evaluation``) over this rank's share of the validation and training clips."""
        datamodule, rank, world = trainer.datamodule, trainer.global_rank, trainer.world_size
        limit = lambda videos, n: videos[: (1 if fast else n)]  # noqa: E731  (None: all)
        memory = MemoryEvaluator(self.evaluator_kwargs["gap_bins"], self.palette_size,
                                 pl_module.core.d_model).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        for dataset, n, fit in ((datamodule.train_set, self.memory_fit_clips, True),
                                (datamodule.val_set, self.memory_clips, False)):
            videos = limit([entry.path for entry in dataset.videos], n)[rank::world]
            memory.update(pl_module, videos, datamodule.frame_size, dataset.latents, fit=fit)
        pl_module.train(was_training)
        return memory


def side_by_side(real: Tensor, generated: Tensor, context: int) -> np.ndarray:
    """(T, 3, H, 2W + 2) uint8: real | generated, the context frames of the generated side framed in red."""
    real, generated = real[0], generated[0]
    generated = torch.cat([real[:context], generated])
    frames = torch.cat([real, torch.ones_like(real[:, :, :, :2]), generated], dim=-1)
    frames[:context, 0, :, -real.shape[-1]:] = torch.where(_border(real.shape[-1]), 1.0,
                                                           frames[:context, 0, :, -real.shape[-1]:])
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _border(size: int) -> Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[:1], mask[-1:], mask[:, :1], mask[:, -1:] = True, True, True, True
    return mask


def write_samples(samples: list, out_dir: Path, fps: float, context: int) -> list[Path]:
    """Write real | generated sample videos as MP4 files (kept in the run folder, and what W&B uploads)."""
    paths = []
    for i, (real, generated) in enumerate(samples):
        paths.append(write_video(out_dir / f"sample_{i}.mp4",
                                 side_by_side(real, generated, context).transpose(0, 2, 3, 1), fps=fps, lossless=False))
    return paths


def log_to_wandb(trainer: L.Trainer, scalars: dict, curves: dict, videos: list[Path], fps: float,
                 half_lives: Tensor | None = None) -> None:
    """Horizon curves as line plots, recall per gap as a table and bar chart, the memory-horizon histogram and
    sample videos (W&B only)."""
    wandb_loggers = [lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]
    if not wandb_loggers:
        return
    import wandb

    logger = wandb_loggers[0]
    horizon, psnr = keys.CHART_COLUMNS[keys.PSNR_CURVE]  # the column names the dashboard's chart panels query
    ssim = keys.CHART_COLUMNS[keys.SSIM_CURVE][1]
    rows = [[h, p, s] for h, p, s in zip(curves["horizon"], curves["psnr"], curves["ssim"]) if p is not None]
    table = wandb.Table(data=rows, columns=[horizon, psnr, ssim])
    payload = {keys.PSNR_CURVE: wandb.plot.line(table, horizon, psnr, title="PSNR vs horizon"),
               keys.SSIM_CURVE: wandb.plot.line(table, horizon, ssim, title="SSIM vs horizon")}
    per_gap = "/" + keys.RECALL_GAP.format(gap="")  # "/recall_gap" under any prefix
    recall = [[k.split(per_gap)[1], v] for k, v in scalars.items() if per_gap in k and math.isfinite(v)]
    if recall:
        gap, accuracy = keys.CHART_COLUMNS[keys.RECALL_CURVE]
        recall_table = wandb.Table(data=recall, columns=[gap, accuracy])
        payload[keys.RECALL_CURVE] = wandb.plot.bar(recall_table, gap, accuracy, title="Recall vs gap")
    if half_lives is not None:  # log10 frames: half-lives span many orders of magnitude
        payload[keys.MEMORY_HALFLIFE_HISTOGRAM] = wandb.Histogram(half_lives.clamp_min(1e-3).log10())
    logger.experiment.log(payload)  # at W&B's current step (the logger may already be past global_step)
    for i, path in enumerate(videos):
        logger.log_video(keys.SAMPLE.format(i=i), [str(path)], format=["mp4"])
