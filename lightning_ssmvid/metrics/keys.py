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

# Rollout evaluation (lightning_ssmvid.evaluation), logged under val/ (or test/): PSNR/SSIM per horizon bin
# ("psnr_h1-16", ...), flicker and warping error of generated vs real, cue recall per gap bin, FVD.
PSNR_BIN = "psnr_h{lo}-{hi}"
SSIM_BIN = "ssim_h{lo}-{hi}"
FLICKER = ("flicker_gen", "flicker_real", "flicker_ratio")
WARP_ERROR = ("warp_error_gen", "warp_error_real", "warp_error_ratio")
RECALL_GAP = "recall_gap{gap}"
RECALL_EVENTS_GAP = "recall_events_gap{gap}"
RECALL = "recall"
RECALL_CHANCE = "recall_chance"
RECALL_CODEC = "recall_codec_ceiling"  # the probe on codec reconstructions of the real frames: the best a core can do
FVD = "fvd_{n}x{t}"
MEMORY_HALFLIFE = "memory_halflife"  # quantiles of SSM decay half-lives in frames (metrics/horizon.py)
CURVES = "curves"    # W&B line/bar plots: curves/psnr_vs_horizon, curves/ssim_vs_horizon, curves/recall_vs_gap
SAMPLES = "samples"  # W&B videos: samples/0, samples/1, ... (real | generated)

# Metric names containing one of these fragments are better when higher; "_ratio" metrics are best at 1 (the
# real videos' value); all others are better when lower.
HIGHER_IS_BETTER = ("psnr", "ssim", "recall", "accuracy", "frames_per_s", "halflife")


def higher_is_better(key: str) -> bool:
    return any(fragment in key for fragment in HIGHER_IS_BETTER)


def best_of(key: str, a: float, b: float) -> float:
    """The better of two values of metric ``key``."""
    if key.endswith("_ratio"):
        return min(a, b, key=lambda v: abs(v - 1))
    return max(a, b) if higher_is_better(key) else min(a, b)
