"""Foreground persistence and motion: the real continuation scores 1, an empty rollout 0 foreground, a frozen one 0
motion (what flicker alone would reward), and two ranks merge exactly."""

import torch

from lightning_ssmvid.metrics.persistence import ForegroundMotion

BINS = [(1, 4), (5, 16)]


def moving_square(n_frames: int = 24, size: int = 16) -> torch.Tensor:
    """(1, T, 3, S, S): a white square moving right one pixel a frame on black."""
    video = torch.zeros(1, n_frames, 3, size, size)
    for t in range(n_frames):
        x = t % (size - 4)
        video[0, t, :, 6:10, x : x + 4] = 1.0
    return video


def scores(pred: torch.Tensor, video: torch.Tensor, k: int = 8) -> dict:
    metric = ForegroundMotion(max_horizon=16)
    metric.update(pred, video[:, k:], video[:, :k])
    return metric.summary(BINS)


def test_real_continuation_scores_one_and_empty_or_frozen_rollouts_zero():
    video = moving_square()
    real = scores(video[:, 8:], video)
    assert all(abs(v - 1) < 1e-9 for v in real.values()) and set(real) == {
        "foreground_ratio_h1-4", "motion_ratio_h1-4", "foreground_ratio_h5-16", "motion_ratio_h5-16"}
    empty = scores(torch.zeros_like(video[:, 8:]), video)
    assert empty["foreground_ratio_h1-4"] == empty["foreground_ratio_h5-16"] == 0.0
    frozen = scores(video[:, 7:8].expand_as(video[:, 8:]), video)
    assert frozen["motion_ratio_h5-16"] == 0.0 and abs(frozen["foreground_ratio_h5-16"] - 1) < 1e-9


def test_bins_are_clipped_to_the_horizons_seen_and_ranks_merge():
    video = moving_square(n_frames=14)
    out = scores(video[:, 8:], video)  # 6 generated frames: the second band is 5..6
    assert set(out) == {"foreground_ratio_h1-4", "motion_ratio_h1-4", "foreground_ratio_h5-6", "motion_ratio_h5-6"}
    a, b, whole = (ForegroundMotion(max_horizon=16) for _ in range(3))
    v1, v2 = moving_square(), moving_square().flip(-1)
    a.update(v1[:, 8:], v1[:, 8:], v1[:, :8])
    b.update(torch.zeros_like(v2[:, 8:]), v2[:, 8:], v2[:, :8])
    whole.update(torch.cat([v1[:, 8:], torch.zeros_like(v2[:, 8:])]), torch.cat([v1, v2])[:, 8:],
                 torch.cat([v1, v2])[:, :8])
    a.merge_state(b)
    assert a.summary(BINS) == whole.summary(BINS)
    assert abs(whole.summary(BINS)["foreground_ratio_h1-4"] - 0.5) < 1e-9  # one of two clips empty


def test_rollout_persistence_against_the_context_and_its_bands():
    from lightning_ssmvid.metrics.persistence import RolloutPersistence, rollout_bands

    video = moving_square(n_frames=200)[0]
    assert rollout_bands(500) == [(1, 16), (17, 128), (129, 500)] and rollout_bands(10) == [(1, 10)]
    real, empty, frozen = (RolloutPersistence(video[:16], rollout_bands(184)) for _ in range(3))
    for frame in video[16:]:
        real.update(frame)
        empty.update(torch.zeros_like(frame))
        frozen.update(video[15])
    assert set(real.summary()) >= {"foreground_ratio_h1-16", "motion_ratio_h129-184"}
    ratios = lambda p, name: [v for k, v in p.summary().items() if k.startswith(name)]  # noqa: E731
    assert all(abs(r - 1) < 0.1 for r in ratios(real, "foreground_ratio") + ratios(real, "motion_ratio"))  # wraps
    assert all(r == 0 for r in ratios(empty, "foreground_ratio"))
    assert all(r == 0 for r in ratios(frozen, "motion_ratio")) and all(abs(r - 1) < 0.05 for r in
                                                                      ratios(frozen, "foreground_ratio"))


