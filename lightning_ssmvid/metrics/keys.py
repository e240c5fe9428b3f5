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
TRAIN_FLOW_MSE = "train/flow_mse"  # head=flow: the velocity regression loss (in place of latent_mse)
TRAIN_RESIDUAL_LOSS = "train/residual_loss"  # head=residual: the mean's mse + the residual flow's loss
TRAIN_CODE_CE = "train/code_ce"  # head=categorical: cross-entropy of the next latent's codes
TRAIN_ROLLOUT_PIXEL_MSE = "train/rollout_pixel_mse"  # model.rollout_loss_steps > 0 (and train/rollout_<head loss>)
TRAIN_CUE_CE = "train/cue_ce"  # the cue arm's cross-entropy of the cue colour (conf/arm/cue.yaml)
TRAIN_FRAMES_PER_S = "train/frames_per_s"
TRAIN_SKIPPED_NONFINITE = "train/skipped_nonfinite"
VAL_LOSS = "val/loss"
VAL_PIXEL_MSE = "val/pixel_mse"
VAL_RECON_MSE = "val/recon_mse"
VAL_LATENT_MSE = "val/latent_mse"
VAL_FLOW_MSE = "val/flow_mse"
VAL_RESIDUAL_LOSS = "val/residual_loss"
VAL_CODE_CE = "val/code_ce"
VAL_CUE_CE = "val/cue_ce"
VAL_PSNR_NEXT = "val/psnr_next"

# Rollout evaluation (lightning_ssmvid.rollouts), logged under val/ (or test/): PSNR/SSIM per horizon bin
# ("psnr_h1-16", ...), flicker and warping error of generated vs real, cue recall per gap bin, FVD.
PSNR_BIN = "psnr_h{lo}-{hi}"
SSIM_BIN = "ssim_h{lo}-{hi}"
FOREGROUND_RATIO_BIN = "foreground_ratio_h{lo}-{hi}"  # generated / real share of foreground pixels (persistence)
MOTION_RATIO_BIN = "motion_ratio_h{lo}-{hi}"  # generated / real mean absolute frame difference
DIVERSITY_BIN = "diversity_h{lo}-{hi}"  # stochastic heads: mean |difference| of two draws from one context
COPY_LAST = "copy_last"  # prefix of the copy-last-frame baseline's PSNR/SSIM bins, beside every quality figure
FLICKER = ("flicker_gen", "flicker_real", "flicker_ratio")
WARP_ERROR = ("warp_error_gen", "warp_error_real", "warp_error_ratio")
# Memory (lightning_ssmvid.memory_probes), every event of the validation clips. The pixel probe scores the
# one-step prediction of the first reveal frame given the real frames up to the announcement; "_lo"/"_hi" bound its
# 95% bootstrap CI over clips; "absent" is the share of events where the object was not drawn at all (counted wrong).
RECALL_GAP = "recall_gap{gap}"
RECALL_GAP_CI = ("recall_gap{gap}_lo", "recall_gap{gap}_hi")
RECALL_ABSENT_GAP = "recall_absent_gap{gap}"
RECALL_EVENTS_GAP = "recall_events_gap{gap}"
RECALL = "recall"
RECALL_ABSENT = "recall_absent"
RECALL_CHANCE = "recall_chance"
RECALL_CODEC = "recall_codec_ceiling"  # the probe on codec reconstructions of the real frames: the best a core can do
RECALL_CODEC_WORST = "recall_codec_worst_colour"  # the same ceiling for the worst colour (all: curves.json)
RECALL_ORACLE = "recall_oracle"  # the real reveal frame: 1.0 by construction (a check of the probe)
RECALL_COPY_LAST = "recall_copy_last"  # the announcement frame repeated: the cue is hidden there, so ~0 (absent)
# the free rollout through the whole gap (on the rollout clips): memory plus a rollout that stays coherent
RECALL_ROLLOUT = "recall_rollout"
RECALL_ROLLOUT_GAP = "recall_rollout_gap{gap}"
# the state read-out: a linear probe on the frozen core output at the last hidden frame, fitted on training clips
PROBE_RECALL_GAP = "probe_recall_gap{gap}"
PROBE_RECALL_GAP_CI = ("probe_recall_gap{gap}_lo", "probe_recall_gap{gap}_hi")
PROBE_RECALL = "probe_recall"
PROBE_CHANCE = "probe_chance"  # the rate of the most common training colour among the scored events
PROBE_SHUFFLED = "probe_shuffled"  # the probe fitted on shuffled labels: chance unless the read-out leaks
PROBE_TRAIN = "probe_train"  # the probe's accuracy on its own training events
FVD = "fvd_{n}x{t}"
MEMORY_HALFLIFE = "memory_halflife"  # quantiles of SSM decay half-lives in frames (metrics/half_life.py)
MEMORY_HALFLIFE_QUANTILES = (50, 90, 99)
PEAK_RSS_MB = "peak_rss_mb"  # peak resident memory of the training process (callbacks/summary.py)

# W&B-only media (callbacks/media.log_to_wandb). A wandb.plot chart is stored by W&B as the table "<key>_table" with the
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
LOWER_IS_BETTER = ("absent",)  # checked first: "recall_absent" is better when lower


def higher_is_better(key: str) -> bool:
    if any(fragment in key for fragment in LOWER_IS_BETTER):
        return False
    return any(fragment in key for fragment in HIGHER_IS_BETTER)


