"""The long-memory generator: exact events, a valid memory probe (v2), lossless MP4s, determinism, atomic writes,
caching, validation."""

import collections
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_ssmvid.data import long_memory as lm
from lightning_ssmvid.data.long_memory import (
    LongMemory,
    LongMemoryConfig,
    cue_mask,
    distractor_colours,
    generate_long_memory,
    list_clips,
    load_sidecar,
    make_palette,
    plan_clip,
    render_frames,
    shape_stamp,
)
from lightning_ssmvid.data.video_io import VideoWriter, open_video

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
    announce = np.array(lm.ANNOUNCE_RGB, float)
    pale = distractor_colours().astype(float)
    for k in range(2, lm.MAX_PALETTE + 1):
        palette = make_palette(k).astype(float)
        d = np.linalg.norm(palette[:, None] - palette[None], axis=-1) + np.eye(k) * 1e9
        assert d.min() > 70, k
        others = np.concatenate([pale, grey[None], black[None], announce[None]])
        assert np.linalg.norm(palette[:, None] - others[None], axis=-1).min() > 60, k


@pytest.mark.parametrize("frame_size, colour_per_event", [(32, False), (64, False), (32, True)])
def test_events_are_exact(frame_size, colour_per_event):
    config = small(frame_size=frame_size, n_frames=240, palette_size=5, n_distractors=(2, 3),
                   colour_per_event=colour_per_event)
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
            rgb = sc["palette"][ev["palette_index"]]
            for t in range(ev["reveal_start"], ev["reveal_stop"]):  # the mask is exactly where the cue colour is
                mask = cue_mask(sc, t)
                assert mask.sum() == sc["cue_visible"][t]
                assert (frames[t][mask] == rgb).all()
                assert not (frames[t][~mask] == rgb).all(-1).any()
    assert bins_seen == set(config.gap_bins)


@pytest.mark.parametrize("frame_size", [64, 32])
def test_generate_lossless_layout(tmp_path, frame_size):
    config = small(n_train=2, n_val=1, n_test=1, frame_size=frame_size)
    dataset = generate_long_memory(tmp_path, config, workers=1, progress=False)
    assert dataset == tmp_path / config.dataset_name()
    assert json.loads((dataset / "config.json").read_text())["hash"] == config.hash()
    check_complete(dataset, config)
    for clip in list_clips(dataset / "train") + list_clips(dataset / "test"):
        sc = load_sidecar(clip)
        expected = np.stack(list(render_frames(sc)))
        # lossless: the decoded frames are the generator's frames, bit for bit (decord: see ``decode``)
        np.testing.assert_array_equal(decode(clip) if frame_size % 64 == 0 else decode_pyav(clip), expected)
        np.testing.assert_array_equal(sc["positions"], plan_clip(config, sc["split"], sc["index"])["positions"])


