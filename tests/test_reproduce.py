"""`reproduce` runs what is missing in its own logs folder and writes the table to its own output folder."""

import json
import subprocess

from lightning_ssmvid import reproduce


def test_a_variant_runs_in_its_own_folders_and_skips_its_finished_runs(tmp_path, monkeypatch):
    logs, out = tmp_path / "variant-logs", tmp_path / "variant-report"
    done = logs / "mamba2_short" / "runs" / "t0"
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"name": "mamba2_short", "arm": "cue", "seed": 42,
                                                   "status": "finished"}))
    commands, tables = [], []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **_: commands.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    monkeypatch.setattr(reproduce.report, "main", lambda argv: tables.append(argv))
    reproduce.main(["--seeds", "42", "43", "--arms", "cue", "--pattern", "mamba2_short", "--logs", str(logs),
                    "--out", str(out), "head=flow"])
    assert len(commands) == 1, "seed 42 has a finished run in this logs folder; only seed 43 runs"
    assert "seed=43" in commands[0] and f"paths.log_dir={logs.resolve()}" in commands[0] and "head=flow" in commands[0]
    assert tables == [["--logs", str(logs.resolve()), "--out", str(out)]]
