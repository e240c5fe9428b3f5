"""The one registry of logged metric names and which direction is better (used by summaries, tables, dashboards)."""

from __future__ import annotations

TRAIN_LOSS = "train/loss"
TRAIN_PIXEL_MSE = "train/pixel_mse"
TRAIN_RECON_MSE = "train/recon_mse"
TRAIN_LATENT_MSE = "train/latent_mse"
TRAIN_FRAMES_PER_S = "train/frames_per_s"
TRAIN_SKIPPED_NONFINITE = "train/skipped_nonfinite"
VAL_LOSS = "val/loss"
VAL_PIXEL_MSE = "val/pixel_mse"
VAL_RECON_MSE = "val/recon_mse"
VAL_LATENT_MSE = "val/latent_mse"
VAL_PSNR_NEXT = "val/psnr_next"

# Metric names containing one of these fragments are better when higher; all others when lower.
HIGHER_IS_BETTER = ("psnr", "ssim", "recall", "accuracy", "frames_per_s")


def higher_is_better(key: str) -> bool:
    return any(fragment in key for fragment in HIGHER_IS_BETTER)
