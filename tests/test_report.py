"""The comparison table groups runs' summary.json files by experiment (newest run per seed) and never invents values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_ssmvid.report import find_runs, main


def write_summary(root: Path, name: str, time: str, seed: int, recall60: float, status: str = "finished",
                  arm: str | None = None) -> None:
    run = root / name / "runs" / time
    run.mkdir(parents=True)
    summary = {"name": name, "core": name.split("_")[0], "seed": seed, "status": status, "written_at": len(time),
               "arm": arm,
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


def test_table_has_one_row_per_experiment_and_arm_with_mean_and_ci(tmp_path):
    logs, out = tmp_path / "logs", tmp_path / "reports"
    for seed, recall in ((1, 0.25), (2, 0.75), (3, 0.5)):
        write_summary(logs, "gru_long", f"t{seed}", seed=seed, recall60=recall, arm="cue")
    write_summary(logs, "gru_long", "t9", seed=1, recall60=0.125, arm="generative")  # another arm: its own row
    write_summary(logs, "mamba_long", "t1", seed=1, recall60=1.0, arm="cue")
    write_summary(logs, "smoke", "t1", seed=1, recall60=0.0)  # not a protocol experiment: not in the comparison
    path = main(["--logs", str(logs), "--bench", str(tmp_path / "none"), "--out", str(out)])
    table = path.read_text()
    assert "| gru_long | cue | gru | 3 |" in table and "| gru_long | generative | gru | 1 |" in table
    assert "| mamba_long | cue | mamba | 1 |" in table and "smoke" not in table
    assert "50.0 ± 62.1% (" in table  # mean and 95% t half-width (4.303 x 0.25 / sqrt(3)) of 25%, 75%, 50%
    assert "12.5% (" in table  # one seed: no interval
    assert "n/a (no I3D weights)" in table
    assert (out / "recall_vs_gap.png").is_file()
    data = json.loads((out / "comparison.json").read_text())
    assert set(data) == {"gru_long+cue", "gru_long+generative", "mamba_long+cue"}
    gru = data["gru_long+cue"]
    assert gru["seeds"] == 3 and gru["final"]["val/recall_gap60"][0] == 0.5  # keeps [mean, std]
    assert gru["ci95"]["val/recall_gap60"][1] == pytest.approx(4.303 * 0.25 / 3 ** 0.5, rel=1e-3)
