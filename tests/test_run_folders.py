"""Run folders never shared by two runs; a resumed run keeps its metrics history and its W&B run."""

import csv
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

from lightning_ssmvid.train import train
from lightning_ssmvid.utils.config import PROJECT_ROOT, new_run_folder


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    with ProcessPoolExecutor(4) as pool:
        folders = list(pool.map(new_run_folder, [str(tmp_path)] * 8))
    assert len(set(folders)) == 8 and all(Path(f).is_dir() for f in folders)
    assert all(Path(f).parent == tmp_path for f in folders)


def test_commands_that_write_into_a_run_compose_no_run_folder():
    """evaluate and data.prepare make no run folder of their own: composing them never resolves train's run-folder
    resolver, which creates a folder each time (a merge over it used to leave two empty ones per command)."""
    from omegaconf import OmegaConf

    from lightning_ssmvid.utils.config import compose_config

    made = []
    OmegaConf.clear_resolver("new_run_folder")
    try:
        OmegaConf.register_new_resolver("new_run_folder", lambda parent: made.append(parent) or parent, use_cache=True)
        for name in ("evaluate", "prepare"):
            compose_config(name, "ckpt_path=x") if name == "evaluate" else compose_config(name)
        assert made == []
    finally:
        OmegaConf.clear_resolver("new_run_folder")
        OmegaConf.register_new_resolver("new_run_folder", new_run_folder, use_cache=True)


@pytest.mark.slow
def test_two_simultaneous_cli_runs_write_two_folders(tmp_path):
    args = [sys.executable, "-m", "lightning_ssmvid.train", "experiment=smoke", "trainer.fast_dev_run=true",
            "logger=none", "callbacks.evaluation.n_clips=0", "data.samples_per_epoch=8",
            f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}"]
    prepare = subprocess.run([sys.executable, "-m", "lightning_ssmvid.data.prepare", *args[3:]], capture_output=True,
                             text=True, cwd=PROJECT_ROOT)  # the data set first, so both runs start at once
    assert prepare.returncode == 0, prepare.stderr[-2000:]
    procs = [subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    # (only training runs have a config.yaml)
    runs = [run for run in (tmp_path / "logs" / "smoke" / "runs").iterdir() if (run / "config.yaml").is_file()]
    assert len(runs) == 2
    assert all((run / "summary.json").is_file() for run in runs)


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_resume_appends_to_metrics_csv_and_continues_the_wandb_run(compose_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    common = ["experiment=smoke", "logger=default", "data.samples_per_epoch=16", "callbacks.evaluation.n_clips=0",
              "trainer.log_every_n_steps=1"]
    train(compose_cfg(*common, "trainer.max_epochs=1"))
    cfg = compose_cfg(*common, "trainer.max_epochs=2")
    metrics = Path(cfg.paths.output_dir) / "csv" / "metrics.csv"
    first = rows(metrics)
    train(cfg)  # the same run folder: resumes from its last.ckpt
    both = rows(metrics)
    assert both[: len(first)] == first, "the first run's rows are kept, in order"
    epochs = {row["epoch"] for row in both if row.get("epoch")}
    assert {"0", "1"} <= epochs
    run_id = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["wandb_run_id"]
    offline = sorted(p.name for p in (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert run_id and len(offline) == 2 and all(name.endswith(f"-{run_id}") for name in offline), offline


def test_starting_over_in_a_folder_with_history_keeps_the_old_metrics(compose_cfg):
    common = ["experiment=smoke", "logger=csv", "data.samples_per_epoch=16", "callbacks.evaluation.n_clips=0",
              "trainer.max_epochs=1", "trainer.log_every_n_steps=1"]
    cfg = compose_cfg(*common)
    train(cfg)
    folder = Path(cfg.paths.output_dir) / "csv"
    old = (folder / "metrics.csv").read_text()
    train(compose_cfg(*common, "auto_resume=false"))
    assert (folder / "metrics.1.csv").read_text() == old and (folder / "metrics.csv").is_file()
    assert os.path.getsize(folder / "metrics.csv") > 0
