"""Fréchet Video Distance (Unterthiner et al., 2018) as a DDP-exact torchmetrics ``Metric``.

What is accumulated
    For real and for generated videos separately: the feature sum (F,), the sum of feature
    outer products (F, F) and the count, all float64 with ``dist_reduce_fx="sum"``. Sums are
    associative, so the DDP-synchronised result equals the single-process one (up to float64
    summation order) and there is no per-sample feature list to gather.

What is computed
    ``||mu_r - mu_g||^2 + tr(S_r) + tr(S_g) - 2 tr(sqrtm(S_g S_r))`` with the unbiased (N - 1)
    covariances, ``scipy.linalg.sqrtm`` of the product and the real part taken, exactly as
    the canonical implementations (google-research ``frechet_video_distance``, StyleGAN-V
    ``compute_fvd``) do. The number of real and generated videos must be equal.

Feature network
    The Kinetics-400 I3D of the canonical FVD, loaded from ``metrics.fvd.detector_path``: see
    :mod:`lightning_ssmvid.metrics.fvd_detector` (formats, sha256 check, call convention).

Preprocessing (per the reference implementation)
    (B, T, C, H, W) uint8 in [0, 255] or float in [0, 1] -> frames ``0, s, 2s, ...`` (``num_frames``
    of them, stride ``s = frame_stride``) -> grayscale repeated to 3 channels -> bilinear resize
    to ``resolution`` x ``resolution`` (224; ``align_corners=False``, no antialias: this is
    PyTorch's bilinear, not bit-identical to TF1 ``resize_bilinear``) -> ``2 x - 1`` -> (B, 3, T, R, R).

Missing weights
    Use :func:`load_fvd_metric`: when the file is absent it logs one warning per process that
    says how to provide the weights and returns ``None``. FVD is then simply not reported -
    never zero and never a made-up number.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_ssmvid.metrics.fvd_detector import (
    DETECTOR_KWARGS,
    HOW_TO_PROVIDE,
    MIN_FRAMES,
    detector_call_mode,
    load_detector,
)
from lightning_ssmvid.utils.integrity import sha256 as file_sha256

__all__ = [
    "FrechetVideoDistance",
    "MIN_FRAMES",
    "detector_call_mode",
    "file_sha256",
    "frechet_distance",
    "fvd_key",
    "load_detector",
    "load_fvd_metric",
    "preprocess_videos",
]

log = logging.getLogger(__name__)

_warned_missing = False  # the "weights absent" warning is logged once per process


# ----------------------------------------------------------------------------------------- helpers
def fvd_key(prefix: str, n_videos: int, n_frames: int) -> str:
    """Logging key of an FVD computed on ``n_videos`` real and generated clips of ``n_frames`` frames."""
    return f"{prefix}/fvd_{int(n_videos)}x{int(n_frames)}"


def preprocess_videos(
    videos: Tensor, num_frames: int, frame_stride: int = 1, resolution: int = 224
) -> Tensor:
    """(B, T, C, H, W) uint8 / float in [0, 1] -> (B, 3, num_frames, R, R) float32 in [-1, 1].

    Takes frames ``0, s, ..., (num_frames - 1) s`` (``s = frame_stride``); grayscale (C = 1)
    is repeated to 3 channels; bilinear resize (``align_corners=False``, no antialias).
    """
    if videos.ndim != 5:
        raise ValueError(f"FVD expects videos of shape (B, T, C, H, W); got {tuple(videos.shape)}")
    b, t, c, h, w = videos.shape
    needed = (num_frames - 1) * frame_stride + 1
    if t < needed:
        raise ValueError(
            f"FVD clips need {num_frames} frames at stride {frame_stride} (= {needed} input frames); "
            f"got videos with T={t}. Use longer clips or set num_frames (>= {MIN_FRAMES}) / frame_stride."
        )
    if c not in (1, 3):
        raise ValueError(f"FVD expects 1 (grayscale) or 3 (RGB) channels; got C={c}")
    x = videos[:, : needed : frame_stride]
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
    else:
        raise TypeError(f"FVD expects uint8 or floating point videos; got {videos.dtype}")
    if c == 1:
        x = x.expand(-1, -1, 3, -1, -1)
    x = x.reshape(b * num_frames, 3, h, w)
    if (h, w) != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = x.reshape(b, num_frames, 3, resolution, resolution).permute(0, 2, 1, 3, 4)
    return (2.0 * x - 1.0).contiguous()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians, canonical FVD formulation.

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2))`` with
    ``scipy.linalg.sqrtm`` of the (non-symmetric) product; the real part is taken (tiny
    imaginary parts come from round-off). If the square root is not finite (singular
    product) ``1e-6 I`` is added to both covariances, as pytorch-fid does, with a warning.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if isinstance(covmean, tuple):  # scipy < 1.16 with disp=False
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        warnings.warn("FVD: sqrtm of the covariance product is not finite; adding 1e-6 to the diagonals", stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if isinstance(covmean, tuple):
            covmean = covmean[0]
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


# ------------------------------------------------------------------------------------------ metric
class FrechetVideoDistance(Metric):
    """Fréchet Video Distance; ``update(videos, real)`` then ``compute()`` (see module docstring).

    Args:
        feature_extractor: any ``nn.Module`` mapping preprocessed (B, 3, T, R, R) videos in
            [-1, 1] to (B, num_features) features; if ``None`` the I3D is loaded from
            ``detector_path``.
        detector_path: local TorchScript / state-dict file of the I3D (config key
            ``metrics.fvd.detector_path``). Missing file: ``FileNotFoundError`` (use
            :func:`load_fvd_metric` to get the warn-and-skip behaviour instead).
        detector_sha256: expected sha256 of that file (mismatch: ``ValueError``).
        num_frames: clip length T fed to the network (>= 9; 16 is the canonical FVD).
        frame_stride: temporal subsampling of the input videos.
        resolution: spatial size R the frames are resized to (224 for I3D).
        num_features: feature dimension F (400 for the I3D logits).

    The feature extractor is kept in eval mode, run under ``no_grad`` in float32, and is
    excluded from the metric's ``state_dict`` (checkpoints stay small and load without it).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        detector_path: str | os.PathLike | None = None,
        detector_sha256: str | None = None,
        num_frames: int = 16,
        frame_stride: int = 1,
        resolution: int = 224,
        num_features: int = 400,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_frames < MIN_FRAMES:
            raise ValueError(f"FVD needs clips of at least {MIN_FRAMES} frames (I3D temporal receptive field); "
                             f"got num_frames={num_frames}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1; got {frame_stride}")
        self.detector_path = None if detector_path is None else str(detector_path)
        self.detector_sha256: str | None = None
        if feature_extractor is None:
            if detector_path is None:
                raise ValueError("FrechetVideoDistance needs a feature_extractor or a detector_path. "
                                 f"{HOW_TO_PROVIDE}")
            feature_extractor, self.detector_sha256 = load_detector(detector_path, detector_sha256)
        elif detector_sha256 is not None:
            self.detector_sha256 = str(detector_sha256).lower()
        self.feature_extractor = feature_extractor
        self.feature_extractor.eval()
        self._call_mode = detector_call_mode(feature_extractor)
        self.num_frames = int(num_frames)
        self.frame_stride = int(frame_stride)
        self.resolution = int(resolution)
        self.num_features = int(num_features)

        f = self.num_features
        for kind in ("real", "fake"):
            self.add_state(f"{kind}_sum", torch.zeros(f, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_outer", torch.zeros(f, f, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{kind}_n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

        # Keep the (possibly 50 MB) network out of checkpoints and tolerate its absence on load.
        self.register_state_dict_post_hook(_drop_extractor_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_extractor_keys)

    # nn.Module.train(True) from a parent must not put the network's BatchNorm in train mode.
    def train(self, mode: bool = True) -> FrechetVideoDistance:  # noqa: D102
        super().train(mode)
        self.feature_extractor.eval()
        return self

    @torch.no_grad()
    def extract_features(self, videos: Tensor) -> Tensor:
        """Preprocess (B, T, C, H, W) videos and return (B, num_features) float64 features."""
        x = preprocess_videos(videos, self.num_frames, self.frame_stride, self.resolution)
        param = next(iter(self.feature_extractor.parameters()), None)
        if param is not None:
            x = x.to(device=param.device, dtype=param.dtype if param.is_floating_point() else x.dtype)
        else:
            x = x.to(videos.device)
        if self._call_mode == "kwargs":
            feats = self.feature_extractor(x, **DETECTOR_KWARGS)
        elif self._call_mode == "plain":
            feats = self.feature_extractor(x)
        else:  # unknown signature (e.g. a traced module): try the StyleGAN-V form once, then remember
            try:
                feats = self.feature_extractor(x, **DETECTOR_KWARGS)
                self._call_mode = "kwargs"
            except (TypeError, RuntimeError):
                feats = self.feature_extractor(x)
                self._call_mode = "plain"
        if feats.ndim != 2 or feats.shape != (videos.shape[0], self.num_features):
            raise ValueError(
                f"FVD feature extractor must return (B, {self.num_features}) features; got {tuple(feats.shape)} "
                "(set num_features to the extractor's feature size)"
            )
        return feats.to(dtype=torch.float64, device=self.real_sum.device)

    def update(self, videos: Tensor, real: bool) -> None:  # noqa: D102
        feats = self.extract_features(videos)
        kind = "real" if real else "fake"
        setattr(self, f"{kind}_sum", getattr(self, f"{kind}_sum") + feats.sum(0))
        setattr(self, f"{kind}_outer", getattr(self, f"{kind}_outer") + feats.T @ feats)
        setattr(self, f"{kind}_n", getattr(self, f"{kind}_n") + feats.shape[0])

    def _stats(self, kind: str) -> tuple[np.ndarray, np.ndarray, int]:
        n = int(round(float(getattr(self, f"{kind}_n"))))
        total = getattr(self, f"{kind}_sum").double().cpu().numpy()
        outer = getattr(self, f"{kind}_outer").double().cpu().numpy()
        mu = total / n
        sigma = (outer - n * np.outer(mu, mu)) / (n - 1)
        return mu, sigma, n

    def compute(self) -> Tensor:  # noqa: D102
        n_real, n_fake = int(round(float(self.real_n))), int(round(float(self.fake_n)))
        if n_real != n_fake:
            raise ValueError(
                f"FVD compares equal numbers of real and generated videos; got {n_real} real vs {n_fake} generated"
            )
        if n_real < 2:
            raise ValueError(f"FVD needs at least 2 real and 2 generated videos for a covariance; got {n_real}")
        mu_r, sigma_r, _ = self._stats("real")
        mu_g, sigma_g, _ = self._stats("fake")
        return torch.tensor(frechet_distance(mu_g, sigma_g, mu_r, sigma_r), dtype=torch.float64)

    @property
    def n_videos(self) -> int:
        """Number of generated videos accumulated so far (after sync: across ranks)."""
        return int(round(float(self.fake_n)))

    def key(self, prefix: str) -> str:
        """:func:`fvd_key` for the current number of videos and ``num_frames``."""
        return fvd_key(prefix, self.n_videos, self.num_frames)

    def describe(self) -> dict[str, Any]:
        """What a run should record next to the FVD value."""
        return {
            "n_real": int(round(float(self.real_n))),
            "n_generated": int(round(float(self.fake_n))),
            "n_frames": self.num_frames,
            "frame_stride": self.frame_stride,
            "resolution": self.resolution,
            "num_features": self.num_features,
            "detector_path": self.detector_path,
            "detector_sha256": self.detector_sha256,
        }


def _drop_extractor_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "feature_extractor.")]:
        del state_dict[key]


