"""Long-video generation from a checkpoint: a tiny smoke model trained through the real configs, then rolled out.

Output format checked here: the MP4 holds ``context + frames`` frames (the K real context frames with a red border,
then the N generated ones); ``side_by_side`` doubles the width (real | generated, black once the real video ends).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from lightning_ssmvid.data.video_io import open_video, read_frames, video_size
from lightning_ssmvid.generate import DataUnavailableError, generate_video, load_checkpoint, run
from lightning_ssmvid.metrics.persistence import RolloutPersistence, rollout_bands
from lightning_ssmvid.train import train
from lightning_ssmvid.utils.config import compose_config as compose_command
from lightning_ssmvid.utils.errors import UserError
from tests.helpers import compose_config

SMOKE = ["experiment=smoke", "trainer.max_epochs=1", "logger=none", "data.samples_per_epoch=8"]
CONTEXT, SIZE = 16, 32  # the CLI's default context; the smoke experiment's frame size


def train_tiny(out: Path, data_dir: str, *overrides: str) -> Path:
    """Train the smoke model for one epoch (as tests/conftest.py composes configs) -> its last.ckpt."""
    cfg = compose_config(out, data_dir, *SMOKE, *overrides)
    try:
        train(cfg)
    finally:
        GlobalHydra.instance().clear()
    ckpt = out / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


@pytest.fixture(scope="module")
def smoke_ckpt(tmp_path_factory, data_dir) -> Path:
    return train_tiny(tmp_path_factory.mktemp("generate"), data_dir)


def generate(ckpt: Path, *overrides: str) -> dict:
    """``python -m lightning_ssmvid.generate ckpt_path=CKPT OVERRIDES``, composed from conf/generate.yaml."""
    return run(compose_command("generate", f"ckpt_path={ckpt}", "progress=false", *overrides))


def decoded(path: Path) -> tuple[int, tuple[int, ...]]:
    """(frames decord reads, (H, W, 3) from the header); the last frame must decode too."""
    reader = open_video(path)
    (height, width), n = video_size(path), len(reader)
    assert read_frames(reader, n - 1, 1).shape[0] == 1
    return n, (height, width, 3)


def test_cli_writes_context_plus_generated_frames(smoke_ckpt):
    result = generate(smoke_ckpt, "frames=300", "steps=4", "temperature=0.9")  # sampling settings: recorded
    out = Path(result["path"])
    assert out == smoke_ckpt.parent.parent / "generated" / "clip_00000_300f.mp4"  # default: RUN/generated/
    assert decoded(out) == (CONTEXT + 300, (SIZE, SIZE, 3))
    assert result["frames"] == 300 and result["written"] == CONTEXT + 300
    assert result["frames_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert not list(out.parent.glob(".*partial*")), "the temporary file was left behind"
    record = json.loads(out.with_suffix(".json").read_text())  # the rollout's persistence, beside the video
    assert set(record["persistence"]) >= {"foreground_ratio_h1-16", "motion_ratio_h17-128", "foreground_ratio_h129-300"}
    assert record["seed"] == 0 and record["frames"] == 300
    assert record["sampling"] == {"rollout_noise": 0.0, "reencode": False, "temperature": 0.9, "steps": 4}
    assert [frames for frames, _ in record["rss_curve"]] == [300]
    assert "scene" not in record  # bouncing squares have no long-memory sidecar
    assert set(record["references"]) == {"real", "codec", "copy_last", "one_step"}  # the same measures' references
    real = record["references"]["real"]  # the metric's ceiling: the real video's frames after the context
    assert real["frames"] == 48 - CONTEXT and set(real) >= {"foreground_ratio_h1-16", "motion_ratio_h17-32"}
    assert "foreground_ratio_h129-300" not in real  # the real video ends before that band
    reader = open_video(Path(record["source"]), SIZE)
    frames = read_frames(reader, 0, 48, 1, SIZE).float() / 255
    by_hand = RolloutPersistence(frames[:CONTEXT], rollout_bands(300))
    for frame in frames[CONTEXT:]:
        by_hand.update(frame)
    assert real["foreground_ratio_h17-32"] == pytest.approx(by_hand.summary()["foreground_ratio_h17-32"])
    held = record["references"]["copy_last"]  # the last context frame held: foreground of that frame, no motion
    assert held["frames"] == 48 - CONTEXT and held["motion_ratio_h1-16"] == 0.0
    model = load_checkpoint(smoke_ckpt)
    with torch.no_grad():
        codec = torch.sigmoid(model.codec.decode(model.codec.encode(frames[CONTEXT:])))
    by_hand = RolloutPersistence(frames[:CONTEXT], rollout_bands(300))
    for frame in codec:
        by_hand.update(frame)
    assert record["references"]["codec"]["foreground_ratio_h1-16"] == pytest.approx(
        by_hand.summary()["foreground_ratio_h1-16"], rel=1e-4)


def test_strip_draws_real_and_generated_frames_at_each_horizon(smoke_ckpt, tmp_path):
    from lightning_ssmvid import strip

    out = strip.run(compose_command("strip", f"ckpt_path={smoke_ckpt}", "horizons=[1,8,40]",
                                    f"out={tmp_path / 's.png'}"))
    assert out.stat().st_size > 1000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(json.loads(out.with_suffix(".json").read_text())["persistence"]) >= {"motion_ratio_h17-40"}


def test_a_stochastic_head_rolls_out_the_same_video_for_a_seed(tmp_path, data_dir):
    ckpt = train_tiny(tmp_path, data_dir, "head=flow", "head.width=16", "head.depth=1", "head.steps=2",
                      "model.context_noise=0.2", "callbacks.evaluation.n_clips=0")
    model = load_checkpoint(ckpt)
    context = torch.rand(1, 4, 3, SIZE, SIZE)
    first, again, other = (model.generate(context, 5, seed=s) for s in (1, 1, 2))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_side_by_side_marks_context_and_blacks_out_past_the_real_end(smoke_ckpt, tmp_path):
    out = tmp_path / "sbs.mp4"
    n = 60  # the smoke videos have 48 frames: real frames 16..47, then black
    generate(smoke_ckpt, f"frames={n}", "context=8", "split=train", "video=1", "side_by_side=true", f"out={out}",
             "fps=12")
    assert decoded(out) == (8 + n, (SIZE, 2 * SIZE, 3))
    reader = open_video(out)
    first, last = reader[0].asnumpy(), reader[len(reader) - 1].asnumpy()  # 2*SIZE = 64 wide: decoded as is
    border = first[0, 4:-4].astype(int)  # top row of a context frame: red
    assert (border[:, 0] > 180).all() and (border[:, 1:] < 80).all()
    assert last[:, :SIZE].mean() < 8  # the real video ended: black on the left


def test_memory_stays_bounded(smoke_ckpt, tmp_path):
    """Peak RSS while generating 1,000 frames exceeds that of 100 by far less than the frames would take to keep.

    Keeping the 900 extra generated frames (3x32x32 float32) would add over 10 MiB; we allow 4 MiB of noise.
    """
    model = load_checkpoint(smoke_ckpt)
    context = torch.randint(0, 256, (CONTEXT, 3, SIZE, SIZE), dtype=torch.uint8)
    run = lambda n: generate_video(model, context, n, tmp_path / f"{n}.mp4", progress=False)  # noqa: E731
    run(100)  # warm-up: allocator pools, encoder
    short, long = run(100), run(1000)
    assert decoded(tmp_path / "1000.mp4")[0] == CONTEXT + 1000
    growth = long["peak_rss_mb"] - short["peak_rss_mb"]
    assert growth < 4.0, f"RSS grew {growth:.1f} MiB between 100 and 1000 generated frames"


def test_a_diverged_rollout_is_flagged_written_black_and_not_scored(smoke_ckpt, tmp_path, monkeypatch):
    from contextlib import closing

    from lightning_ssmvid import generate as generate_module

    real_rollout = generate_module.streamed_rollout

    def diverging(*args, **kwargs):  # the model's own frames until frame 17, NaN after (as a blown-up latent gives)
        with closing(real_rollout(*args, **kwargs)) as frames:
            for i, frame in enumerate(frames):
                yield frame if i < 16 else torch.full_like(frame, float("nan"))

    monkeypatch.setattr(generate_module, "streamed_rollout", diverging)
    context = torch.randint(0, 256, (CONTEXT, 3, SIZE, SIZE), dtype=torch.uint8)
    result = generate_video(load_checkpoint(smoke_ckpt), context, 40, tmp_path / "d.mp4", progress=False)
    assert result["nonfinite_from"] == 17 and result["written"] == CONTEXT + 40
    ratios = result["persistence"]
    assert ratios["foreground_ratio_h1-16"] == ratios["foreground_ratio_h1-16"]  # scored
    assert ratios["foreground_ratio_h17-40"] != ratios["foreground_ratio_h17-40"]  # NaN, not an empty rollout's 0
    reader = open_video(tmp_path / "d.mp4")
    assert reader[len(reader) - 1].asnumpy().mean() < 8  # black


def test_rollout_table_tabulates_settings_over_runs(smoke_ckpt, tmp_path, monkeypatch):
    import sys

    from lightning_ssmvid import rollout_table

    monkeypatch.setattr(sys, "argv", ["rollout_table", "--runs", str(smoke_ckpt.parent.parent), "--settings",
                                      "temperature=1", "temperature=0 steps=2 snap=8", "--videos", "0", "1",
                                      "--frames", "20", "--out", str(tmp_path)])
    rollout_table.main()
    rows = json.loads((tmp_path / "rollouts.json").read_text())
    snapped = "temperature=0 steps=2 snap=8"
    assert [(r["setting"], r["video"]) for r in rows] == [("temperature=1", 0), ("temperature=1", 1),
                                                         (snapped, 0), (snapped, 1)]
    table = (tmp_path / "rollouts.md").read_text().splitlines()
    assert len(table) == 11 and table[4].startswith("| temperature=1 | 1 |") and "motion_ratio_h17-20" in table[2]
    assert table[2].endswith("| objects kept (0.5-2.0x) and moving (>= 0.3x) in every band | occluder kept (>= 0.8) "
                             "in the last band | diverged (NaN/inf) |") and table[4].endswith("| 0 of 2 |")
    assert table[6].split(" | ")[-3] == "2 of 2"  # the real video keeps its objects and their motion
    assert table[6].startswith("| the real video | – |") and rows[0]["references"]["real"]["frames"] == 20
    assert table[7].startswith("| the codec's reconstruction of it | – |")
    assert table[8].startswith("| the last context frame held (copy-last) | – |")
    assert table[9].startswith("| the model's one-step draws of it (teacher-forced) | – |")
    snapped_row = f"| the codec's reconstruction, each latent snapped onto the codebook (snap), {snapped} |"
    assert table[10].startswith(snapped_row)
    assert not (tmp_path / "last.mp4").exists()

    def no_rollout(*args, **kwargs):
        raise AssertionError("--merge must not roll anything out")

    monkeypatch.setattr(rollout_table, "roll_out", no_rollout)
    monkeypatch.setattr(sys, "argv", ["rollout_table", "--merge", str(tmp_path / "rollouts.json"), "--frames", "20",
                                      "--out", str(tmp_path / "merged")])
    rollout_table.main()  # an earlier table's rows, tabulated again: the same table
    assert (tmp_path / "merged" / "rollouts.md").read_text().splitlines() == table
    assert json.loads((tmp_path / "merged" / "rollouts.json").read_text()) == rows
    monkeypatch.setattr(sys, "argv", ["rollout_table", "--merge", str(tmp_path / "nothing.json")])
    with pytest.raises(SystemExit, match="not a readable rollouts.json"):
        rollout_table.main()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="checkpoint .*no.ckpt does not exist"):
        generate(tmp_path / "no.ckpt", "frames=4")


def test_bad_video_index_lists_the_range(smoke_ckpt):
    with pytest.raises(IndexError, match="out of range"):
        generate(smoke_ckpt, "frames=4", "video=999")


def test_context_video_works_after_the_data_folder_is_deleted(tmp_path):
    data = tmp_path / "data"
    ckpt = train_tiny(tmp_path, str(data), "data.generator.n_train=2", "data.generator.n_val=1")
    source = next(data.rglob("*.mp4"))
    video = shutil.copy(source, tmp_path / "my_video.mp4")
    shutil.rmtree(data)

    with pytest.raises(DataUnavailableError, match="context_video="):
        generate(ckpt, "frames=4")
    result = generate(ckpt, "frames=20", "context=4", f"context_video={video}", f"out={tmp_path / 'g.mp4'}")
    assert decoded(Path(result["path"])) == (4 + 20, (SIZE, SIZE, 3))
    assert not data.exists(), "generation must not re-create the deleted data set"


def test_a_rollout_keeps_its_objects_only_inside_the_bands_in_every_band():
    from lightning_ssmvid.rollout_table import keeps_objects

    kept = {"foreground_ratio_h1-16": 0.5, "motion_ratio_h1-16": 0.3, "foreground_ratio_h17-128": 2.0,
            "motion_ratio_h17-128": 5.0, "context_foreground": 9.0}
    assert keeps_objects(kept)
    for key, value in [("foreground_ratio_h17-128", 2.01), ("foreground_ratio_h1-16", 0.49),
                       ("motion_ratio_h1-16", 0.29), ("motion_ratio_h17-128", float("nan")),
                       ("foreground_ratio_h1-16", None)]:  # None: a band json wrote as null
        assert not keeps_objects({**kept, key: value}), key
