"""The GPU check's code path at tiny sizes on the CPU (the real run needs a GPU: make bench-gpu)."""

import subprocess
import sys

import pytest
import torch

from lightning_ssmvid.bench import gpu


def test_gpu_check_runs_on_cpu_and_reports_fallbacks(tmp_path):
    gpu.main(["--device", "cpu", "--quick", "--no-train", "--out", str(tmp_path)])
    report = (tmp_path / "gpu.md").read_text()
    assert "## CUDA parity tests" in report and "| mamba2 |" in report
    assert "skipped" in report  # the CUDA parity tests skip on a machine without a GPU
    # bf16 autocast gives the scan bf16 inputs, which the fused CPU kernel does not take: the fall-back is logged.
    assert "selective_scan on cpu: using the PyTorch path (dtype torch.bfloat16)" in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_gpu_check_without_a_gpu_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "lightning_ssmvid.bench.gpu"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: bench.gpu needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine, or pass "
        "--device cpu --quick to check the script"]


def test_a_core_step_the_device_cannot_run_is_reported_not_raised(monkeypatch):
    class Unsupported(torch.nn.Module):  # as oneDNN's bf16 LSTM on a CPU without bf16 instructions
        def forward(self, u):
            raise RuntimeError("could not create a primitive descriptor for the LSTM forward\nmore detail")

    monkeypatch.setattr("lightning_ssmvid.cores.build_core", lambda *args, **kwargs: Unsupported())
    cfg = {"d_model": 8, "n_layers": 1, "batch": 1, "reps": 1}
    assert gpu.time_core("gru", 16, cfg, "cpu") == {
        "error": "could not create a primitive descriptor for the LSTM forward"}
