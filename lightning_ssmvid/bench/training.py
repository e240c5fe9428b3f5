"""Benchmark: core training throughput on cached latents (what stage 3 of two-stage training runs).

    python -m lightning_ssmvid.bench.training           # -> reports/bench/training.{json,md}
    python -m lightning_ssmvid.bench.training --quick

One optimiser step = forward, latent loss, backward and AdamW on a (B, L, 128) latent batch through in_proj, the
core and the head, exactly as ``VideoModel`` trains with ``stages=two_stage``. Median of several steps after a
warm-up. Target (reported, not asserted): mamba2 at L=1,440, B=8, d_model=256: >= 2,000 latent frames/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from lightning_ssmvid.bench.common import write_json, write_markdown
from lightning_ssmvid.codecs.conv import ConvCodec
from lightning_ssmvid.cores import build_core
from lightning_ssmvid.model import VideoModel

CORES = {"mamba2": dict(name="mamba2"), "mamba": dict(name="mamba"), "gru": dict(name="gru"),
         "transformer": dict(name="transformer"), "s4d": dict(name="s4d")}


def measure(core: str, length: int, batch: int, d_model: int, n_layers: int, reps: int) -> dict:
    torch.manual_seed(0)
    spec = dict(CORES[core])
    model = VideoModel(ConvCodec(64, latent_dim=128, width=32), build_core(spec.pop("name"), d_model=d_model,
                       n_layers=n_layers, **spec), optimizer=torch.optim.AdamW, freeze_codec=True,
                       pixel_weight=0, recon_weight=0, latent_weight=1)
    optimizer = model.configure_optimizers()
    batch_data = {"latents": torch.randn(batch, length, 128)}
    times = []
    for i in range(reps + 1):
        start = time.perf_counter()
        loss = model.losses(batch_data)[0]["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:  # the first step is the warm-up
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"core": core, "length": length, "batch": batch, "d_model": d_model, "n_layers": n_layers,
            "step_s": seconds, "frames_per_s": batch * length / seconds}


def run(quick: bool = False) -> dict:
    length, batch, d_model, n_layers, reps = (96, 2, 32, 2, 2) if quick else (1440, 8, 256, 4, 5)
    results = [measure(core, length, batch, d_model, n_layers, reps) for core in CORES]
    return {"quick": quick, "threads": torch.get_num_threads(), "results": results}


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
    for row in rows:
        print(" | ".join(row))


if __name__ == "__main__":
    main()
