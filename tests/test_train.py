"""End-to-end training through the real configs: every experiment, the smoke run's outputs, resume, bad names."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import open_dict

from lightning_ssmvid.train import train
from lightning_ssmvid.utils.config import PROJECT_ROOT
from tests.helpers import LONG_MEMORY_TINY, shrink_data

EXPERIMENTS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(compose_cfg, experiment):
    cfg = compose_cfg(f"experiment={experiment}", "trainer.fast_dev_run=true", "logger=csv")
    shrink_data(cfg)
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert "val/loss" in metrics


def test_smoke_writes_checkpoint_csv_wandb_and_summary(compose_cfg):
    cfg = compose_cfg("experiment=smoke", "trainer.max_epochs=2", "data.samples_per_epoch=16")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    assert any(row.get("val/loss") for row in rows) and any(row.get("train/loss") for row in rows)
    assert list((run / "wandb").glob("offline-run-*")), "no offline W&B run was written"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["core"] == "gru" and summary["name"] == "smoke"
    assert summary["epochs"] == 2 and summary["params"]["core"] > 0
    assert summary["best"]["val/loss"] <= summary["final"]["val/loss"]
    assert summary["train/frames_per_s"] > 0


def test_resume_matches_uninterrupted(compose_cfg, tmp_path):
    common = ["experiment=smoke", "logger=none", "data.samples_per_epoch=16", "seed=7"]
    full_cfg = compose_cfg(*common, "trainer.max_epochs=2")
    full = train(full_cfg)
    full_weights = torch.load(Path(full_cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert full_weights["epoch"] == 1  # last.ckpt is the last epoch even when val/loss got worse (Lightning skips it)

    first_cfg = compose_cfg(*common, "trainer.max_epochs=1")
    with open_dict(first_cfg):
        first_cfg.paths.output_dir = str(tmp_path / "first")
    train(first_cfg)
    resumed_cfg = compose_cfg(*common, "trainer.max_epochs=2",
                              f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}")
    with open_dict(resumed_cfg):
        resumed_cfg.paths.output_dir = str(tmp_path / "resumed")
    resumed = train(resumed_cfg)
    resumed_weights = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)

    for key, value in full_weights["state_dict"].items():
        torch.testing.assert_close(resumed_weights["state_dict"][key], value, rtol=1e-6, atol=1e-7)
    assert resumed["val/loss"] == pytest.approx(full["val/loss"], rel=1e-5)
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["epochs"] == 2


def test_unknown_experiment_lists_valid_names(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="smoke"):
        compose_cfg("experiment=no_such_experiment")


def test_unknown_core_lists_valid_names(compose_cfg):
    cfg = compose_cfg("experiment=smoke", "core.name=no_such_core", "trainer.fast_dev_run=true", "logger=none")
    with pytest.raises(Exception, match="valid cores: .*gru.*lstm"):
        train(cfg)


def test_wrong_config_key_is_rejected(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        compose_cfg("experiment=smoke", "trainer.no_such_key=1")


@pytest.mark.parametrize("sampling", ["stream", "random"])
def test_resume_mid_epoch_matches_uninterrupted(compose_cfg, tmp_path, sampling):
    """A run killed mid-epoch (checkpoint at step 3) and resumed ends exactly like an uninterrupted one."""

    def run(out: str, ckpt_path: str | None = None) -> Path:
        cfg = compose_cfg(*LONG_MEMORY_TINY, "trainer.max_steps=7", "trainer.max_epochs=5", f"data.sampling={sampling}",
                          "data.samples_per_epoch=16", "callbacks.evaluation.n_clips=0",
                          "+callbacks.model_checkpoint.every_n_train_steps=3",
                          "callbacks.model_checkpoint.monitor=null", "callbacks.model_checkpoint.save_top_k=-1",
                          "callbacks.model_checkpoint.filename='step{step}'",
                          f"ckpt_path={ckpt_path}" if ckpt_path else "ckpt_path=null")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / out)
        train(cfg)
        return tmp_path / out / "checkpoints"

    full_dir = run("full")
    mid_epoch = full_dir / "step3.ckpt"
    assert mid_epoch.is_file()
    resumed_dir = run("resumed", ckpt_path=str(mid_epoch))
    full, resumed = (torch.load(d / "step6.ckpt", weights_only=False) for d in (full_dir, resumed_dir))
    assert full["global_step"] == resumed["global_step"] == 6
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-6, atol=1e-7)
    (full_state,), (resumed_state,) = full["stream_state_by_rank"], resumed["stream_state_by_rank"]
    assert (full_state is None) == (sampling == "random")
    for key, value in (full_state or {}).items():
        torch.testing.assert_close(resumed_state[key], value, rtol=1e-6, atol=1e-7)


def test_a_rerun_in_the_same_run_folder_resumes_from_its_last_checkpoint(compose_cfg, caplog):
    """What a requeued SLURM job does: same folder, no ckpt_path; it goes on instead of starting over."""
    common = ["experiment=smoke", "logger=none", "data.samples_per_epoch=16", "callbacks.evaluation.n_clips=0"]
    train(compose_cfg(*common, "trainer.max_epochs=1"))
    with caplog.at_level(logging.INFO, logger="lightning_ssmvid.train"):
        train(compose_cfg(*common, "trainer.max_epochs=1", "auto_resume=false"))
        assert "resuming from" not in caplog.text
        cfg = compose_cfg(*common, "trainer.max_epochs=2")
        train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert f"resuming from {last}" in caplog.text
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * 2  # 16 clips / batch 8 per epoch
    with pytest.raises(ValueError, match="other settings .*model"):  # another run's checkpoint is never resumed
        train(compose_cfg(*common, "trainer.max_epochs=3", "model.optimizer.lr=0.5"))


@pytest.mark.parametrize("core", [p.stem for p in (PROJECT_ROOT / "conf" / "core").glob("*.yaml")])
def test_bf16_mixed_precision_with_activation_checkpointing_trains_every_core(compose_cfg, core):
    cfg = compose_cfg("experiment=smoke", f"core={core}", "core.d_model=64", "trainer.fast_dev_run=true",
                      "trainer.precision=bf16-mixed", "model.activation_checkpointing=true", "logger=none")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor([metrics["train/loss"], metrics["val/loss"]])).all()


def test_more_devices_than_exist_is_lightnings_error_with_a_hint(compose_cfg):
    cfg = compose_cfg("experiment=smoke", "trainer=ddp", "trainer.devices=64", "logger=none")
    with pytest.raises(MisconfigurationException, match="Hint: .*trainer.accelerator=cpu"):
        train(cfg)


def test_gradient_accumulation_with_a_carried_stream_state(compose_cfg):
    cfg = compose_cfg(*LONG_MEMORY_TINY, "data.sampling=stream", "trainer.accumulate_grad_batches=2",
                      "trainer.max_epochs=1", "trainer.limit_train_batches=4", "callbacks.evaluation.n_clips=0")
    train(cfg)
    checkpoint = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2  # 4 batches, one optimizer step per 2
