"""Pictures of a rollout evaluation: real | generated sample videos (MP4) and the W&B charts."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lightning_ssmvid.data.video_io import write_video
from lightning_ssmvid.metrics import keys
from lightning_ssmvid.pictures import side_by_side_video


def write_samples(samples: list, out_dir: Path, fps: float, context: int) -> list[Path]:
    """Write real | generated sample videos as MP4 files (kept in the run folder, and what W&B uploads)."""
    paths = []
    for i, (real, generated) in enumerate(samples):
        paths.append(write_video(out_dir / f"sample_{i}.mp4",
                                 side_by_side_video(real, generated, context), fps=fps, lossless=False))
    return paths


def log_to_wandb(trainer: L.Trainer, scalars: dict, curves: dict, videos: list[Path], fps: float,
                 half_lives: Tensor | None = None) -> None:
    """Horizon curves as line plots, recall per gap as a table and bar chart, the memory-horizon histogram and
    sample videos (W&B only)."""
    wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
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
