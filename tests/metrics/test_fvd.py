"""FVD: Fréchet math, accumulation/DDP exactness, detector loading (TorchScript stand-ins, sha256), missing weights."""

import logging

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from lightning_ssmvid.metrics import fvd as fvd_mod
from lightning_ssmvid.metrics.fvd import (
    FrechetVideoDistance,
    file_sha256,
    frechet_distance,
    fvd_key,
    load_fvd_metric,
    preprocess_videos,
)

T, R, F = 9, 8, 6  # tiny clips: 9 frames (I3D minimum), 8x8 resolution, 6-d features


class Projection(nn.Module):
    """A tiny stand-in feature network: fixed random projection of the preprocessed clip, plain call."""

    def __init__(self, num_features=F, in_dim=3 * T * R * R):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(in_dim, num_features, generator=gen) / in_dim**0.5, requires_grad=False)

    def forward(self, x):
        # float64 so that features do not depend on the batch size through float32 BLAS rounding
        return x.flatten(1).double() @ self.weight.double()


def make_metric(**kwargs):
    return FrechetVideoDistance(feature_extractor=Projection(), num_frames=T, resolution=R, num_features=F, **kwargs)


def videos(n, seed, shift=0.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, T, 3, R, R, generator=gen) * 0.8 + shift).clamp(0, 1)


def reference_fvd(feats_real, feats_fake):
    """Canonical FVD from per-sample features: np.cov (N-1) + scipy sqrtm of the product."""
    mu_r, mu_g = feats_real.mean(0), feats_fake.mean(0)
    s_r, s_g = np.cov(feats_real, rowvar=False), np.cov(feats_fake, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s_g @ s_r))
    return float(np.sum((mu_g - mu_r) ** 2) + np.trace(s_g + s_r - 2 * covmean))


def eigen_fvd(mu1, s1, mu2, s2):
    """Symmetric formulation: tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1)))."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum())


def test_frechet_distance_matches_scipy_and_eigen_formulation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    b = rng.normal(size=(150, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    np.testing.assert_allclose(ours, reference_fvd(b, a), rtol=1e-6)
    np.testing.assert_allclose(ours, eigen_fvd(mu1, s1, mu2, s2), rtol=1e-6)


def test_metric_matches_reference_on_extracted_features():
    metric = make_metric()
    real, fake = videos(40, 1), videos(40, 2, shift=0.1)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    feats_r = metric.extract_features(real).numpy()
    feats_g = metric.extract_features(fake).numpy()
    value = metric.compute()
    assert value.dtype == torch.float64
    np.testing.assert_allclose(float(value), reference_fvd(feats_r, feats_g), rtol=1e-6)
    assert float(value) > 0


def test_identical_sets_give_zero():
    metric = make_metric()
    v = videos(30, 3)
    metric.update(v, real=True)
    metric.update(v, real=False)
    scale = float(torch.trace(metric.real_outer)) / 30
    assert abs(float(metric.compute())) < 1e-8 * scale


def test_batched_accumulation_equals_one_shot():
    real, fake = videos(24, 4), videos(24, 5, shift=0.05)
    one = make_metric()
    one.update(real, real=True)
    one.update(fake, real=False)
    batched = make_metric()
    for chunk in (slice(0, 5), slice(5, 6), slice(6, 24)):
        batched.update(fake[chunk], real=False)
        batched.update(real[chunk], real=True)
    torch.testing.assert_close(batched.compute(), one.compute(), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # the hand-merged metric never saw update()
def test_two_simulated_ranks_merged_equal_one_process():
    real, fake = videos(20, 6), videos(20, 7, shift=0.1)
    single = make_metric()
    single.update(real, real=True)
    single.update(fake, real=False)
    expected = single.compute()

    rank0, rank1 = make_metric(), make_metric()
    rank0.update(real[:8], real=True)
    rank0.update(fake[:11], real=False)
    rank1.update(real[8:], real=True)
    rank1.update(fake[11:], real=False)

    # what DDP's sum-reduction does, by hand ...
    manual = make_metric()
    for name in manual._defaults:
        assert manual._reductions[name] is not None  # every state is sum-reduced
        setattr(manual, name, getattr(rank0, name) + getattr(rank1, name))
    torch.testing.assert_close(manual.compute(), expected, rtol=1e-10, atol=1e-10)
    # ... and through torchmetrics' own merge
    rank0.merge_state(rank1)
    torch.testing.assert_close(rank0.compute(), expected, rtol=1e-10, atol=1e-10)


def test_refuses_unequal_counts_and_too_few():
    metric = make_metric()
    metric.update(videos(4, 8), real=True)
    metric.update(videos(3, 9), real=False)
    with pytest.raises(ValueError, match="4 real vs 3 generated"):
        metric.compute()
    small = make_metric()
    small.update(videos(1, 8), real=True)
    small.update(videos(1, 9), real=False)
    with pytest.raises(ValueError, match="at least 2"):
        small.compute()


def test_clip_length_checks():
    with pytest.raises(ValueError, match="at least 9 frames"):
        FrechetVideoDistance(feature_extractor=Projection(), num_frames=8)
    metric = make_metric(frame_stride=2)
    with pytest.raises(ValueError, match="T=9"):
        metric.update(videos(2, 0), real=True)  # needs 17 frames at stride 2
    long = torch.rand(2, 17, 3, R, R)
    metric.update(long, real=True)  # frames 0, 2, ..., 16
    torch.testing.assert_close(
        metric.extract_features(long), make_metric().extract_features(long[:, ::2]), rtol=0, atol=0
    )


def test_preprocessing_conventions():
    gen = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (2, T, 3, 12, 10), dtype=torch.uint8, generator=gen)
    x = preprocess_videos(u8, num_frames=T, resolution=R)
    assert x.shape == (2, 3, T, R, R) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x, preprocess_videos(u8.double() / 255, num_frames=T, resolution=R))
    gray = u8[:, :, :1]
    torch.testing.assert_close(
        preprocess_videos(gray, num_frames=T, resolution=R),
        preprocess_videos(gray.expand(-1, -1, 3, -1, -1), num_frames=T, resolution=R),
    )
    assert preprocess_videos(torch.zeros(1, T, 3, R, R), T, resolution=R).eq(-1).all()
    assert preprocess_videos(torch.ones(1, T, 3, R, R), T, resolution=R).eq(1).all()


def test_key_and_describe():
    assert fvd_key("val", 256, 16) == "val/fvd_256x16"
    metric = make_metric(detector_sha256="ABC")
    metric.update(videos(3, 1), real=True)
    metric.update(videos(3, 2), real=False)
    assert metric.key("test") == "test/fvd_3x9"
    info = metric.describe()
    assert info["n_real"] == info["n_generated"] == 3
    assert (info["n_frames"], info["frame_stride"], info["resolution"]) == (T, 1, R)
    assert info["detector_sha256"] == "abc"


def test_extractor_not_in_state_dict_and_stays_eval():
    parent = nn.Module()
    parent.fvd = make_metric()
    assert not any("feature_extractor" in k for k in parent.state_dict())
    parent.load_state_dict(parent.state_dict(), strict=True)
    parent.train()
    assert not parent.fvd.feature_extractor.training


# ----------------------------------------------------------------------------- detector file loading
class StyleGANVStandIn(nn.Module):
    """Same call signature as StyleGAN-V's i3d_torchscript.pt: (B, 3, T, 224, 224) -> (B, 400)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 400)

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False):
        if rescale or resize or not return_features:
            raise RuntimeError("stand-in: FVD must call with rescale=False, resize=False, return_features=True")
        if x.shape[1:] != (3, 16, 224, 224):
            raise RuntimeError("stand-in: expected (B, 3, 16, 224, 224)")
        stats = torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)
        return self.head(stats)


