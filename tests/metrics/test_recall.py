"""The cue-recall probe: ground truth scores 100%, memoryless controls score chance, an object not drawn is "absent"
(never a colour), counts and per-event records reduce exactly, confidence intervals resample clips."""

import numpy as np
import pytest
import torch
from torchmetrics.utilities.data import dim_zero_cat, dim_zero_sum

from lightning_ssmvid.data.long_memory import (
    LongMemoryConfig,
    cue_mask,
    generate_long_memory,
    list_clips,
    load_sidecar,
    plan_clip,
    render_frames,
)
from lightning_ssmvid.data.video_io import open_video, read_frames
from lightning_ssmvid.metrics.recall import (
    ABSENT,
    CueRecall,
    classify_colours,
    nearest_bin,
    scene_colours,
    score_clip,
    score_events,
)
from tests.helpers import CONFIG

CHANCE_CONFIG = LongMemoryConfig(frame_size=32, n_frames=120, gap_bins=(4, 12), min_visible=4, reveal_frames=3,
                                 n_distractors=(0, 0), palette_size=8)


@pytest.fixture(scope="module")
def test_clips(tmp_path_factory):
    dataset = generate_long_memory(tmp_path_factory.mktemp("lm"), CONFIG, workers=1, progress=False)
    clips = []
    for path in list_clips(dataset / "test"):
        reader = open_video(path)
        clips.append((read_frames(reader, 0, len(reader)), load_sidecar(path)))  # decoded with decord
    return clips


def render(sidecar) -> torch.Tensor:
    return torch.from_numpy(np.stack(list(render_frames(sidecar)))).permute(0, 3, 1, 2).contiguous()


def test_ground_truth_from_mp4_scores_100_percent(test_clips):
    n_events = 0
    for video, sidecar in test_clips:
        assert video.shape == (CONFIG.n_frames, 3, 64, 64) and video.dtype == torch.uint8
        scores = score_clip(video, sidecar)
        assert len(scores) == len(sidecar["events"]) and all(correct for _, correct in scores)
        assert [gap for gap, _ in scores] == [e["gap"] for e in sidecar["events"]]
        n_events += len(scores)
        # float frames in [0, 1] (what the model generates) score the same
        assert all(correct for _, correct in score_clip(video.float() / 255, sidecar))
    assert n_events >= 8


def test_offset_skips_events_outside_the_video(test_clips):
    video, sidecar = test_clips[0]
    events = sidecar["events"]
    assert len(events) >= 2
    offset = events[0]["reveal_start"] + 1  # the first reveal window starts before the rollout: skipped
    scores = score_events(video[offset:], sidecar, offset=offset)
    assert [s.event for s in scores] == list(range(1, len(events))) and all(s.correct for s in scores)
    cut = events[-1]["reveal_stop"] - 1  # the last reveal window ends after the video: skipped
    assert [s.event for s in score_events(video[:cut], sidecar)] == list(range(len(events) - 1))
    # the returning object painted in another palette colour: every event scored wrong, with that colour
    wrong = (sidecar["events"][0]["palette_index"] + 1) % len(sidecar["palette"])
    repainted, colour = video.clone(), torch.tensor(sidecar["palette"][wrong], dtype=torch.uint8)
    for ev in events:
        for t in range(ev["reveal_start"], ev["reveal_stop"]):
            repainted[t][:, torch.from_numpy(cue_mask(sidecar, t))] = colour[:, None]
    scores = score_events(repainted, sidecar)
    assert len(scores) == len(events) and all(not s.correct and s.predicted == wrong for s in scores)


def chance_sidecars(n_clips: int = 240):
    return [plan_clip(CHANCE_CONFIG, "test", i) for i in range(n_clips)]


def test_memoryless_controls_score_chance_and_ground_truth_scores_all():
    """Over many events, videos that forgot the cue score ~1/K; a probe that always says 'correct' cannot pass."""
    sidecars = chance_sidecars()
    rng = np.random.default_rng(0)
    K = CHANCE_CONFIG.palette_size
    truth, repainted, grey = CueRecall(CHANCE_CONFIG.gap_bins), CueRecall(CHANCE_CONFIG.gap_bins), CueRecall(
        CHANCE_CONFIG.gap_bins)
    for sidecar in sidecars:
        video = render(sidecar)
        truth.update([video], [sidecar])
        # memoryless: the returning object is painted with a colour drawn afresh (per event) from the palette
        forgot = video.clone()
        for event in sidecar["events"]:
            colour = torch.tensor(sidecar["palette"][rng.integers(K)], dtype=torch.uint8)
            for t in range(event["reveal_start"], event["reveal_stop"]):
                mask = torch.from_numpy(cue_mask(sidecar, t))
                forgot[t][:, mask] = colour[:, None]
        repainted.update([forgot], [sidecar])
        grey.update([torch.full_like(video, 128)], [sidecar])  # nothing drawn at all
    n = int(truth.total.sum())
    assert n >= 600 and (truth.total > 100).all()
    out = truth.compute()
    assert float(out["chance"]) == pytest.approx(1 / K)
    assert all(float(out[f"recall_gap{b}"]) == 1.0 for b in CHANCE_CONFIG.gap_bins)
    # binomial s.d. of an accuracy of 1/8 over n >= 600 events is <= 0.014 (over 240 clips, for the grey video,
    # whose errors are shared by the events of a clip: <= 0.022); a tolerance of 0.075 is > 3 s.d.
    result = repainted.compute()
    assert abs(float(result["recall"]) - 1 / K) < 0.075, result
    assert float(result["recall_absent"]) == 0.0
    for b in CHANCE_CONFIG.gap_bins:
        assert float(result[f"recall_gap{b}"]) < 0.3, result
        assert (float(result[f"recall_gap{b}_lo"]) <= float(result[f"recall_gap{b}"])
                <= float(result[f"recall_gap{b}_hi"]))
    # a video with no object in it is "absent" at every event: wrong, and never read as a palette colour
    result = grey.compute()
    assert float(result["recall"]) == 0.0 and float(result["recall_absent"]) == 1.0
    # colours are balanced over clips (v2): every colour has events, and ground truth gets each one right
    for k in range(K):
        assert float(out[f"recall_colour{k}"]) == 1.0


