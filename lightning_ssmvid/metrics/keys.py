"""The one registry of logged metric names and which direction is better (used by summaries, tables, dashboards).

``scalar_keys`` and ``media_keys`` list every key a run logs for its settings: the W&B dashboards
(``lightning_ssmvid.dashboard``) build their panels from them, and tests/test_dashboard.py checks them against what a
real run logs.
"""

from __future__ import annotations

from collections.abc import Sequence

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
# the probe with real frames through the hidden gap (they show no cue), generating only the reveal: memory alone,
# without the long rollout through the gap that the plain recall also needs
RECALL_TF = "recall_tf"
RECALL_TF_GAP = "recall_tf_gap{gap}"
FVD = "fvd_{n}x{t}"
MEMORY_HALFLIFE = "memory_halflife"  # quantiles of SSM decay half-lives in frames (metrics/horizon.py)
MEMORY_HALFLIFE_QUANTILES = (50, 90, 99)
PEAK_RSS_MB = "peak_rss_mb"  # peak resident memory of the training process (utils/summary.py)

# W&B-only media (evaluation.log_to_wandb). A wandb.plot chart is stored by W&B as the table "<key>_table" with the
# columns below; the memory-horizon histogram is log10 of the half-lives; samples are real | generated videos.
CURVES = "curves"
SAMPLES = "samples"
PSNR_CURVE = f"{CURVES}/psnr_vs_horizon"
SSIM_CURVE = f"{CURVES}/ssim_vs_horizon"
RECALL_CURVE = f"{CURVES}/recall_vs_gap"
MEMORY_HALFLIFE_HISTOGRAM = f"{CURVES}/memory_halflife_log10_frames"
SAMPLE = SAMPLES + "/{i}"
CHART_COLUMNS = {PSNR_CURVE: ("horizon", "psnr"), SSIM_CURVE: ("horizon", "ssim"), RECALL_CURVE: ("gap", "recall")}

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


def chart_table(key: str) -> str:
    """Where W&B keeps the data of the chart logged as ``key`` (what a dashboard panel must query)."""
    return f"{key}_table"


def loss_keys(pixels: bool = True, recon: bool = True) -> list[str]:
    """train/ and val/ losses of ``VideoModel.losses``: latent-cache (two-stage) batches have no pixels to score."""
    out = [TRAIN_LOSS, TRAIN_LATENT_MSE, VAL_LOSS, VAL_LATENT_MSE]
    if pixels:
        out += [TRAIN_PIXEL_MSE, VAL_PIXEL_MSE]
    if pixels and recon:
        out += [TRAIN_RECON_MSE, VAL_RECON_MSE]
    return out


def rollout_keys(horizon_bins: Sequence[tuple[int, int]], gap_bins: Sequence[int] = (),
                 fvd: Sequence[tuple[int, int]] = (), half_lives: bool = True, prefix: str = "val") -> list[str]:
    """Scalars of a rollout evaluation: ``horizon_bins`` as named (clipped to the horizon), ``fvd`` as (clips,
    frames); ``half_lives`` for cores with SSM decays."""
    out = [template.format(lo=lo, hi=hi) for template in (PSNR_BIN, SSIM_BIN) for lo, hi in horizon_bins]
    out += [*FLICKER, *WARP_ERROR]
    if gap_bins:
        out += [RECALL_GAP.format(gap=g) for g in gap_bins] + [RECALL_EVENTS_GAP.format(gap=g) for g in gap_bins]
        out += [RECALL, RECALL_CHANCE, RECALL_CODEC]
        out += [RECALL_TF_GAP.format(gap=g) for g in gap_bins] + [RECALL_TF]
    out += [FVD.format(n=n, t=t) for n, t in fvd]
    if half_lives:
        out += [f"{MEMORY_HALFLIFE}_p{q}" for q in MEMORY_HALFLIFE_QUANTILES]
    return [f"{prefix}/{key}" for key in out]


def scalar_keys(pixels: bool, recon: bool, horizon_bins: Sequence[tuple[int, int]], gap_bins: Sequence[int] = (),
                fvd: Sequence[tuple[int, int]] = (), half_lives: bool = True) -> list[str]:
    """Every scalar a training run records: losses, non-finite skips, throughput and memory (``RunSummary``), rollout
    metrics (none without ``horizon_bins``: no rollout evaluation)."""
    rollout = rollout_keys(horizon_bins, gap_bins, fvd, half_lives) if horizon_bins else []
    psnr_next = [VAL_PSNR_NEXT] if pixels else []
    return [*loss_keys(pixels, recon), *psnr_next, TRAIN_SKIPPED_NONFINITE, TRAIN_FRAMES_PER_S, PEAK_RSS_MB, *rollout]


def media_keys(n_samples: int, recall: bool, half_lives: bool = True) -> list[str]:
    """The W&B-only keys of a rollout evaluation (charts, histogram, sample videos)."""
    out = [PSNR_CURVE, SSIM_CURVE] + ([RECALL_CURVE] if recall else [])
    out += [MEMORY_HALFLIFE_HISTOGRAM] if half_lives else []
    return out + [SAMPLE.format(i=i) for i in range(n_samples)]