def _ignore_missing_extractor_keys(module: nn.Module, incompatible_keys: Any) -> None:
    missing = incompatible_keys.missing_keys
    for key in [k for k in missing if ".feature_extractor." in "." + k]:
        missing.remove(key)


# ------------------------------------------------------------------------------------------ loader
def load_fvd_metric(
    detector_path: str | os.PathLike | None, detector_sha256: str | None = None, **kwargs: Any
) -> FrechetVideoDistance | None:
    """Build the I3D FVD metric, or return ``None`` when the weights are absent.

    Absent weights (no path, or no file at the path) are logged once (by rank 0) as a
    ``logging`` warning on this module's logger that says how to provide them; callers then
    skip FVD (no value is logged for it).

    A present file with the wrong sha256 still raises ``ValueError``: a misconfigured detector
    is an error, not a reason to silently skip. ``kwargs`` go to :class:`FrechetVideoDistance`.
    """
    path = None if detector_path in (None, "") else Path(detector_path).expanduser()
    if path is None or not path.is_file():
        global _warned_missing
        if not _warned_missing and rank_zero_only.rank == 0:  # once per run, not once per DDP process
            _warned_missing = True
            where = "no path configured" if path is None else f"file not found: {path}"
            log.warning("FVD will NOT be computed (%s). %s", where, HOW_TO_PROVIDE)
        return None
    return FrechetVideoDistance(detector_path=path, detector_sha256=detector_sha256, **kwargs)
