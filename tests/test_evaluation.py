"""Rollout evaluation wired through training and `evaluate`, and identical over 1 or 2 (simulated) ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from lightning_ssmvid.evaluate import evaluate
from lightning_ssmvid.evaluation import evaluate_clips
from lightning_ssmvid.model import load_model
from lightning_ssmvid.train import train
from tests.conftest import compose_config
from tests.test_train import LONG_MEMORY_TINY

EVAL = ["callbacks.evaluation.n_clips=2", "callbacks.evaluation.context=8", "callbacks.evaluation.horizon=24",
        "callbacks.evaluation.max_events_per_clip=2", "data.generator.n_val=2", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("eval_run")
    train(compose_config(out, data_dir, *LONG_MEMORY_TINY, *EVAL, "logger=csv"))
    GlobalHydra.instance().clear()
    return out / "run"


def test_training_logs_rollout_metrics_and_recall(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    final = summary["final"]
    for key in ("val/psnr_h1-16", "val/ssim_h1-16", "val/flicker_ratio", "val/warp_error_gen", "val/recall_chance",
                "val/recall_codec_ceiling"):
        assert key in final, key
    assert final["val/recall_chance"] == pytest.approx(1 / 8)
    events = sum(v for k, v in final.items() if k.startswith("val/recall_events_gap"))
    assert events > 0 and 0 <= final["val/recall"] <= 1
    curves = json.loads((trained_run / "curves.json").read_text())
    assert len(curves["psnr"]) == 24
    assert list((trained_run / "samples").rglob("sample_0.mp4"))


def test_two_simulated_ranks_equal_one_process(trained_run):
    model = load_model(str(trained_run / "checkpoints" / "last.ckpt"))
    data_root = Path(model.run_config["data"]["root"])
    videos = sorted(next(data_root.glob("long_memory-*")).glob("val/*.mp4"))
    kwargs = dict(context=8, horizon=24, gap_bins=(10, 20), max_events_per_clip=2, fvd_frames=0)
    one = evaluate_clips(model, videos, 32, **kwargs)
    ranks = [evaluate_clips(model, videos, 32, rank=r, world_size=2, **kwargs) for r in range(2)]
    for metric, part0, part1 in zip(one.metrics(), ranks[0].metrics(), ranks[1].metrics()):
        part0.merge_state(part1)
        expected, merged = metric.compute(), part0.compute()
        if isinstance(expected, dict):
            for key in expected:
                torch.testing.assert_close(merged[key], expected[key], equal_nan=True)
        else:
            torch.testing.assert_close(merged, expected)


def test_evaluate_a_checkpoint_on_the_test_split(trained_run):
    metrics = evaluate(str(trained_run / "checkpoints" / "last.ckpt"), ["data.val_split=test"])
    assert "val/loss" in metrics and "val/psnr_h1-16" in metrics
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["evaluation"]["test"]["metrics"]["val/loss"] == pytest.approx(metrics["val/loss"])
    assert (trained_run / "eval_test" / "curves.json").is_file()


def test_evaluate_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(str(tmp_path / "nope.ckpt"))