def test_a_diverged_rollout_is_not_scored_as_an_empty_one():
    from lightning_ssmvid.metrics.persistence import RolloutPersistence, rollout_bands

    video = moving_square(n_frames=200)[0]
    rollout = RolloutPersistence(video[:16], rollout_bands(184))
    for t, frame in enumerate(video[16:]):
        rollout.update(frame if t < 20 else torch.full_like(frame, float("nan")))  # NaN from generated frame 21
    summary = rollout.summary()
    assert abs(summary["foreground_ratio_h1-16"] - 1) < 0.1 and abs(summary["foreground_ratio_h17-128"] - 1) < 0.1
    assert summary["foreground_ratio_h129-184"] != summary["foreground_ratio_h129-184"]  # NaN: no finite frame
    assert summary["motion_ratio_h129-184"] != summary["motion_ratio_h129-184"]
    pred = video[16:32][None].clone()
    pred[:, 8:] = float("nan")
    diverged = scores(pred, video[None], k=16)  # the evaluation's metric: a diverged band is NaN, not 0
    assert diverged["foreground_ratio_h1-4"] > 0.5 and diverged["foreground_ratio_h5-16"] != diverged[
        "foreground_ratio_h5-16"]


def test_sample_diversity_is_zero_for_equal_draws_and_the_mean_gap_otherwise():
    from lightning_ssmvid.metrics.persistence import SampleDiversity

    video = moving_square()
    metric = SampleDiversity(max_horizon=16)
    metric.update(video[:, :16], video[:, :16])
    assert all(v == 0 for v in metric.summary(BINS).values())
    metric = SampleDiversity(max_horizon=16)
    metric.update(video[:, :16], video[:, :16] * 0)
    expected = float(video[:, :4].mean())
    assert abs(metric.summary(BINS)["diversity_h1-4"] - expected) < 1e-9


def test_a_square_that_does_not_move_in_the_context_is_still_foreground():
    from lightning_ssmvid.metrics.persistence import foreground_fraction, scene_background

    still = torch.zeros(8, 3, 16, 16)
    still[:, :, 4:8, 4:8] = 0.9  # 16 of 256 pixels, the same in every context frame: the median would be the square
    background = scene_background(still)
    assert torch.equal(background, torch.zeros(3, 16, 16))
    assert foreground_fraction(still[None], background[None], 0.1).mean() == 16 / 256
    occluded = still.clone()
    occluded[:, :, :, :6] = 0.5  # a static occluder over a third of the frame is scene: the per-pixel median
    assert torch.equal(scene_background(occluded), occluded.median(dim=0).values)
    textured = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1).clone()  # no backdrop colour: the median too
    assert torch.equal(scene_background(textured), textured.median(dim=0).values)
    assert scene_background(torch.full((8, 3, 16, 16), float("nan"))).isnan().all()  # unscored, not a crash


def test_both_persistence_measures_count_a_still_square_as_foreground():
    from lightning_ssmvid.metrics.persistence import RolloutPersistence, rollout_bands

    still = torch.zeros(1, 12, 3, 16, 16)
    still[..., 4:8, 4:8] = 0.9
    video = torch.cat([still, moving_square(12)])  # (2, 12, ...): one clip whose square never moves, one moving
    kept_then_lost = torch.cat([still[:, 8:], torch.zeros_like(still[:, 8:])])  # the still square kept, the other not
    assert scores(kept_then_lost, video)["foreground_ratio_h1-4"] == 0.5  # per clip backdrops: 1 of 2 squares
    rollout = RolloutPersistence(still[0, :8], rollout_bands(4))
    assert rollout.context_foreground == 16 / 256
    for _ in range(4):
        rollout.update(torch.zeros(3, 16, 16))
    assert rollout.summary()["foreground_ratio_h1-4"] == 0.0