class PlainStandIn(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3, 4)).repeat(1, 134)[:, :400] * torch.arange(1, 401, dtype=x.dtype)


@pytest.fixture
def scripted_detector(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(StyleGANVStandIn()).save(str(path))
    return path


def test_loader_torchscript_with_sha256(scripted_detector):
    sha = file_sha256(scripted_detector)
    metric = load_fvd_metric(scripted_detector, detector_sha256=sha.upper())
    assert isinstance(metric, FrechetVideoDistance)
    assert metric._call_mode == "kwargs"
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (3, 16, 3, 6, 6), dtype=torch.uint8, generator=gen)
    fake = torch.randint(0, 200, (3, 16, 1, 6, 6), dtype=torch.uint8, generator=gen)  # grayscale
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert torch.isfinite(metric.compute()) and metric.compute() > 0
    info = metric.describe()
    assert info["detector_sha256"] == sha and info["n_frames"] == 16 and info["resolution"] == 224
    assert metric.key("val") == "val/fvd_3x16"


def test_loader_wrong_sha256_raises(scripted_detector):
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_fvd_metric(scripted_detector, detector_sha256="0" * 64)


def test_loader_traced_plain_signature_falls_back(tmp_path):
    path = tmp_path / "plain.pt"
    torch.jit.trace(PlainStandIn(), torch.rand(1, 3, 16, 8, 8)).save(str(path))
    metric = load_fvd_metric(path)
    metric.update(torch.rand(2, 16, 3, 8, 8), real=True)
    assert metric._call_mode == "plain"
    assert metric.real_n == 2


def test_loader_state_dict_into_inception_i3d(tmp_path):
    from lightning_ssmvid.metrics.i3d import I3DLogits, InceptionI3d

    torch.manual_seed(0)
    path = tmp_path / "i3d_state_dict.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in InceptionI3d().state_dict().items()}}, path)
    metric = load_fvd_metric(path, num_frames=9)
    assert isinstance(metric.feature_extractor, I3DLogits) and metric._call_mode == "kwargs"
    assert metric.extract_features(torch.rand(1, 9, 3, 4, 4)).shape == (1, 400)


def test_missing_weights_warn_once_and_return_none(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(fvd_mod, "_warned_missing", False)
    with caplog.at_level(logging.WARNING, logger=fvd_mod.__name__):
        assert load_fvd_metric(tmp_path / "absent.pt") is None
        assert load_fvd_metric(tmp_path / "absent.pt") is None
        assert load_fvd_metric(None) is None
    records = [r for r in caplog.records if r.name == fvd_mod.__name__]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "metrics.fvd.detector_path" in message and "i3d_torchscript.pt" in message
    assert "NOT be computed" in message
    with pytest.raises(FileNotFoundError, match="metrics.fvd.detector_path"):
        FrechetVideoDistance(detector_path=tmp_path / "absent.pt")
