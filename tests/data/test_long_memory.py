"""The long-memory generator: exact events, lossless MP4s, determinism, atomic writes, caching, validation."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_ssmvid.data import long_memory as lm
from lightning_ssmvid.data.long_memory import (
    LongMemory, LongMemoryConfig, cue_mask, distractor_colours, generate_long_memory, list_clips, load_sidecar,
    make_palette, plan_clip, render_frames,
)
from lightning_ssmvid.data.video_io import open_video

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(frame_size=64, n_frames=200, gap_bins=(8, 24, 48), min_visible=8, reveal_frames=4,
             n_train=3, n_val=1, n_test=1)


def small(**overrides) -> LongMemoryConfig:
    return LongMemoryConfig(**{**SMALL, **overrides})


def decode(path) -> np.ndarray:
    """All frames with decord (what the data pipeline reads). NB: this decord build returns frames of width not a
    multiple of 64 stretched to the next multiple of 64 (a 32x32 clip decodes as 32x64), so tests decode 64x64."""
    reader = open_video(path)
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def decode_pyav(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def all_files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def check_complete(dataset: Path, config: LongMemoryConfig) -> None:
    """Every split has its manifest, every clip decodes with the right frame count, no temporary file is left."""
    for split, count in config.counts().items():
        clips = list_clips(dataset / split)
        assert len(clips) == count
        assert sorted(p.name for p in (dataset / split).glob("*.mp4")) == [p.name for p in clips]
        for clip in clips:
            assert len(open_video(clip)) == config.n_frames
            assert load_sidecar(clip)["n_frames"] == config.n_frames
    assert not [p for p in dataset.rglob(".*") if p.name != ".lock"], "temporary files left behind"


def test_palette_colours_are_distinct():
    grey, black = np.array(lm.OCCLUDER_RGB, float), np.array(lm.BACKGROUND, float)
    pale = distractor_colours().astype(float)
    for k in range(2, lm.MAX_PALETTE + 1):
        palette = make_palette(k).astype(float)
        d = np.linalg.norm(palette[:, None] - palette[None], axis=-1) + np.eye(k) * 1e9
        assert d.min() > 70, k
        others = np.concatenate([pale, grey[None], black[None]])
        assert np.linalg.norm(palette[:, None] - others[None], axis=-1).min() > 60, k


@pytest.mark.parametrize("frame_size", [32, 64])
def test_events_are_exact(frame_size):
    config = small(frame_size=frame_size, n_frames=240, palette_size=5, n_distractors=(2, 3))
    bins_seen = set()
    for index in range(6):
        sc = plan_clip(config, "train", index)
        assert 3 <= len(sc["objects"]) <= 4 and sc["objects"][-1]["role"] == "cue"
        assert sc["cue"]["rgb"] == sc["palette"][sc["cue"]["palette_index"]]
        assert sc["events"], "every clip has at least one event"
        frames = np.stack(list(render_frames(sc)))
        palette_pixels = (frames[..., None, :] == np.array(sc["palette"], np.uint8)).all(-1).any(-1)  # (T, S, S)
        full = int(sc["cue_visible"].max())
        for ev in sc["events"]:
            bins_seen.add(ev["gap"])
            assert ev["gap"] in config.gap_bins and ev["gap"] == ev["hide_end"] - ev["hide_start"] + 1
            # hidden: no cue pixel, and no palette colour anywhere in the frame (nothing reveals the cue)
            assert (sc["cue_visible"][ev["hide_start"] : ev["hide_end"] + 1] == 0).all()
            assert not palette_pixels[ev["hide_start"] : ev["hide_end"] + 1].any()
            assert sc["cue_visible"][ev["hide_start"] - 1] > 0 and sc["cue_visible"][ev["reveal_start"]] > 0
            # seen fully for >= min_visible frames before hiding; fully shown for reveal_frames frames after
            assert (sc["cue_visible"][ev["last_full"] - config.min_visible + 1 : ev["last_full"] + 1] == full).all()
            assert (sc["cue_visible"][ev["full_start"] : ev["reveal_stop"]] == full).all()
            assert ev["reveal_stop"] - ev["full_start"] == config.reveal_frames
            for t in range(ev["reveal_start"], ev["reveal_stop"]):  # the mask is exactly where the cue colour is
                mask = cue_mask(sc, t)
                assert mask.sum() == sc["cue_visible"][t]
                assert (frames[t][mask] == sc["cue"]["rgb"]).all()
                assert not (frames[t][~mask] == sc["cue"]["rgb"]).all(-1).any()
    assert bins_seen == set(config.gap_bins)


@pytest.mark.parametrize("frame_size", [64, 32])
def test_generate_lossless_layout_and_cli(tmp_path, frame_size):
    config = small(n_train=2, n_val=1, n_test=1, frame_size=frame_size)
    dataset = lm.main(["--root", str(tmp_path), "--workers", "1", "--no-progress", "--frame-size", str(frame_size),
                       "--n-frames", "200", "--gap-bins", "8", "24", "48", "--min-visible", "8", "--reveal-frames",
                       "4", "--n-train", "2", "--n-val", "1", "--n-test", "1"])
    assert dataset == tmp_path / config.dataset_name()
    assert json.loads((dataset / "config.json").read_text())["hash"] == config.hash()
    check_complete(dataset, config)
    for clip in list_clips(dataset / "train") + list_clips(dataset / "test"):
        sc = load_sidecar(clip)
        expected = np.stack(list(render_frames(sc)))
        # lossless: the decoded frames are the generator's frames, bit for bit (decord: see ``decode``)
        np.testing.assert_array_equal(decode(clip) if frame_size % 64 == 0 else decode_pyav(clip), expected)
        np.testing.assert_array_equal(sc["positions"], plan_clip(config, sc["split"], sc["index"])["positions"])


def test_deterministic_per_seed_and_independent_of_workers(tmp_path):
    config = small(n_train=3, n_val=0, n_test=0)
    a = generate_long_memory(tmp_path / "a", config, workers=1, progress=False)
    b = generate_long_memory(tmp_path / "b", config, workers=2, progress=False)
    c = generate_long_memory(tmp_path / "c", small(n_train=3, n_val=0, n_test=0, seed=1), workers=1, progress=False)
    assert a.name == b.name != c.name
    for i in range(3):
        name = f"train/clip_{i:05d}"
        assert (a / f"{name}.json").read_bytes() == (b / f"{name}.json").read_bytes()
        sa, sb, sc = (load_sidecar(d / f"{name}.json") for d in (a, b, c))
        for key in lm.ARRAY_KEYS:
            assert sa[key].tobytes() == sb[key].tobytes()
        assert decode(a / f"{name}.mp4").tobytes() == decode(b / f"{name}.mp4").tobytes()
        assert decode(a / f"{name}.mp4").tobytes() != decode(c / f"{name}.mp4").tobytes()
        assert sa["positions"].tobytes() != sc["positions"].tobytes()


def test_cached_second_call_writes_nothing(tmp_path):
    config = small(n_train=2, n_val=1, n_test=0)
    dataset = generate_long_memory(tmp_path, config, workers=1, progress=False)
    before = all_files(dataset)
    assert generate_long_memory(tmp_path, small(n_train=2, n_val=1, n_test=0), workers=1, progress=False) == dataset
    generator = LongMemory(workers=1, progress=False, **{**SMALL, "n_train": 2, "n_val": 1, "n_test": 0})
    assert generator(tmp_path) == dataset  # the datamodule's ``generator(root)`` form
    assert all_files(dataset) == before
    assert small(fps=24.0).hash() == small(fps=24).hash() and small(n_train=5).hash() != small().hash()


def test_interrupted_run_leaves_no_complete_looking_clip(tmp_path, monkeypatch):
    config = small(n_train=3, n_val=1, n_test=0)
    frames_written = {"n": 0}
    real_write = lm.VideoWriter.write

    def failing_write(self, frame):
        frames_written["n"] += 1
        if frames_written["n"] > config.n_frames + 50:  # dies in the middle of the second clip
            raise RuntimeError("simulated crash")
        real_write(self, frame)

    monkeypatch.setattr(lm.VideoWriter, "write", failing_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_long_memory(tmp_path, config, workers=1, progress=False)
    dataset = tmp_path / config.dataset_name()
    train = dataset / "train"
    assert not (train / lm.MANIFEST).exists()
    assert sorted(p.name for p in train.glob("clip_*")) == ["clip_00000.json", "clip_00000.mp4", "clip_00000.npz"]
    first = all_files(train)

    monkeypatch.setattr(lm.VideoWriter, "write", real_write)
    generate_long_memory(tmp_path, config, workers=1, progress=False)
    check_complete(dataset, config)
    after = all_files(train)
    assert all(after[name] == mtime for name, mtime in first.items()), "a complete clip was rewritten"


KILL_SCRIPT = """
import os, signal, sys
from lightning_ssmvid.data import long_memory as lm
n = {"frames": 0}
write = lm.VideoWriter.write
def dying_write(self, frame):
    n["frames"] += 1
    if n["frames"] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    write(self, frame)
