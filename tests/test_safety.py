"""Opening files cannot run code: hostile pickles and stored configs naming foreign targets are refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from lightning_ssmvid.model import load_model
from lightning_ssmvid.train import train
from lightning_ssmvid.utils.checkpoints import check_targets, read_checkpoint
from lightning_ssmvid.utils.config import CONFIG_DIR
from lightning_ssmvid.utils.errors import UserError, user_error_in
from tests.helpers import compose_config

TINY = ["experiment=smoke", "trainer.max_epochs=1", "logger=none", "data.samples_per_epoch=8",
        "callbacks.evaluation.n_clips=0"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("safety")
    try:
        train(compose_config(out, data_dir, *TINY))
    finally:
        GlobalHydra.instance().clear()
    return out / "run" / "checkpoints" / "last.ckpt"


class Payload:
    """A pickle that creates a file when it is opened with weights_only=False."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "run_config": {"model": {}}, "x": Payload(marker)}, path)
    with pytest.raises(UserError, match="evil.ckpt holds objects other than tensors"):
        load_model(str(path))
    assert not marker.exists()


def test_a_stored_config_naming_a_foreign_target_is_refused(ckpt, tmp_path):
    marker = tmp_path / "created"
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["run_config"]["model"]["optimizer"] = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
    hostile = tmp_path / "hostile.ckpt"
    torch.save(checkpoint, hostile)
    with pytest.raises(UserError, match="names _target_ 'builtins.open' at model.optimizer"):
        load_model(str(hostile))
    assert not marker.exists()
    check_targets(torch.load(ckpt, weights_only=True)["run_config"], "ours")  # our own run config passes


@pytest.mark.parametrize("damage", ["truncated", "text", "empty"])
def test_a_damaged_checkpoint_is_named(ckpt, tmp_path, damage):
    bad = tmp_path / f"{damage}.ckpt"
    data = ckpt.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "text": b"not a checkpoint\n", "empty": b""}[damage])
    with pytest.raises(UserError, match=f"{damage}.ckpt is not a readable checkpoint.*delete it or pass another"):
        read_checkpoint(bad)


def test_our_checkpoint_loads_with_weights_only(ckpt):
    model = load_model(str(ckpt))
    assert model.run_config["name"] == "smoke"


@pytest.mark.parametrize("module", ["generate", "evaluate", "train"])
def test_the_cli_prints_one_line_and_exits_non_zero(tmp_path, module):
    bad = tmp_path / "half.ckpt"
    bad.write_bytes(b"PK\x03\x04 half written")
    args = {"generate": [f"ckpt_path={bad}", "frames=4"], "evaluate": [f"ckpt_path={bad}"],
            "train": ["experiment=smoke", "logger=none", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'run'}",
                      f"paths.data_dir={tmp_path / 'data'}"]}[module]
    done = subprocess.run([sys.executable, "-m", f"lightning_ssmvid.{module}", *args], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 2
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    if module == "train":  # training logs a few lines (seed, data) before it opens the checkpoint
        lines = lines[-1:]
    assert len(lines) == 1 and "half.ckpt is not a readable checkpoint" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


BAD_SIZES = [
    ("data.clip_length=1", "data.clip_length=1: must be an integer >= 2"),
    ("data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
    ("data.frame_size=0", "data.frame_size=0: must be an integer >= 8"),
    ("core.d_model=-1", "core.d_model=-1: must be a positive integer"),
    ("stages=two_stage stages.codec_training.steps=0", "stages.codec_training.steps=0: must be an integer >= 1"),
    ("model.train_snap=1", "model.train_snap=1: must be 0 (off) or the number of centroids (>= 2)"),
    ("model.train_snap=8", "model.train_snap=8 snaps the two-stage latents: it needs stages=two_stage"),
    ("model.train_snap_pooled=1", "model.train_snap_pooled=1: must be 0 (pooled dims as they are) or the number"),
    ("data=video_folder", "data.root is not set: pass data.root=DIR, the folder of your videos"),
    ("data=video_folder data.root=/no/such/videos", "data.root: data folder /no/such/videos does not exist"),
]


def test_a_bad_size_on_the_command_line_is_one_line_before_any_work(tmp_path):
    override, message = BAD_SIZES[0]
    done = subprocess.run([sys.executable, "-m", "lightning_ssmvid.train", "experiment=smoke", "logger=none",
                           *override.split(), f"hydra.run.dir={tmp_path / 'run'}",
                           f"paths.data_dir={tmp_path / 'data'}"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: {message}" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("override, message", BAD_SIZES[1:])
def test_bad_sizes_are_user_errors_before_any_work(tmp_path, override, message):
    # in-process (what the CLI turns into one line, above): a fresh interpreter per case costs ~4 s of imports
    data_dir = tmp_path / "data"
    try:
        with pytest.raises(Exception) as caught:
            train(compose_config(tmp_path, str(data_dir), "experiment=smoke", "logger=none", *override.split()))
    finally:
        GlobalHydra.instance().clear()
    cause = user_error_in(caught.value)
    assert cause is not None and message in str(cause), repr(caught.value)
    assert not data_dir.exists()  # nothing was generated before the error


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_with_a_video_folder(compose_cfg, tmp_path, experiment):
    from hydra.utils import instantiate

    cfg = compose_cfg(f"experiment={experiment}", "data=video_folder", f"data.root={tmp_path}")
    datamodule = instantiate(cfg.data)
    assert datamodule.generator is None and str(datamodule.dataset_dir) == str(tmp_path)


def test_an_experiment_composes_with_your_own_video_folder(compose_cfg, tmp_path):
    from hydra.utils import instantiate

    from lightning_ssmvid.data.video_io import write_video

    for split in ("train", "val"):
        write_video(tmp_path / "videos" / split / "a.mp4", (torch.randint(0, 255, (24, 32, 3), dtype=torch.uint8)
                                                            .numpy() for _ in range(24)), fps=24)
    cfg = compose_cfg("experiment=smoke", "data=video_folder", f"data.root={tmp_path / 'videos'}")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.train_set.videos) == 1 and datamodule.generator is None
