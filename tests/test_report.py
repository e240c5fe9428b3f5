"""The comparison table groups runs' summary.json files by experiment (newest run per seed) and never invents values."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_ssmvid.report import find_runs, main


def write_summary(root: Path, name: str, time: str, seed: int, recall60: float, status: str = "finished") -> None:
    run = root / name / "runs" / time
    run.mkdir(parents=True)
    summary = {"name": name, "core": name.split("_")[0], "seed": seed, "status": status, "written_at": len(time),
               "params": {"core": 1000, "codec": 10, "total": 1010},
               "final": {"val/recall_gap60": recall60, "val/recall_chance": 0.125, "val/psnr_h1-16": 20.0,
                         "val/ssim_h1-16": 0.5, "val/psnr_h17-64": 15.0, "val/ssim_h17-64": 0.4},
               "train/frames_per_s": 1000.0, "peak_rss_mb": 500.0}
    (run / "summary.json").write_text(json.dumps(summary))


def test_newest_finished_run_per_seed_counts(tmp_path):
    write_summary(tmp_path, "gru_long", "2026-01-01_00-00-00", seed=1, recall60=0.1)
    write_summary(tmp_path, "gru_long", "2026-01-02_00-00-00+", seed=1, recall60=0.3)  # written later: replaces it
    write_summary(tmp_path, "gru_long", "2026-01-01_00-00-00x", seed=2, recall60=0.5)
    write_summary(tmp_path, "gru_long", "2026-01-03_00-00-00", seed=3, recall60=0.9, status="running")
    runs = find_runs(tmp_path)
    assert sorted(s["final"]["val/recall_gap60"] for s in runs["gru_long"]) == [0.3, 0.5]


def test_table_has_one_row_per_experiment_with_mean_and_std(tmp_path):
    logs, out = tmp_path / "logs", tmp_path / "reports"
    write_summary(logs, "gru_long", "t1", seed=1, recall60=0.25)
    write_summary(logs, "gru_long", "t2", seed=2, recall60=0.75)
    write_summary(logs, "mamba_long", "t1", seed=1, recall60=1.0)
    write_summary(logs, "smoke", "t1", seed=1, recall60=0.0)  # not a protocol experiment: not in the comparison
    path = main(["--logs", str(logs), "--bench", str(tmp_path / "none"), "--out", str(out)])
    table = path.read_text()
    assert "| gru_long | gru | 2 |" in table and "| mamba_long | mamba | 1 |" in table and "smoke" not in table
    assert "50.0 ± 35.4%" in table  # mean and sample std of 25% and 75%
    assert "n/a (no I3D weights)" in table
    assert (out / "recall_vs_gap.png").is_file()
