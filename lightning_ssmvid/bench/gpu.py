"""GPU check (not a test): CUDA parity of the scans, every core's bf16 training step, one short GPU training run.

    python -m lightning_ssmvid.bench.gpu                 # on a machine with a CUDA GPU -> reports/bench/gpu.{json,md}
    python -m lightning_ssmvid.bench.gpu --device cpu --quick --no-train    # the same code at tiny sizes (tests)

1. ``pytest tests/ops/test_fused_scan.py -k cuda``: the mamba_ssm selective-scan kernel with and without a carried
   state, and the Triton SSD kernel with ``initial_states``, against the sequential references.
2. Forward + backward of every core stack (the core benchmark's sizes: B=2, d_model=256, 2 layers) under bf16
   autocast at L=4,096 and 16,384: median seconds and peak memory (``torch.cuda.max_memory_allocated``), and which
   scan path ran (the dispatch logs a line whenever it falls back to PyTorch).
3. ``train experiment=mamba_long trainer=gpu`` for ``--train-steps`` optimiser steps on a small generated set.
Budget: about 8 minutes on one GPU; each part records its own wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lightning_ssmvid.bench.common import core_options, write_json
from lightning_ssmvid.bench.cores import CORES
from lightning_ssmvid.utils.errors import UserError, user_errors

FULL = dict(batch=2, d_model=256, n_layers=2, lengths=[4096, 16384], reps=3)
QUICK = dict(batch=1, d_model=32, n_layers=1, lengths=[64], reps=1)


class FallbackLines(logging.Handler):
    """Collects the scan dispatch's fall-back lines while a core runs."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def parity_tests(device: str) -> dict:
    start = time.perf_counter()
    tests = Path(__file__).resolve().parents[2] / "tests" / "ops" / "test_fused_scan.py"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", str(tests), "-k", "cuda"],
                          capture_output=True, text=True, cwd=tests.parents[2])
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-300:]
    return {"returncode": proc.returncode, "summary": tail, "seconds": time.perf_counter() - start, "device": device}


def time_core(key: str, length: int, cfg: dict, device: str) -> dict:
    from lightning_ssmvid.cores import build_core

    spec = core_options(key)
    torch.manual_seed(0)
    core = build_core(spec.pop("name"), d_model=cfg["d_model"], n_layers=cfg["n_layers"], **spec).to(device).train()
    u = torch.randn(cfg["batch"], length, cfg["d_model"], device=device, requires_grad=True)
    handler = FallbackLines()
    logging.getLogger("lightning_ssmvid.ops").addHandler(handler)
    from lightning_ssmvid.ops import dispatch

    dispatch._seen.clear()  # every core reports its own fall-backs
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    try:
        for i in range(cfg["reps"] + 1):
            start = time.perf_counter()
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                y, _ = core(u)
            y.float().square().mean().backward()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:  # the first step is the warm-up (kernel compilation, autotuning)
                times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        return {"error": "out of memory"}
    except RuntimeError as error:  # a kernel this device lacks (oneDNN's bf16 LSTM on a CPU without bf16): report it
        return {"error": str(error).splitlines()[0][:120]}
    finally:
        logging.getLogger("lightning_ssmvid.ops").removeHandler(handler)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"seconds": statistics.median(times), "peak_mb": peak, "fallbacks": handler.lines}


def training_run(steps: int, device: str, timeout: float) -> dict:
    out = Path(tempfile.mkdtemp(prefix="ssmvid-gpu-"))
    trainer = "gpu" if device == "cuda" else "cpu"
    args = [sys.executable, "-m", "lightning_ssmvid.train", "experiment=mamba_long", f"trainer={trainer}",
            f"trainer.max_steps={steps}", "trainer.max_epochs=1000", "data.generator.n_train=32",
            "data.generator.n_val=24", "data.generator.n_test=24", "stages.codec_training.steps=300",
            "callbacks.evaluation.every_n_epochs=100000", f"paths.log_dir={out / 'logs'}",
            f"paths.data_dir={out / 'data'}", "logger=csv"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "WANDB_MODE": "offline"})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "command": " ".join(args[1:])}
    result = {"returncode": proc.returncode, "seconds": time.perf_counter() - start, "command": " ".join(args[1:])}
    summaries = sorted((out / "logs").rglob("summary.json"))
    if summaries:
        summary = json.loads(summaries[-1].read_text())
        result["summary"] = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
    if proc.returncode:
        result["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return result


def write_report(results: dict, out_dir: Path) -> Path:
    lines = ["# GPU check", "", f"Device: {results['device_name']}. Written by `python -m lightning_ssmvid.bench.gpu`.",
             "", "## CUDA parity tests", "", f"`{results['parity']['summary']}` "
             f"(exit {results['parity']['returncode']}, {results['parity']['seconds']:.0f} s)", "",
             "## Core training step, bf16 autocast (forward + backward; median s / peak MB)", "",
             "| core | " + " | ".join(f"L={L}" for L in results["config"]["lengths"]) + " | fall-backs |",
             "|---|" + "---|" * (len(results["config"]["lengths"]) + 1)]
    for core, rows in results["cores"].items():
        cells, fallbacks = [], set()
        for L in results["config"]["lengths"]:
            row = rows[str(L)]
            if "seconds" in row:
                mem = "" if row["peak_mb"] is None else f" / {row['peak_mb']:.0f} MB"
                cells.append(f"{row['seconds']:.3f} s{mem}")
                fallbacks.update(row["fallbacks"])
            else:
                cells.append(row["error"])
        lines.append(f"| {core} | " + " | ".join(cells) + f" | {'; '.join(sorted(fallbacks)) or 'none'} |")
    train = results.get("training")
    if train:
        lines += ["", "## Training run", "", f"`python -m {train['command']}`", ""]
        lines.append(f"- {train.get('error') or 'finished'}; {train.get('seconds', 0):.0f} s")
        for key in ("val/loss", "train/loss"):
            if key in train.get("summary", {}):
                lines.append(f"- {key}: {train['summary'][key]}")
    path = out_dir / "gpu.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test of this script)")
    parser.add_argument("--no-train", action="store_true", help="skip the training run")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for everything (the training run "
                        "gets what is left)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("bench.gpu needs a CUDA GPU (torch.cuda.is_available() is False); "
                        "run it on a GPU machine, or pass --device cpu --quick to check the script")
    start = time.perf_counter()
    cfg = QUICK if args.quick else FULL
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    results: dict = {"device_name": name, "config": cfg, "parity": parity_tests(args.device), "cores": {}}
    print(f"parity: {results['parity']['summary']}", flush=True)
    for key in CORES:
        results["cores"][key] = {str(L): time_core(key, L, cfg, args.device) for L in cfg["lengths"]}
        print(f"{key}: {results['cores'][key]}", flush=True)
    if not args.no_train:
        left = max(60.0, args.budget - (time.perf_counter() - start))
        results["training"] = training_run(args.train_steps, args.device, timeout=left)
        print(f"training: {results['training']}", flush=True)
    results["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gpu.json", results)
    print(write_report(results, args.out))


if __name__ == "__main__":
    with user_errors():
        main()
