"""Temporal metrics with known answers: PSNR/SSIM vs horizon, flicker, flow warping error."""

import math

import numpy as np
import pytest
import torch

from lightning_ssmvid.metrics.temporal import (
    FlowWarpingError,
    HorizonQuality,
    TemporalFlicker,
    default_horizon_bins,
    frame_flicker,
    summarise,
    warping_error,
)

B, T, C, H, W = 3, 6, 3, 16, 16


def rand_video(seed, b=B, t=T, c=C, h=H, w=W, lo=0.0, hi=1.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, c, h, w, generator=gen, dtype=torch.float64) * (hi - lo) + lo


def moving_pattern(b=2, t=5, c=3, size=32, speed=1):
    """A smooth pattern translating by `speed` pixels per frame (plus a per-video phase)."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    frames = []
    for i in range(b):
        clip = []
        for k in range(t):
            xs = x - speed * k + 3 * i
            img = 0.5 + 0.25 * torch.sin(xs / 3.0) * torch.cos(y / 4.0) + 0.2 * torch.cos(xs / 5.0 + y / 7.0)
            clip.append(img.expand(c, size, size))
        frames.append(torch.stack(clip))
    return torch.stack(frames).clamp(0, 1)


# ---------------------------------------------------------------------------------- HorizonQuality
def test_identical_videos():
    v = rand_video(0)
    hq = HorizonQuality(max_horizon=T + 2)
    hq.update(v, v.clone())
    out = hq.compute()
    assert torch.isposinf(out["psnr"][:T]).all()
    torch.testing.assert_close(out["ssim"][:T], torch.ones(T, dtype=torch.float64), rtol=0, atol=1e-10)
    assert torch.isnan(out["psnr"][T:]).all() and torch.isnan(out["ssim"][T:]).all()
    assert out["count"].tolist() == [B] * T + [0, 0]
    assert out["n_identical"].tolist() == [B] * T + [0, 0]
    summary = summarise(out["psnr"], [(1, 4), (5, 8)], "psnr")
    assert summary == {"psnr_h1-4": math.inf, "psnr_h5-6": math.inf}  # bin clipped to the horizons seen


def test_constant_shift_psnr_exact():
    delta = 0.1
    target = rand_video(1, lo=0.1, hi=1.0 - delta)  # no clipping: every error is exactly delta
    hq = HorizonQuality(max_horizon=T)
    hq.update(target + delta, target)
    expected = 10 * math.log10(1.0 / delta**2)  # = 20 dB
    torch.testing.assert_close(hq.compute()["psnr"], torch.full((T,), expected, dtype=torch.float64), rtol=1e-6, atol=0)
    assert (hq.compute()["ssim"] < 1).all()


def test_constant_shift_psnr_clipping_aware():
    delta = 0.25
    target = rand_video(2)  # in [0, 1]: target + delta leaves the range and is clipped to 1
    hq = HorizonQuality(max_horizon=T)
    hq.update(target + delta, target)
    err = (target + delta).clamp(0, 1) - target
    mse = (err**2).mean(dim=(2, 3, 4))  # (B, T)
    expected = (10 * torch.log10(1.0 / mse)).mean(0)
    torch.testing.assert_close(hq.compute()["psnr"], expected, rtol=1e-6, atol=0)
    assert (hq.compute()["psnr"] > 10 * math.log10(1 / delta**2)).all()


def test_uint8_equals_float():
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (2, 4, 3, H, W), dtype=torch.uint8, generator=gen)
    b = torch.randint(0, 256, (2, 4, 3, H, W), dtype=torch.uint8, generator=gen)
    hq_u8, hq_f = HorizonQuality(4), HorizonQuality(4)
    hq_u8.update(a, b)
    hq_f.update(a.double() / 255, b.double() / 255)
    for k in ("psnr", "ssim"):
        torch.testing.assert_close(hq_u8.compute()[k], hq_f.compute()[k], rtol=1e-5, atol=1e-6)


def test_horizon_batched_and_chunked_equals_one_shot():
    pred, target = rand_video(4, b=5), rand_video(5, b=5)
    one = HorizonQuality(max_horizon=T)
    one.update(pred, target)
    pieces = HorizonQuality(max_horizon=T, chunk_size=7)
    pieces.update(pred[:2], target[:2])  # batch split ...
    pieces.update(pred[2:, :4], target[2:, :4])  # ... and a rollout fed in horizon chunks
    pieces.update(pred[2:, 4:], target[2:, 4:], horizon_offset=4)
    for k, v in one.compute().items():
        torch.testing.assert_close(pieces.compute()[k], v, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="outside 1..6"):
        one.update(pred, target, horizon_offset=1)


def test_horizon_two_ranks_merged_equal_one_process():
    pred, target = rand_video(6, b=4), rand_video(7, b=4)
    pred[0, 2] = target[0, 2]  # one identical frame: inf must survive the merge
    single = HorizonQuality(T)
    single.update(pred, target)
    r0, r1 = HorizonQuality(T), HorizonQuality(T)
    r0.update(pred[:1], target[:1])
    r1.update(pred[1:], target[1:])
    r0.merge_state(r1)
    for k, v in single.compute().items():
        torch.testing.assert_close(r0.compute()[k], v, rtol=1e-12, atol=1e-12)
    assert torch.isposinf(single.compute()["psnr"][2]) and single.compute()["n_identical"][2] == 1


def test_summarise_bins():
    assert default_horizon_bins(300) == [(1, 16), (17, 64), (65, 256), (257, 1024)]
    assert default_horizon_bins(16) == [(1, 16)]
    curve = torch.arange(1, 101, dtype=torch.float64)  # value = horizon
    out = summarise(curve, default_horizon_bins(100), "ssim")
    assert out == {"ssim_h1-16": 8.5, "ssim_h17-64": 40.5, "ssim_h65-100": 82.5}
    hq = HorizonQuality(20)
    hq.update(rand_video(8, t=20), rand_video(9, t=20))
    assert set(hq.summary([(1, 16), (17, 64)])) == {"psnr_h1-16", "psnr_h17-20", "ssim_h1-16", "ssim_h17-20"}


# ------------------------------------------------------------------------------------------ flicker
def test_flicker_identical_static_and_known_value():
    v = rand_video(10)
    fl = TemporalFlicker()
    fl.update(v, v.clone())
    assert float(fl.compute()["flicker_ratio"]) == pytest.approx(1.0, rel=1e-12)

    static = rand_video(11, t=1).expand(-1, T, -1, -1, -1)
    assert frame_flicker(static).eq(0).all()
    fl = TemporalFlicker()
    fl.update(static, v)
    out = fl.compute()
    assert float(out["flicker_gen"]) == 0 and float(out["flicker_ratio"]) == 0
    fl = TemporalFlicker()
    fl.update(static, static)
    assert float(fl.compute()["flicker_ratio"]) == 1.0  # both static: "same as real"

    alternating = torch.zeros(1, 4, 1, 8, 8, dtype=torch.float64)
    alternating[:, 1::2] = 0.5
    fl = TemporalFlicker()
    fl.update(alternating, alternating * 0.5)
    out = fl.compute()
    assert float(out["flicker_gen"]) == pytest.approx(0.5) and float(out["flicker_ratio"]) == pytest.approx(2.0)


def test_flicker_batched_and_merged_equal_one_process():
    pred, target = rand_video(12, b=5), rand_video(13, b=5)
    one = TemporalFlicker()
    one.update(pred, target)
    batched = TemporalFlicker()
    batched.update(pred[:2], target[:2])
    batched.update(pred[2:], target[2:])
    r0, r1 = TemporalFlicker(), TemporalFlicker()
    r0.update(pred[:3], target[:3])
    r1.update(pred[3:], target[3:])
    r0.merge_state(r1)
    for k, v in one.compute().items():
        torch.testing.assert_close(batched.compute()[k], v, rtol=1e-12, atol=0)
        torch.testing.assert_close(r0.compute()[k], v, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------ flow warping error
def test_warping_error_identical_and_static():
    v = moving_pattern()
    we = FlowWarpingError()
    we.update(v, v.clone())
    out = we.compute()
    assert float(out["warp_error_gen"]) == float(out["warp_error_real"])
    assert float(out["warp_error_ratio"]) == 1.0

    static = v[:, :1].expand(-1, 4, -1, -1, -1)
    # ~0, not exactly 0: Farneback returns sub-pixel (<= ~0.1 px) spurious flow near borders on identical frames
    assert warping_error(static).abs().max() < 1e-5
    we = FlowWarpingError()
    we.update(static, v)
    assert float(we.compute()["warp_error_gen"]) < 1e-5


def test_warping_error_tracks_motion_not_noise():
    smooth = moving_pattern(speed=1)
    noise = rand_video(14, b=2, t=5, h=32, w=32)
    err_smooth, err_noise = warping_error(smooth), warping_error(noise)
    # moving the pattern is explained by the flow; i.i.d. noise is not (~2 var = 1/6)
    assert (err_smooth < 0.1 * err_noise).all()
    naive = ((smooth[:, 1:] - smooth[:, :-1]) ** 2).mean(dim=(1, 2, 3, 4))
    assert (err_smooth < 0.5 * naive).all()
    # warping the generated video with the real video's flow
    we = FlowWarpingError(flow_source="target")
    we.update(noise, smooth)
    torch.testing.assert_close(we.compute()["warp_error_real"], err_smooth.mean(), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="flow_source"):
        FlowWarpingError(flow_source="other")


def test_warping_error_batched_and_merged_equal_one_process():
    pred, target = moving_pattern(b=3, t=4, c=1, size=24, speed=2), moving_pattern(b=3, t=4, c=1, size=24)
    pred = (pred + 0.05 * rand_video(15, b=3, t=4, c=1, h=24, w=24)).clamp(0, 1)
    one = FlowWarpingError()
    one.update(pred, target)
    batched = FlowWarpingError()
    batched.update(pred[:1], target[:1])
    batched.update(pred[1:], target[1:])
    r0, r1 = FlowWarpingError(), FlowWarpingError()
    r0.update(pred[:2], target[:2])
    r1.update(pred[2:], target[2:])
    r0.merge_state(r1)
    for k, v in one.compute().items():
        torch.testing.assert_close(batched.compute()[k], v, rtol=1e-12, atol=0)
        torch.testing.assert_close(r0.compute()[k], v, rtol=1e-12, atol=0)
    np.testing.assert_allclose(float(one.compute()["warp_error_gen"]), float(warping_error(pred).mean()), rtol=1e-12)


def test_missing_cv2_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(ImportError, match="opencv-python-headless"):
        FlowWarpingError()