def best_of(key: str, a: float, b: float) -> float:
    """The better of two values of metric ``key``."""
    if key.endswith("_ratio"):
        return min(a, b, key=lambda v: abs(v - 1))
    return max(a, b) if higher_is_better(key) else min(a, b)


def chart_table(key: str) -> str:
    """Where W&B keeps the data of the chart logged as ``key`` (what a dashboard panel must query)."""
    return f"{key}_table"


def loss_keys(pixels: bool = True, recon: bool = True, cue: bool = True, head_losses: Sequence[str] = ("latent_mse",),
              rollout: bool = False) -> list[str]:
    """train/ and val/ losses of ``VideoModel.losses``: latent-cache (two-stage) batches have no pixels to score;
    ``cue``: the memory arm's cue cross-entropy; ``head_losses``: each head's loss name (``latent_mse``,
    ``flow_mse``); ``rollout``: the self-rollout loss (``model.rollout_loss_steps > 0``, training only)."""
    out = [TRAIN_LOSS, *(f"train/{h}" for h in head_losses), VAL_LOSS, *(f"val/{h}" for h in head_losses)]
    if rollout:
        out += [f"train/rollout_{h}" for h in head_losses] + ([TRAIN_ROLLOUT_PIXEL_MSE] if pixels else [])
    if cue:
        out += [TRAIN_CUE_CE, VAL_CUE_CE]
    if pixels:
        out += [TRAIN_PIXEL_MSE, VAL_PIXEL_MSE]
    if pixels and recon:
        out += [TRAIN_RECON_MSE, VAL_RECON_MSE]
    return out


def memory_keys(gap_bins: Sequence[int], palette_size: int = 8) -> list[str]:
    """The memory probes' scalars (without prefix) for long-memory data with these gap bins."""
    out = []
    for g in gap_bins:
        out += [RECALL_GAP.format(gap=g), *(t.format(gap=g) for t in RECALL_GAP_CI), RECALL_ABSENT_GAP.format(gap=g),
                RECALL_EVENTS_GAP.format(gap=g), PROBE_RECALL_GAP.format(gap=g),
                *(t.format(gap=g) for t in PROBE_RECALL_GAP_CI)]
    out += [RECALL, RECALL_ABSENT, RECALL_CHANCE, RECALL_CODEC, RECALL_ORACLE, RECALL_COPY_LAST]
    out += [RECALL_CODEC_WORST]
    return out + [PROBE_RECALL, PROBE_CHANCE, PROBE_SHUFFLED, PROBE_TRAIN]


def rollout_keys(horizon_bins: Sequence[tuple[int, int]], gap_bins: Sequence[int] = (),
                 fvd: Sequence[tuple[int, int]] = (), half_lives: bool = True, prefix: str = "val",
                 palette_size: int = 8) -> list[str]:
    """Scalars of a rollout evaluation: ``horizon_bins`` as named (clipped to the horizon), ``fvd`` as (clips,
    frames); ``half_lives`` for cores with SSM decays."""
    templates = (PSNR_BIN, SSIM_BIN, f"{COPY_LAST}_{PSNR_BIN}", f"{COPY_LAST}_{SSIM_BIN}", FOREGROUND_RATIO_BIN,
                 MOTION_RATIO_BIN)
    out = [template.format(lo=lo, hi=hi) for template in templates for lo, hi in horizon_bins]
    out += [*FLICKER, *WARP_ERROR]
    if gap_bins:
        out += [RECALL_ROLLOUT_GAP.format(gap=g) + suffix for g in gap_bins for suffix in ("", "_lo", "_hi")]
        out += [f"{RECALL_ROLLOUT}_absent_gap{g}" for g in gap_bins] + [RECALL_ROLLOUT, f"{RECALL_ROLLOUT}_absent"]
        out += memory_keys(gap_bins, palette_size)
    out += [FVD.format(n=n, t=t) for n, t in fvd]
    if half_lives:
        out += [f"{MEMORY_HALFLIFE}_p{q}" for q in MEMORY_HALFLIFE_QUANTILES]
    return [f"{prefix}/{key}" for key in out]


def scalar_keys(pixels: bool, recon: bool, horizon_bins: Sequence[tuple[int, int]], gap_bins: Sequence[int] = (),
                fvd: Sequence[tuple[int, int]] = (), half_lives: bool = True, cue: bool = False,
                head_losses: Sequence[str] = ("latent_mse",), rollout: bool = False) -> list[str]:
    """Every scalar a training run records: losses, non-finite skips, throughput and memory (``RunSummary``), rollout
    metrics (none without ``horizon_bins``: no rollout evaluation)."""
    rollout_figures = rollout_keys(horizon_bins, gap_bins, fvd, half_lives) if horizon_bins else []
    psnr_next = [VAL_PSNR_NEXT] if pixels else []
    return [*loss_keys(pixels, recon, cue, head_losses, rollout), *psnr_next, TRAIN_SKIPPED_NONFINITE,
            TRAIN_FRAMES_PER_S, PEAK_RSS_MB, *rollout_figures]


def media_keys(n_samples: int, recall: bool, half_lives: bool = True) -> list[str]:
    """The W&B-only keys of a rollout evaluation (charts, histogram, sample videos)."""
    out = [PSNR_CURVE, SSIM_CURVE] + ([RECALL_CURVE] if recall else [])
    out += [MEMORY_HALFLIFE_HISTOGRAM] if half_lives else []
    return out + [SAMPLE.format(i=i) for i in range(n_samples)]
