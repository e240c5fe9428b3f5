"""The core benchmark runs end to end at tiny sizes (the figures themselves are not asserted)."""

import json

from lightning_ssmvid.bench.cores import CORES, run, write_reports


def test_quick_benchmark_runs_and_writes_reports(tmp_path):
    results = run(quick=True)
    assert set(results["cores"]) == set(CORES)
    for rows in results["cores"].values():
        assert all(row.get("seconds", 0) > 0 for row in rows.values())
    assert results["scans"]["ssd_scan"]["speedup"] > 0
    assert results["scans"]["selective_scan"]["path"] == "fused C++"  # the machines that run this have gcc
    json_path, md_path = write_reports(results, tmp_path)
    assert json.loads(json_path.read_text())["quick"] is True
    assert "mamba2" in md_path.read_text()