def test_black_or_grey_is_absent_not_red():
    """v1's probe read a missing object (black) as palette colour 0 (red): "draw nothing" scored on red cues."""
    sidecar = plan_clip(CHANCE_CONFIG, "test", 0)  # clip 0's cue colour is palette colour 0 (red)
    assert sidecar["cue"]["palette_index"] == 0
    palette, others = torch.tensor(sidecar["palette"], dtype=torch.float32), scene_colours(sidecar)
    black, grey, dark = torch.zeros(3), torch.full((3,), 128.0), torch.full((3,), 64.0)
    assert classify_colours(torch.stack([black, grey, dark]), palette, others).tolist() == [ABSENT] * 3
    assert classify_colours(palette, palette, others).tolist() == list(range(len(palette)))
    # a palette colour a little dimmed and blurred toward black (what a codec draws) is still that colour
    near = palette * 0.8 + 10
    assert classify_colours(near, palette, others).tolist() == list(range(len(palette)))
    # a distractor's pale tint where the cue should be is not the cue: absent
    tints = torch.tensor([o["rgb"] for o in sidecar["objects"] if o["role"] != "cue"] or [[230, 200, 200]],
                         dtype=torch.float32)
    assert (classify_colours(tints, palette, torch.cat([others, tints])) == ABSENT).all()
    video = render(sidecar)
    blank = torch.zeros_like(video)
    scores = score_events(blank, sidecar)
    assert scores and all(s.absent and not s.correct for s in scores)


def test_first_reveal_frame_alone_is_scored_with_frames_first(test_clips):
    video, sidecar = test_clips[0]
    event = sidecar["events"][0]
    assert event["full_start"] == event["reveal_start"]  # v2: the cue steps out fully visible
    only_first = torch.zeros_like(video)
    only_first[event["reveal_start"]] = video[event["reveal_start"]]
    first = score_events(only_first, {**sidecar, "events": [event]}, frames="first")
    assert len(first) == 1 and first[0].correct
    # the whole window of a video holding only that frame: the other frames are black, so the median is absent
    assert score_events(only_first, {**sidecar, "events": [event]}, frames="window")[0].absent
    # one frame given at its offset: the probe of a one-step prediction
    one = score_events(video[event["reveal_start"]][None], {**sidecar, "events": [event]},
                       offset=event["reveal_start"], frames="first")
    assert len(one) == 1 and one[0].correct


def test_counts_are_sum_reduced_states_and_merge_exactly():
    sidecars = chance_sidecars(12)
    videos = [render(s) for s in sidecars]
    videos[3] = torch.zeros_like(videos[3])  # one wrong video, so the counts are not trivially all-correct
    whole = CueRecall(CHANCE_CONFIG.gap_bins)
    whole.update(videos, sidecars, offsets=torch.zeros(12, dtype=torch.long))
    a, b = CueRecall(CHANCE_CONFIG.gap_bins), CueRecall(CHANCE_CONFIG.gap_bins)
    a.update(videos[:5], sidecars[:5])
    b.update(videos[5:], sidecars[5:], offsets=[0] * 7)
    a.merge_state(b)  # what the DDP sync does: the reductions of the states
    assert a._reductions["correct"] is a._reductions["total"] is dim_zero_sum  # DDP sums the counts
    assert a._reductions["event_clip"] is a._reductions["event_correct"] is dim_zero_cat  # records are gathered
    assert torch.equal(a.correct, whole.correct) and torch.equal(a.total, whole.total)
    ra, rw = a.compute(), whole.compute()
    assert {"recall_gap4", "recall_gap12", "recall_gap4_lo", "recall_gap12_hi", "recall_absent_gap4", "recall",
            "recall_absent", "chance", "events_gap4"} <= ra.keys() == rw.keys()
    assert all(torch.equal(ra[k], rw[k]) or (ra[k].isnan() and rw[k].isnan()) for k in ra)  # CIs included
    assert float(rw["recall"]) < 1.0
    empty = CueRecall((4, 12, 1000))
    empty.update(videos[:2], sidecars[:2])
    assert torch.isnan(empty.compute()["recall_gap1000"])


def test_nearest_bin_and_input_checks():
    assert nearest_bin(60, (60, 240, 960)) == 0 and nearest_bin(500, (60, 240, 960)) == 2
    sidecar = plan_clip(CHANCE_CONFIG, "test", 0)
    with pytest.raises(ValueError, match="frame size"):
        score_clip(torch.zeros(CHANCE_CONFIG.n_frames, 3, 64, 64, dtype=torch.uint8), sidecar)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        score_clip(torch.zeros(CHANCE_CONFIG.n_frames, 32, 32, 3, dtype=torch.uint8), sidecar)
