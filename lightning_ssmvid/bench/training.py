"""Benchmark: core training throughput on cached latents (what stage 3 of two-stage training runs).

    python -m lightning_ssmvid.bench.training           # -> reports/bench/training.{json,md}
    python -m lightning_ssmvid.bench.training --quick

One optimiser step = forward, latent loss, backward and AdamW on a (B, L, 128) latent batch through in_proj, the
core and the head, exactly as ``VideoModel`` trains with ``stages=two_stage``. Median of several steps after a
warm-up. Target (reported, not asserted): mamba2 at L=1,440, B=8, d_model=256: >= 2,000 latent frames/s.

Second table (``training_experiments.md``): the same step for every ``*_long`` experiment, see ``EXPERIMENTS``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

from lightning_ssmvid.bench.common import core_options, write_json, write_markdown
from lightning_ssmvid.codecs.conv import ConvCodec
from lightning_ssmvid.cores import build_core
from lightning_ssmvid.model import VideoModel
from lightning_ssmvid.ops.selective_scan_cpu import fused_scan_disabled

EXPERIMENTS = """Stage-3 training of every ``*_long`` experiment

    python -m lightning_ssmvid.bench.training           # -> reports/bench/training_experiments.md

One optimiser step (as above) of each ``*_long`` experiment as composed: its core sizes, batch size, clip length
and latent width (the memory arm's small cue head left out). "before": the selective scan's PyTorch path
(``SSMVID_FUSED_SCAN=0``); "after": the dispatched path (on CPU, the fused C++ kernel). Only cores that run the
selective scan (mamba) can change: the other rows measure how much two identical runs differ on this machine.
Before and after steps alternate, median of 5 each after a warm-up round.
"""

CORES = ("mamba2", "mamba", "gru", "transformer", "s4d")  # with their conf/core/ options, at one width


class _Stepper:
    """One model and optimiser; ``step()`` times one optimiser step on ``batch_data``."""

    def __init__(self, model: VideoModel, batch_data: dict):
        optimizer = model.configure_optimizers()
        self.model, self.batch = model, batch_data
        self.optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer

    def step(self) -> float:
        start = time.perf_counter()
        loss = self.model.losses(self.batch)[0]["loss"]
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def measure(core: str, length: int, batch: int, d_model: int, n_layers: int, reps: int) -> dict:
    torch.manual_seed(0)
    spec = core_options(core)
    model = VideoModel(ConvCodec(64, latent_dim=128, width=32), build_core(spec.pop("name"), d_model=d_model,
                       n_layers=n_layers, **spec), optimizer=torch.optim.AdamW, freeze_codec=True,
                       pixel_weight=0, recon_weight=0, latent_weight=1)
    stepper = _Stepper(model, {"latents": torch.randn(batch, length, 128)})
    times = [stepper.step() for _ in range(reps + 1)][1:]  # the first step is the warm-up
    seconds = statistics.median(times)
    return {"core": core, "length": length, "batch": batch, "d_model": d_model, "n_layers": n_layers,
            "step_s": seconds, "frames_per_s": batch * length / seconds}


def measure_experiment(name: str, reps: int, quick: bool = False) -> dict:
    """Stage-3 step of the composed experiment ``name`` with the PyTorch scan ("before") and the dispatched one."""
    from hydra.utils import instantiate

    from lightning_ssmvid.utils.config import compose_train_config

    overrides = [f"experiment={name}", "model.cue_weight=0"]
    if quick:
        overrides += ["core.d_model=32", "core.n_layers=1", "data.clip_length=32", "data.batch_size=2"]
    cfg = compose_train_config(*overrides)
    batch, length, latent = int(cfg.data.batch_size), int(cfg.data.clip_length), int(cfg.codec.latent_dim)
    row = {"experiment": name, "core": str(cfg.core.name), "batch": batch, "length": length,
           "d_model": int(cfg.core.d_model), "n_layers": int(cfg.core.n_layers)}
    paths = {"before": fused_scan_disabled, "after": contextlib.nullcontext}
    steppers, times = {}, {label: [] for label in paths}
    for label in paths:
        torch.manual_seed(0)
        steppers[label] = _Stepper(instantiate(cfg.model), {"latents": torch.randn(batch, length, latent)})
    for i in range(reps + 1):  # alternating before/after steps, so drifts of a shared machine hit both alike
        for label, scan_paths in paths.items():
            with scan_paths():
                seconds = steppers[label].step()
            if i:  # the first round is the warm-up
                times[label].append(seconds)
    for label in paths:
        row[f"{label}_frames_per_s"] = batch * length / statistics.median(times[label])
    return row


def long_experiments() -> list[str]:
    from lightning_ssmvid.utils.config import CONFIG_DIR

    return sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*_long.yaml"))


def run(quick: bool = False) -> dict:
    length, batch, d_model, n_layers, reps = (96, 2, 32, 2, 2) if quick else (1440, 8, 256, 4, 5)
    results = [measure(core, length, batch, d_model, n_layers, reps) for core in CORES]
    experiments = [measure_experiment(name, 1 if quick else 5, quick) for name in long_experiments()]
    return {"quick": quick, "threads": torch.get_num_threads(), "results": results, "experiments": experiments}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = parser.parse_args()
    results = run(args.quick)
    write_json(args.out / "training.json", results)
    rows = [[r["core"], str(r["length"]), str(r["batch"]), str(r["d_model"]), str(r["n_layers"]),
             f"{r['step_s']:.3f}", f"{r['frames_per_s']:.0f}"] for r in results["results"]]
    write_markdown(args.out / "training.md", "Core training on cached latents",
                   ["core", "L", "B", "d_model", "layers", "step s", "latent frames/s"], rows, __doc__)
    exp_rows = [[r["experiment"], r["core"], str(r["batch"]), str(r["length"]), str(r["d_model"]), str(r["n_layers"]),
                 f"{r['before_frames_per_s']:.0f}", f"{r['after_frames_per_s']:.0f}",
                 f"{r['after_frames_per_s'] / r['before_frames_per_s']:.2f}x"] for r in results["experiments"]]
    write_markdown(args.out / "training_experiments.md", "Stage-3 training of every *_long experiment",
                   ["experiment", "core", "B", "L", "d_model", "layers", "before (torch scan) frames/s",
                    "after frames/s", "after / before"], exp_rows, EXPERIMENTS)
    for row in rows + exp_rows:
        print(" | ".join(row))


if __name__ == "__main__":
    main()
