"""Scene kept by a rollout of a long-memory clip: the real continuation keeps everything, an empty or smeared one
keeps nothing, and a shifted copy keeps the colours (they are position-free) but not a moved occluder."""

import pytest
import torch

from lightning_ssmvid.data.long_memory import generate_long_memory, list_clips, load_sidecar, render_frames
from lightning_ssmvid.data.video_io import open_video, read_frames
from lightning_ssmvid.metrics.scene import SceneKept, scene_bands
from tests.helpers import CONFIG

START = 5


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    dataset = generate_long_memory(tmp_path_factory.mktemp("lm"), CONFIG, workers=1, progress=False)
    path = list_clips(dataset / "test")[0]
    reader = open_video(path)
    return read_frames(reader, START, len(reader) - START).float() / 255, load_sidecar(path)  # decoded with decord


def scored(frames, sidecar) -> dict:
    scene = SceneKept(sidecar, START, scene_bands(len(frames)))
    for frame in frames:
        scene.update(frame)
    return scene.summary()


def test_the_real_continuation_keeps_the_scene(clip):
    frames, sidecar = clip
    summary = scored(frames, sidecar)
    assert set(summary) == {f"{k}_kept_h{b}" for k in ("occluder", "colours") for b in ("1-16", "17-128", "129-195")}
    assert all(value > 0.99 for value in summary.values()), summary


def test_black_grey_and_smeared_rollouts_keep_nothing(clip):
    frames, sidecar = clip
    cue_red = torch.tensor(sidecar["palette"][sidecar["cue_colour"][START]], dtype=torch.float32) / 255
    smeared = cue_red[None, :, None, None].expand_as(frames)
    for fake in (torch.zeros_like(frames), torch.full_like(frames, 0.5), smeared):
        summary = scored(fake, sidecar)
        assert summary["colours_kept_h1-16"] < 0.5, summary
    assert scored(torch.zeros_like(frames), sidecar)["occluder_kept_h1-16"] == 0.0


def test_colours_are_position_free_and_the_occluder_is_not(clip):
    frames, sidecar = clip
    occ = sidecar["occluder"]
    width = occ["x1"] - occ["x0"]
    shifted = frames.roll(shifts=width + 4, dims=-1)  # everything moved right, the occluder band off its place
    summary = scored(shifted, sidecar)
    assert summary["occluder_kept_h1-16"] < 0.5 < summary["colours_kept_h1-16"]


def test_frames_past_the_clips_end_are_not_scored(clip):
    frames, sidecar = clip
    longer = torch.cat([frames, torch.zeros_like(frames[:50])])
    assert scored(longer, sidecar)["occluder_kept_h129-195"] > 0.99  # the black tail past frame 195 is ignored
    assert len(list(render_frames(sidecar, START))) == len(frames)


def test_a_diverged_rollout_is_not_scored_as_a_lost_scene(clip):
    frames, sidecar = clip
    diverged = frames.clone()
    diverged[16:] = float("nan")  # NaN from frame 17: those frames are left out, not read as an empty scene
    summary = scored(diverged, sidecar)
    assert summary["occluder_kept_h1-16"] > 0.99 and summary["colours_kept_h1-16"] > 0.99
    assert all(summary[k] != summary[k] for k in summary if "h17-" in k or "h129-" in k), summary


def test_only_a_readable_long_memory_sidecar_is_scored(tmp_path, capsys):
    from lightning_ssmvid.generate import long_memory_sidecar

    video = tmp_path / "clip.mp4"
    assert long_memory_sidecar(video) is None  # no .json beside it
    (tmp_path / "clip.json").write_text('{"frames": 300, "path": "clip.mp4"}')  # generate's own record
    assert long_memory_sidecar(video) is None
    (tmp_path / "clip.json").write_text('{"format": "long_memory/v2", "arr')  # damaged
    assert long_memory_sidecar(video) is None
    assert "not a readable long-memory sidecar" in capsys.readouterr().out