def test_the_prepare_command_writes_the_configured_set(tmp_path):
    """The one way to write a data set from the command line: Hydra's data.prepare with data.generator.* keys
    (the YAML's values are the dataclass defaults, so a set is the same however it was asked for)."""
    keys = {"frame_size": 64, "n_frames": 200, "gap_bins": "[8,24,48]", "min_visible": 8, "reveal_frames": 4,
            "n_train": 2, "n_val": 1, "n_test": 1, "colour_per_event": "false", "cue_size": "[0.2,0.25]",
            "progress": "false"}
    PLUS = {"min_visible", "reveal_frames", "progress"}  # LongMemoryConfig fields the YAML leaves at their defaults
    out = subprocess.run([sys.executable, "-m", "lightning_ssmvid.data.prepare", "data=long_memory",
                          f"paths.data_dir={tmp_path}", f"paths.log_dir={tmp_path / 'logs'}", "data.clip_length=16",
                          *(f"{'+' if k in PLUS else ''}data.generator.{k}={v}" for k, v in keys.items())],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    config = small(n_train=2, n_val=1, n_test=1, cue_size=(0.2, 0.25))
    check_complete(tmp_path / config.dataset_name(), config)
    assert "2 train, 1 val videos" in out.stdout


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
    real_write = VideoWriter.write

    def failing_write(self, frame):
        frames_written["n"] += 1
        if frames_written["n"] > config.n_frames + 50:  # dies in the middle of the second clip
            raise RuntimeError("simulated crash")
        real_write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", failing_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_long_memory(tmp_path, config, workers=1, progress=False)
    dataset = tmp_path / config.dataset_name()
    train = dataset / "train"
    assert not (train / lm.MANIFEST).exists()
    assert sorted(p.name for p in train.glob("clip_*")) == ["clip_00000.json", "clip_00000.mp4", "clip_00000.npz"]
    first = all_files(train)

    monkeypatch.setattr(VideoWriter, "write", real_write)
    generate_long_memory(tmp_path, config, workers=1, progress=False)
    check_complete(dataset, config)
    after = all_files(train)
    assert all(after[name] == mtime for name, mtime in first.items()), "a complete clip was rewritten"


KILL_SCRIPT = """
import os, signal, sys
from lightning_ssmvid.data import long_memory as lm
from lightning_ssmvid.data.video_io import VideoWriter
n = {"frames": 0}
write = VideoWriter.write
def dying_write(self, frame):
    n["frames"] += 1
    if n["frames"] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    write(self, frame)
VideoWriter.write = dying_write
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


# Version 2: a valid memory probe ------------------------------------------------------------------------------------
# 64 px so decord (the data pipeline's reader) decodes the clips bit-exactly (see ``decode``)
V2 = dict(frame_size=64, n_frames=360, gap_bins=(10, 30, 60), min_visible=6, reveal_frames=4, palette_size=4,
          n_distractors=(1, 2), n_train=0, n_val=3, n_test=0)


def v2(**overrides) -> LongMemoryConfig:
    return LongMemoryConfig(**{**V2, **overrides})


def decoded_clips(tmp_path, config: LongMemoryConfig) -> list[tuple[np.ndarray, dict]]:
    """(frames (T, S, S, 3) uint8 decoded from the MP4 with decord, sidecar) of every val clip; checks losslessness."""
    dataset = generate_long_memory(tmp_path, config, workers=1, progress=False)
    clips = []
    for path in list_clips(dataset / "val"):
        frames, sc = decode(path), load_sidecar(path)
        np.testing.assert_array_equal(frames, np.stack(list(render_frames(sc))))
        clips.append((frames, sc))
    return clips


def cue_pixels(frame: np.ndarray, sc: dict, t: int) -> np.ndarray:
    """(N, 3) the frame's pixels under the cue object's visible mask at frame ``t``."""
    return frame[cue_mask(sc, t)]


def test_v2_hidden_cue_stays_put_steps_out_whole_and_is_announced(tmp_path):
    config = v2()
    n_events = 0
    for frames, sc in decoded_clips(tmp_path, config):
        assert sc["format"] == "long_memory/v2" and sc["generator_version"] == 2
        cue, occ = sc["objects"][-1], sc["occluder"]
        s, full = cue["size"], int(shape_stamp(cue["shape"], cue["size"]).sum())
        assert config.cue_size_range[0] <= s <= config.cue_size_range[1]
        assert occ["x1"] - occ["x0"] == config.occluder_width >= max(config.cue_size_range[1], config.size_range[1])
        pos, palette = sc["positions"][:, -1], np.array(sc["palette"], np.uint8)
        assert (sc["cue_colour"] == sc["cue"]["palette_index"]).all()  # without colour_per_event: one colour
        # the announce frames, read from the pixels: the band (drawn last) is all ANNOUNCE_RGB there, grey elsewhere
        band = frames[:, occ["y0"] : occ["y1"], occ["x0"] : occ["x1"]]
        dark = (band == np.array(lm.ANNOUNCE_RGB, np.uint8)).all(axis=(1, 2, 3))
        assert ((band == np.array(lm.OCCLUDER_RGB, np.uint8)).all(axis=(1, 2, 3)) | dark).all()
        assert np.flatnonzero(dark).tolist() == [ev["announce"] for ev in sc["events"]]
        for ev in sc["events"]:
            n_events += 1
            h0, h1, r = ev["hide_start"], ev["hide_end"], ev["reveal_start"]
            assert ev["announce"] == h1 == r - 1 and ev["full_start"] == r
            # motionless while hidden: y from hide_start to the reveal (inclusive), x while fully hidden
            assert (pos[h0 : r + 1, 1] == pos[h0, 1]).all() and (pos[h0 : h1 + 1, 0] == pos[h0, 0]).all()
            # the step out: at reveal_start the whole object shows, touching the band's inner edge
            assert sc["cue_visible"][r] == full and sc["cue_visible"][h1] == 0
            assert pos[r, 0] + s == occ["x0"] if occ["side"] == "right" else pos[r, 0] == occ["x1"]
            rgb = palette[ev["palette_index"]]
            is_cue = (frames[r] == rgb).all(-1)
            assert is_cue.sum() == full  # read from the decoded pixels: the whole cue, nothing else in its colour
            assert np.flatnonzero(is_cue.any(1)).tolist() == list(range(pos[h0, 1], pos[h0, 1] + s))  # same rows
            assert (sc["cue_visible"][r : ev["reveal_stop"]] == full).all()
            assert ev["reveal_stop"] - r == config.reveal_frames
        # cue_colour is the colour of the cue's visible pixels at every frame
        for t in np.flatnonzero(sc["cue_visible"]):
            assert (cue_pixels(frames[t], sc, t) == palette[sc["cue_colour"][t]]).all()
    assert n_events >= 6


def test_v2_colours_are_balanced_over_clips():
    config = v2(palette_size=4)
    K, n_bins = config.palette_size, len(config.gap_bins)
    for split in lm.SPLITS:
        for first in (0, 5):  # any palette_size consecutive clips hold every colour once
            sidecars = [plan_clip(config, split, i) for i in range(first, first + K)]
            assert sorted(sc["cue"]["palette_index"] for sc in sidecars) == list(range(K))
            assert all(sc["events"][0]["palette_index"] == sc["cue"]["palette_index"] for sc in sidecars)
    lcm = K * n_bins // math.gcd(K, n_bins)  # and any lcm consecutive clips every (colour, first gap) pair once
    pairs = [(sc["cue"]["palette_index"], sc["events"][0]["gap"])
             for sc in (plan_clip(config, "test", i) for i in range(3, 3 + lcm))]
    assert sorted(pairs) == sorted((c, g) for c in range(K) for g in config.gap_bins)


def test_v2_colour_per_event_from_mp4(tmp_path):
    config = v2(colour_per_event=True, n_frames=400, gap_bins=(10, 30), n_val=3)
    palette = np.array(make_palette(config.palette_size), np.uint8)
    several = 0
    for frames, sc in decoded_clips(tmp_path, config):
        events, colours, visible = sc["events"], sc["cue_colour"], sc["cue_visible"]
        full = int(visible.max())
        assert sc["cue"]["palette_index"] == events[0]["palette_index"] == colours[0]
        # the colour changes only at the end of a reveal window, to a different colour
        changes = np.flatnonzero(np.diff(colours)) + 1
        assert set(changes.tolist()) <= {ev["reveal_stop"] for ev in events}
        assert all(a["palette_index"] != b["palette_index"] for a, b in zip(events, events[1:]))
        if len(events) >= 3:
            several += 1
            assert len(set(colours.tolist())) >= 2
        for ev in events:
            rgb = palette[ev["palette_index"]]
            h0, r = ev["hide_start"], ev["reveal_start"]
            # the returning colour is the one shown just before hiding (decoded pixels), and at the reveal
            before = cue_pixels(frames[h0 - 1], sc, h0 - 1)
            assert len(before) > 0 and (before == rgb).all()
            assert (cue_pixels(frames[r], sc, r) == rgb).all() and len(cue_pixels(frames[r], sc, r)) == full
            # ... and was fully visible for >= min_visible frames in that colour before it started hiding
            since = changes[changes < h0].max() if (changes < h0).any() else 0
            shown = [t for t in range(since, h0) if visible[t] == full]
            assert len(shown) >= config.min_visible
            assert all((cue_pixels(frames[t], sc, t) == rgb).all() for t in shown)
    assert several >= 1


def test_v2_default_eval_splits_have_100_events_per_gap_bin():
    """Measured at the defaults (n_val = n_test = 168 clips): val 441/261/101 and test 380/273/106 events in the
    bins 60/240/960; 144 clips would give 89 in the 960 bin. The test plans the val split only (no writing)."""
    config = LongMemoryConfig()
    assert config.n_val == config.n_test and config.n_val % 24 == 0
    counts = collections.Counter(ev["gap_bin"] for i in range(config.n_val)
                                 for ev in plan_clip(config, "val", i)["events"])
    assert set(counts) == set(config.gap_bins) and min(counts.values()) >= 100, counts


def test_v2_config_fields_hash_and_parse():
    assert small(cue_size=(0.2, 0.25)).hash() != small().hash() != small(colour_per_event=True).hash()
    assert small(colour_per_event=1).colour_per_event is True and small(colour_per_event=1).hash() == small(
        colour_per_event=True).hash()
    with pytest.raises(ValueError, match="colour_per_event takes a bool"):
        small(colour_per_event=2)
    with pytest.raises(ValueError, match="cue_size"):
        small(cue_size=(0.3, 0.2))
    # the Hydra config's generator block is the default config
    from omegaconf import OmegaConf

    generator = OmegaConf.to_container(OmegaConf.load(REPO / "conf/data/long_memory.yaml").generator)
    generator.pop("_target_")
    assert LongMemory(**generator).config().hash() == LongMemoryConfig().hash()
