"""Weight-free temporal quality metrics: quality vs horizon, flicker, flow warping error.

All metrics are torchmetrics ``Metric`` s whose states are float64 sums and counts reduced with
``dist_reduce_fx="sum"``, so the DDP-synchronised value equals the single-process one.
Videos are (B, T, C, H, W), float in [0, ``data_range``] or uint8 in [0, 255] (mapped to
[0, ``data_range``]); C is 1 or 3.

* :class:`HorizonQuality` - PSNR and SSIM of generated vs ground-truth frames as a function of
  the horizon (1 = first generated frame after the context), plus :func:`summarise` for
  horizon bins (``psnr_h1-16``, ``ssim_h17-64``, ...).
* :class:`TemporalFlicker` - mean |x_t - x_{t-1}| of generated videos relative to real ones.
* :class:`FlowWarpingError` - occlusion-masked warping error with classical (Farnebäck) optical
  flow, for generated and real videos (needs ``opencv-python-headless``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

__all__ = [
    "FlowWarpingError",
    "HorizonQuality",
    "TemporalFlicker",
    "default_horizon_bins",
    "frame_flicker",
    "summarise",
    "warping_error",
]


def _as_float(video: Tensor, data_range: float = 1.0) -> Tensor:
    """uint8 [0, 255] -> float32 [0, data_range]; floating point passes through unchanged."""
    if video.dtype == torch.uint8:
        return video.float() * (data_range / 255.0)
    if not video.is_floating_point():
        raise TypeError(f"expected uint8 or floating point videos; got {video.dtype}")
    return video


def _check_video(video: Tensor, name: str) -> None:
    if video.ndim != 5:
        raise ValueError(f"{name} must be (B, T, C, H, W); got shape {tuple(video.shape)}")


def _check_pair(pred: Tensor, target: Tensor) -> None:
    _check_video(pred, "pred")
    _check_video(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {tuple(pred.shape)} vs {tuple(target.shape)}")


# ------------------------------------------------------------------------------- quality vs horizon
class HorizonQuality(Metric):
    """Per-horizon PSNR and SSIM of generated vs ground-truth frames.

    ``update(pred, target, horizon_offset=0)``: ``pred``/``target`` are (B, T, C, H, W) frames
    *after* the context; frame ``i`` (0-based) is horizon ``horizon_offset + i + 1``, so a long
    rollout can be fed in chunks. ``horizon_offset + T`` must not exceed ``max_horizon``.

    Per (video, frame) PSNR and SSIM come from torchmetrics functional (``reduction="none"``,
    ``data_range=(0, data_range)``, i.e. both inputs are first clamped to the valid range, as
    when frames are written out as images; SSIM: 11x11 Gaussian window, sigma 1.5, so frames
    must be larger than 5 pixels per side). They are averaged over videos per horizon.

    ``compute()`` returns a dict of length-``max_horizon`` float64 tensors:

    * ``psnr``, ``ssim``: mean over videos at each horizon (NaN where no frame was seen);
    * ``count``: number of frames seen per horizon;
    * ``n_identical``: frames with zero error per horizon.

    Identical frames have PSNR = +inf. This is kept, not clipped: a horizon at which any
    frame is reproduced exactly has mean PSNR +inf (and so has any bin containing it in
    :func:`summarise`); ``n_identical`` says how many such frames there were.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, max_horizon: int, data_range: float = 1.0, chunk_size: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if max_horizon < 1:
            raise ValueError(f"max_horizon must be >= 1; got {max_horizon}")
        self.max_horizon = int(max_horizon)
        self.data_range = float(data_range)
        self.chunk_size = int(chunk_size)
        for name in ("psnr_sum", "ssim_sum", "count", "n_identical"):
            self.add_state(name, torch.zeros(self.max_horizon, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, horizon_offset: int = 0) -> None:  # noqa: D102
        _check_pair(pred, target)
        b, t = pred.shape[:2]
        if horizon_offset < 0 or horizon_offset + t > self.max_horizon:
            raise ValueError(
                f"frames cover horizons {horizon_offset + 1}..{horizon_offset + t}, outside 1..{self.max_horizon} "
                "(raise max_horizon or pass fewer frames)"
            )
        pred = _as_float(pred, self.data_range)
        target = _as_float(target, self.data_range).to(pred.dtype)
        flat_p = pred.reshape(b * t, *pred.shape[2:])
        flat_t = target.reshape(b * t, *target.shape[2:])
        rng = (0.0, self.data_range)
        psnr, ssim, ident = [], [], []
        for start in range(0, b * t, self.chunk_size):
            p, g = flat_p[start : start + self.chunk_size], flat_t[start : start + self.chunk_size]
            psnr.append(peak_signal_noise_ratio(p, g, data_range=rng, reduction="none", dim=(1, 2, 3)))
            ssim.append(structural_similarity_index_measure(p, g, data_range=rng, reduction="none"))
            ident.append(torch.isposinf(psnr[-1]))
        psnr_bt = torch.cat(psnr).double().reshape(b, t)
        ssim_bt = torch.cat(ssim).double().reshape(b, t)
        ident_bt = torch.cat(ident).double().reshape(b, t)
        sl = slice(horizon_offset, horizon_offset + t)
        self.psnr_sum[sl] += psnr_bt.sum(0).to(self.psnr_sum.device)
        self.ssim_sum[sl] += ssim_bt.sum(0).to(self.ssim_sum.device)
        self.n_identical[sl] += ident_bt.sum(0).to(self.n_identical.device)
        self.count[sl] += b

    def compute(self) -> dict[str, Tensor]:  # noqa: D102
        seen = self.count > 0
        nan = torch.full_like(self.count, float("nan"))
        return {
            "psnr": torch.where(seen, self.psnr_sum / self.count.clamp_min(1), nan),
            "ssim": torch.where(seen, self.ssim_sum / self.count.clamp_min(1), nan),
            "count": self.count.clone(),
            "n_identical": self.n_identical.clone(),
        }

    def summary(self, bins: Sequence[tuple[int, int]] | None = None) -> dict[str, float]:
        """``{"psnr_h1-16": ..., "ssim_h1-16": ..., ...}`` over ``bins`` (default: :func:`default_horizon_bins`)."""
        curves = self.compute()
        bins = default_horizon_bins(self.max_horizon) if bins is None else bins
        return {**summarise(curves["psnr"], bins, "psnr"), **summarise(curves["ssim"], bins, "ssim")}


class PooledPSNR(MeanMetric):
    """PSNR of the weighted mean of per-batch MSEs (data range 1): the same for any batching or process count."""

    def compute(self) -> Tensor:
        return -10 * torch.log10(super().compute().clamp_min(1e-10))


def default_horizon_bins(max_horizon: int) -> list[tuple[int, int]]:
    """[(1, 16), (17, 64), (65, 256), (257, 1024), ...] (x4 per bin) up to ``max_horizon``."""
    bins, lo, hi = [], 1, 16
    while lo <= max_horizon:
        bins.append((lo, hi))
        lo, hi = hi + 1, hi * 4
    return bins


def summarise(curve: Tensor, bins: Iterable[tuple[int, int]], name: str = "psnr") -> dict[str, float]:
    """Mean of a per-horizon ``curve`` (index 0 = horizon 1) over inclusive 1-based horizon ``bins``.

    Horizons with NaN (never seen) are ignored. A bin is clipped to the horizons that were
    seen and its key names the clipped range, so ``psnr_h65-256`` always means all of 65..256
    (a rollout reaching only horizon 100 gives ``psnr_h65-100``); a bin with nothing seen is
    left out. +inf values (identical frames) make the bin mean +inf.
    """
    values = curve.detach().double().cpu()
    out: dict[str, float] = {}
    for lo, hi in bins:
        if lo < 1 or hi < lo:
            raise ValueError(f"invalid horizon bin ({lo}, {hi}); bins are inclusive and 1-based")
        chunk = values[lo - 1 : hi]
        seen = torch.nonzero(~torch.isnan(chunk)).flatten()
        if seen.numel() == 0:
            continue
        first, last = lo + int(seen[0]), lo + int(seen[-1])
        mean = float(chunk[~torch.isnan(chunk)].mean())
        key = f"{name}_h{lo}-{hi}" if (first, last) == (lo, hi) else f"{name}_h{first}-{last}"
        out[key] = mean
    return out


# ------------------------------------------------------------------------------------------ flicker
def frame_flicker(video: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-video mean |x_t - x_{t-1}| over all consecutive pairs and pixels: (B,) float64."""
    _check_video(video, "video")
    if video.shape[1] < 2:
        raise ValueError("flicker needs at least 2 frames")
    v = _as_float(video, data_range).double()
    return (v[:, 1:] - v[:, :-1]).abs().flatten(1).mean(1)


class TemporalFlicker(Metric):
    """Temporal flicker: mean |x_t - x_{t-1}| of generated frames relative to that of real frames.

    ``compute()`` returns ``flicker_gen``, ``flicker_real`` (mean absolute consecutive-frame
    difference, in units of ``data_range``) and ``flicker_ratio = gen / real`` (1.0 = as much
    frame-to-frame change as the real videos; < 1 too static, > 1 flickery). When the real
    videos are static (``flicker_real == 0``) the ratio is 1.0 if the generated ones are too,
    else +inf.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, data_range: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_range = float(data_range)
        for name in ("gen_sum", "real_sum", "gen_n", "real_n"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:  # noqa: D102
        _check_video(pred, "pred")
        _check_video(target, "target")
        for video, kind in ((pred, "gen"), (target, "real")):
            if video.shape[1] < 2:
                raise ValueError("flicker needs at least 2 frames")
            v = _as_float(video, self.data_range).double()
            diff = (v[:, 1:] - v[:, :-1]).abs()
            setattr(self, f"{kind}_sum", getattr(self, f"{kind}_sum") + diff.sum().to(self.gen_sum.device))
            setattr(self, f"{kind}_n", getattr(self, f"{kind}_n") + diff.numel())

    def compute(self) -> dict[str, Tensor]:  # noqa: D102
        if self.gen_n == 0 or self.real_n == 0:
            raise ValueError("TemporalFlicker.compute() called before update()")
        gen, real = self.gen_sum / self.gen_n, self.real_sum / self.real_n
        if real > 0:
            ratio = gen / real
        else:
            ratio = torch.tensor(1.0 if gen == 0 else math.inf, dtype=torch.float64, device=gen.device)
        return {"flicker_gen": gen, "flicker_real": real, "flicker_ratio": ratio}


# ------------------------------------------------------------------------------ flow warping error
def _require_cv2() -> Any:
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The flow warping error needs OpenCV (classical Farneback optical flow). "
            "Install it with `pip install opencv-python-headless`."
        ) from err
    return cv2


_FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _to_numpy_frames(video: Tensor, data_range: float) -> np.ndarray:
    """(T, C, H, W) -> (T, H, W, C) float32 in [0, 1] (clamped)."""
    v = _as_float(video, data_range).detach().float().cpu() / data_range
    return v.clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous().numpy()


def _gray_u8(frame: np.ndarray) -> np.ndarray:
    if frame.shape[-1] == 3:
        gray = frame @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    else:
        gray = frame[..., 0]
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


def _pair_flow_and_mask(cv2: Any, prev_gray: np.ndarray, cur_gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward flow cur -> prev (cur(p) ~ prev(p + f(p))) and its validity mask (H, W) bool.

    A pixel is valid when its flow target lies inside the frame and the forward-backward
    check passes: |f_b + f_f(p + f_b)|^2 < 0.01 (|f_b|^2 + |f_f(p + f_b)|^2) + 0.5
    (Sundaram et al. 2010, as used by Ruder et al. 2016 / Lai et al. 2018).
    """
    h, w = cur_gray.shape
    flow_b = cv2.calcOpticalFlowFarneback(cur_gray, prev_gray, None, **_FARNEBACK)
    flow_f = cv2.calcOpticalFlowFarneback(prev_gray, cur_gray, None, **_FARNEBACK)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = gx + flow_b[..., 0], gy + flow_b[..., 1]
    flow_f_w = cv2.remap(flow_f, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    fb = flow_b + flow_f_w
    consistent = (fb**2).sum(-1) < 0.01 * ((flow_b**2).sum(-1) + (flow_f_w**2).sum(-1)) + 0.5
    return flow_b, inside & consistent


def _video_warp_errors(cv2: Any, frames: np.ndarray, flow_frames: np.ndarray) -> list[float]:
    """Masked MSE of warped frame t-1 vs frame t for t = 1..T-1 (pairs with an empty mask skipped)."""
    h, w = frames.shape[1:3]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    grays = [_gray_u8(f) for f in flow_frames]
    errors = []
    for t in range(1, frames.shape[0]):
        flow_b, mask = _pair_flow_and_mask(cv2, grays[t - 1], grays[t])
        prev = np.ascontiguousarray(frames[t - 1])
        warped = cv2.remap(prev, gx + flow_b[..., 0], gy + flow_b[..., 1], interpolation=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        if warped.ndim == 2:
            warped = warped[..., None]
        n_valid = int(mask.sum())
        if n_valid == 0:
            continue
        sq = ((warped.astype(np.float64) - frames[t].astype(np.float64)) ** 2).mean(-1)
        errors.append(float(sq[mask].sum() / n_valid))
    return errors


def warping_error(video: Tensor, flow_video: Tensor | None = None, data_range: float = 1.0) -> Tensor:
    """Per-video flow warping error (B,) float64.

    For each consecutive pair, frame t-1 is warped to frame t with the backward Farnebäck
    flow (OpenCV ``calcOpticalFlowFarneback`` on 8-bit luma, default tutorial parameters);
    the error is the mean squared difference per element (averaged over channels, values in
    [0, 1]) over non-occluded pixels (forward-backward consistency and in-frame mask), then
    averaged over pairs. Note: Lai et al.'s reference code sums over the 3 channels instead
    of averaging (a factor 3) and uses FlowNet2 flow; numbers are comparable only within
    this implementation.

    A static video scores ~0 (about 1e-6, not exactly 0: Farnebäck returns small sub-pixel
    flow near the borders even for identical frames).

    By default the flow is computed on ``video`` itself (how consistent the video is with its
    own motion; no aligned reference needed). ``flow_video`` (same shape) computes the flow on
    another video, e.g. the real one, and warps ``video`` with it.
    """
    cv2 = _require_cv2()
    _check_video(video, "video")
    if video.shape[1] < 2:
        raise ValueError("warping error needs at least 2 frames")
    if flow_video is not None and flow_video.shape != video.shape:
        raise ValueError(f"flow_video must have the shape of video; got {tuple(flow_video.shape)} "
                         f"vs {tuple(video.shape)}")
    out = []
    for i in range(video.shape[0]):
        frames = _to_numpy_frames(video[i], data_range)
        flow_frames = frames if flow_video is None else _to_numpy_frames(flow_video[i], data_range)
        errs = _video_warp_errors(cv2, frames, flow_frames)
        out.append(float(np.mean(errs)) if errs else float("nan"))
    return torch.tensor(out, dtype=torch.float64)


class FlowWarpingError(Metric):
    """Flow warping error (see :func:`warping_error`) of generated and of real videos.

    ``flow_source="self"`` (default, the standard video-consistency protocol): each video is
    warped with optical flow computed on itself, so generated and real videos are scored the
    same way and need not be aligned. ``flow_source="target"``: both are warped with the flow
    of the real video (meaningful only when generated frames are aligned with the real ones).

    States: sums over (video, frame pair) of the per-pair masked MSE and pair counts, so the
    result is the mean over all pairs. ``compute()`` returns ``warp_error_gen``,
    ``warp_error_real`` and ``warp_error_ratio`` (gen / real; 1.0 if both are 0).
    Requires ``opencv-python-headless`` (clear ``ImportError`` at construction otherwise).
    Runs on CPU (OpenCV); inputs are moved to host memory per video.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, flow_source: Literal["self", "target"] = "self", data_range: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _require_cv2()
        if flow_source not in ("self", "target"):
            raise ValueError(f"flow_source must be 'self' or 'target'; got {flow_source!r}")
        self.flow_source = flow_source
        self.data_range = float(data_range)
        for name in ("gen_sum", "real_sum", "gen_pairs", "real_pairs"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:  # noqa: D102
        if self.flow_source == "target":
            _check_pair(pred, target)
        else:  # each video is scored on its own; batch sizes / lengths may differ
            _check_video(pred, "pred")
            _check_video(target, "target")
        if pred.shape[1] < 2 or target.shape[1] < 2:
            raise ValueError("warping error needs at least 2 frames")
        cv2 = _require_cv2()
        for kind, video in (("gen", pred), ("real", target)):
            for i in range(video.shape[0]):
                frames = _to_numpy_frames(video[i], self.data_range)
                flow_frames = frames if self.flow_source == "self" else _to_numpy_frames(target[i], self.data_range)
                errs = _video_warp_errors(cv2, frames, flow_frames)
                setattr(self, f"{kind}_sum", getattr(self, f"{kind}_sum") + float(np.sum(errs, dtype=np.float64)))
                setattr(self, f"{kind}_pairs", getattr(self, f"{kind}_pairs") + len(errs))

    def compute(self) -> dict[str, Tensor]:  # noqa: D102
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.gen_sum.device)
        gen = self.gen_sum / self.gen_pairs if self.gen_pairs > 0 else nan
        real = self.real_sum / self.real_pairs if self.real_pairs > 0 else nan
        if real > 0:
            ratio = gen / real
        elif real == 0:
            ratio = torch.tensor(1.0 if gen == 0 else math.inf, dtype=torch.float64, device=gen.device)
        else:
            ratio = nan
        return {"warp_error_gen": gen, "warp_error_real": real, "warp_error_ratio": ratio}
