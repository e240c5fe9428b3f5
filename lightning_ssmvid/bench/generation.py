"""Benchmark: constant-memory generation. Roll a model out for an hour of 64x64 video and watch its memory.

    python -m lightning_ssmvid.bench.generation            # -> reports/bench/generation.{json,md,png}
    python -m lightning_ssmvid.bench.generation --quick    # seconds

Each core (the model of its ``<core>_long`` experiment as composed, random weights: speed and memory do not depend
on training) generates through ``generate_video``, what ``make generate`` runs: latents drawn in a background thread,
decoded 16 at a time and written to an MP4. RSS is sampled every ``every`` frames, in a subprocess per core so cores
do not share a high-water mark. Targets (reported, not asserted): mamba/mamba2 at 86,400 frames: peak RSS after frame
1,000 exceeds RSS at frame 1,000 by < 5%; >= 300 frames/s, with the deterministic ``mse`` head and with the
stochastic ``flow`` head (``conf/head/flow.yaml``'s settings).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from lightning_ssmvid.bench.common import write_json, write_markdown
from lightning_ssmvid.generate import generate_video
from lightning_ssmvid.report import pyplot
from lightning_ssmvid.utils.config import compose_train_config

# core -> (its experiment, whose composed core and codec sizes are measured; frames to generate in the full run)
CORES = {"mamba": ("mamba_long", 86_400), "mamba2": ("mamba2_long", 86_400),
         "transformer_window": ("transformer_window_long", 20_000), "transformer": ("transformer_long", 20_000)}
FLOW_CORES = ("mamba", "mamba2")  # also measured with the flow head (its sampling steps run per frame)


def measure(core: str, n_frames: int, every: int, head: str = "mse", overrides: tuple[str, ...] = (),
            decode_chunk: int = 16) -> dict:
    """Generate ``n_frames`` after a 16-frame context with ``generate_video`` (what ``make generate`` runs); RSS
    curve every ``every`` frames, frames/s overall. ``overrides`` (``key=value``) change the composed experiment
    (tests use tiny sizes); ``decode_chunk=1`` times the unpipelined loop."""
    from hydra.utils import instantiate

    torch.manual_seed(0)
    cfg = compose_train_config(f"experiment={CORES[core][0]}", f"head={head}", *overrides)
    model, frame_size = instantiate(cfg.model).eval(), int(cfg.data.frame_size)
    context = torch.randint(0, 256, (1, 16, 3, frame_size, frame_size), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:  # make generate's own loop: pipelined, decoded, written to MP4
        # untimed warm-up: the first call builds the C++ kernels on a fresh machine (~25 s measured) and fills pools
        generate_video(model, context, 16, Path(tmp) / "warm.mp4", progress=False, decode_chunk=decode_chunk)
        result = generate_video(model, context, n_frames, Path(tmp) / "out.mp4", progress=False,
                                decode_chunk=decode_chunk, rss_every=every)
    curve, seconds = [tuple(point) for point in result["rss_curve"]], result["seconds"]
    at_1k = next((rss for i, rss in curve if i >= 1000), curve[0][1])
    # the peak, not the last sample: the drawing thread may have finished and freed its state (a KV cache) by then
    peak = max(rss for i, rss in curve if i >= min(1000, n_frames))
    growth = peak - at_1k
    return {"core": core, "head": head, "reencode": bool(model.rollout_reencode), "decode_chunk": decode_chunk,
            "frames": n_frames, "seconds": seconds,
            "frames_per_s": n_frames / seconds,
            "rss_curve": curve, "rss_after_1k_mb": at_1k, "rss_peak_after_1k_mb": peak, "rss_end_mb": curve[-1][1],
            "rss_growth_pct_after_1k": 100 * growth / at_1k,
            "rss_growth_mb_per_1k": growth / max(1, (n_frames - 1000) / 1000) if n_frames > 1000 else 0.0}


def run(quick: bool = False) -> dict:
    results = []
    runs = [(core, "mse") for core in CORES] + [(core, "flow") for core in FLOW_CORES]
    for core, head in runs:
        full_frames = CORES[core][1] if head == "mse" else 20_000
        n_frames, every = (2_000, 250) if quick else (full_frames, 1000)
        command = [sys.executable, "-m", "lightning_ssmvid.bench.generation", "--one", core, "--head", head,
                   "--frames", str(n_frames), "--every", str(every)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{core} ({head} head): {results[-1]['frames_per_s']:.0f} frames/s, RSS "
              f"+{results[-1]['rss_growth_pct_after_1k']:.1f}% after frame 1,000", file=sys.stderr)
    return {"quick": quick, "threads": torch.get_num_threads(), "results": results}


def write_reports(results: dict, out_dir: Path) -> None:
    write_json(out_dir / "generation.json", results)
    rows = [[r["core"], r.get("head", "mse"), "yes" if r.get("reencode") else "no", f"{r['frames']:,}",
             f"{r['frames_per_s']:.0f}",
             f"{r['rss_after_1k_mb']:.0f}", f"{r['rss_peak_after_1k_mb']:.0f}", f"{r['rss_growth_pct_after_1k']:+.1f}%",
             f"{r['rss_growth_mb_per_1k']:.2f}"]
            for r in results["results"]]
    write_markdown(out_dir / "generation.md", "Generation benchmark (64x64, decoded and written to MP4)",
                   ["core", "head", "reencode", "frames", "frames/s", "RSS at 1k MB", "peak RSS after 1k MB",
                    "peak growth after 1k", "MB per 1k frames"], rows, __doc__)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results["results"]:
        ax.plot(*zip(*r["rss_curve"]), label=f"{r['core']} ({r.get('head', 'mse')})")
    ax.set(xlabel="frames generated", ylabel="peak RSS (MB)", xscale="log", title="Memory during generation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "generation_memory.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=86_400, help=argparse.SUPPRESS)
    parser.add_argument("--every", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--head", default="mse", help=argparse.SUPPRESS)
    parser.add_argument("--decode-chunk", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)  # e.g. head.width=256
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.frames, args.every, head=args.head, overrides=tuple(args.override),
                                 decode_chunk=args.decode_chunk)))
        return
    write_reports(run(args.quick), args.out)


if __name__ == "__main__":
    main()