lm.VideoWriter.write = dying_write
lm.generate_long_memory(sys.argv[1], lm.LongMemoryConfig(**eval(sys.argv[3])), workers=1, progress=False)
"""


def test_killed_run_then_rerun_completes(tmp_path):
    """A SIGKILL mid-clip (no cleanup code runs) leaves only hidden partial files; a rerun finishes the set."""
    config = small(n_train=2, n_val=1, n_test=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), str(config.n_frames * 2 + 30),
                           repr({**SMALL, "n_train": 2, "n_val": 1, "n_test": 0})], env=env, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    dataset = tmp_path / config.dataset_name()
    assert [p.name for p in (dataset / "train").glob(".clip_00000.partial*")] == []
    assert len(list((dataset / "val").glob(".clip_00000.partial*"))) == 1  # the clip being written when killed
    assert not (dataset / "val" / "clip_00000.mp4").exists() and not (dataset / "val" / lm.MANIFEST).exists()
    generate_long_memory(tmp_path, config, workers=1, progress=False)
    check_complete(dataset, config)


def test_gap_that_does_not_fit_is_a_clear_error():
    with pytest.raises(ValueError, match=r"gap bin\(s\) \[960\] do not fit in a clip of n_frames=200"):
        LongMemoryConfig(frame_size=32, n_frames=200, gap_bins=(60, 960))
    with pytest.raises(ValueError, match="palette_size"):
        LongMemoryConfig(palette_size=1)
    LongMemoryConfig()  # the defaults are valid: 1,440 frames hold a 960-frame gap
