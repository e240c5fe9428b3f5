"""Benchmark of streaming decode (not a test): frames/s of the stream-sampling train loader on long 64x64 clips.

    python -m lightning_ssmvid.bench.loader            # full run -> reports/bench/loader.json, reports/bench/loader.md
    python -m lightning_ssmvid.bench.loader --quick    # tiny sizes, seconds

Writes 4 long-memory clips of 1,440 lossless 64x64 frames (``generate_long_memory``) into a temporary folder, then
iterates ``VideoDataModule(sampling="stream", clip_length=240, frame_size=64, batch_size=4, num_workers=W)``'s train
loader for W = 0 (in-process), 1 and 2: one warm-up epoch (which also starts the persistent workers), then the median
of 3 timed runs of ``epochs_per_run`` epochs each. Frames counted are the valid ones delivered in batches (uint8
tensors (B, 240, 3, 64, 64), what training consumes). A decode-only reference (decord ``read_frames`` of whole
segments in this process, no DataLoader) is measured too. Target from the issue: at least 5,000 frames/s per worker
(reported, not asserted; W = 0 counts as one worker).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

FULL = dict(n_videos=4, n_frames=1440, gap_bins=(60, 240, 960), workers=(0, 1, 2), runs=3, epochs_per_run=2)
QUICK = dict(n_videos=4, n_frames=480, gap_bins=(60,), workers=(0, 1), runs=1, epochs_per_run=1)
CLIP_LENGTH, FRAME_SIZE, BATCH_SIZE = 240, 64, 4
TARGET_PER_WORKER = 5000.0


def write_videos(root: str | Path, n_videos: int, n_frames: int, gap_bins: tuple[int, ...]) -> Path:
    """``n_videos`` training clips (plus one val clip the data module needs) of lossless 64x64 frames -> folder."""
    from lightning_ssmvid.data.long_memory import LongMemoryConfig, generate_long_memory

    config = LongMemoryConfig(frame_size=FRAME_SIZE, n_frames=n_frames, gap_bins=gap_bins, n_train=n_videos,
                              n_val=1, n_test=0)
    return generate_long_memory(root, config, workers=1, progress=False)


def _epoch_frames(loader) -> int:
    frames = 0
    for batch in loader:
        valid = batch["valid"] if "valid" in batch else torch.ones(batch["frames"].shape[0], dtype=torch.bool)
        frames += int(valid.sum()) * batch["frames"].shape[1]
    return frames


def measure_loader(dataset_dir: Path, num_workers: int, runs: int, epochs_per_run: int) -> dict:
    from lightning_ssmvid.data.datamodule import VideoDataModule

    dm = VideoDataModule(root=str(dataset_dir), sampling="stream", clip_length=CLIP_LENGTH, frame_size=FRAME_SIZE,
                         batch_size=BATCH_SIZE, num_workers=num_workers)
    dm.setup()
    loader = dm.train_dataloader()
    start = time.perf_counter()
    _epoch_frames(loader)  # warm-up: worker start-up, reader opening, allocator
    warmup_s = time.perf_counter() - start
    rates, frames = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        frames = sum(_epoch_frames(loader) for _ in range(epochs_per_run))
        rates.append(frames / (time.perf_counter() - start))
    del loader  # shuts the persistent workers down
    fps = statistics.median(rates)
    return {"num_workers": num_workers, "frames_per_run": frames, "frames_per_s": fps,
            "frames_per_s_per_worker": fps / max(1, num_workers), "runs_frames_per_s": rates,
            "warmup_s": warmup_s, "meets_target": fps / max(1, num_workers) >= TARGET_PER_WORKER}


def measure_decode_only(dataset_dir: Path, runs: int) -> dict:
    """decord ``read_frames`` of consecutive 240-frame segments of every train clip, in this process."""
    from lightning_ssmvid.data.video_io import list_videos, open_video, read_frames

    videos = list_videos(dataset_dir / "train")
    rates = []
    for _ in range(runs + 1):  # the first is a warm-up
        start, frames = time.perf_counter(), 0
        for path in videos:
            reader = open_video(path, FRAME_SIZE)
            for s in range(0, len(reader) - CLIP_LENGTH + 1, CLIP_LENGTH):
                frames += read_frames(reader, s, CLIP_LENGTH, 1, FRAME_SIZE).shape[0]
            del reader
        rates.append(frames / (time.perf_counter() - start))
    return {"frames_per_s": statistics.median(rates[1:]), "runs_frames_per_s": rates[1:]}


def run(quick: bool = False) -> dict:
    """Run the benchmark; returns the results as a dict (see ``write_reports``)."""
    cfg = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        start = time.perf_counter()
        dataset_dir = write_videos(tmp, cfg["n_videos"], cfg["n_frames"], cfg["gap_bins"])
        write_s = time.perf_counter() - start
        decode = measure_decode_only(dataset_dir, cfg["runs"])
        loaders = [measure_loader(dataset_dir, w, cfg["runs"], cfg["epochs_per_run"]) for w in cfg["workers"]]
    return {
        "quick": quick,
        "config": {**cfg, "clip_length": CLIP_LENGTH, "frame_size": FRAME_SIZE, "batch_size": BATCH_SIZE,
                   "sampling": "stream", "codec": "libx264rgb crf 0 (lossless)"},
        "target_frames_per_s_per_worker": TARGET_PER_WORKER,
        "machine": {"cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                    "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "write_videos_s": write_s,
        "decode_only": decode,
        "loader": loaders,
    }


def write_reports(results: dict, out_dir: str | Path = "reports/bench") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "loader.json", out_dir / "loader.md"
    json_path.write_text(json.dumps(results, indent=2))
    cfg, machine = results["config"], results["machine"]
    lines = [
        "# Streaming loader benchmark",
        "",
        f"{cfg['n_videos']} clips x {cfg['n_frames']} frames, {cfg['frame_size']}x{cfg['frame_size']} "
        f"{cfg['codec']}; `VideoDataModule(sampling=\"stream\", clip_length={cfg['clip_length']}, "
        f"batch_size={cfg['batch_size']})` train loader; median of {cfg['runs']} runs of {cfg['epochs_per_run']} "
        f"epoch(s) after a warm-up epoch{' (quick)' if results['quick'] else ''}.",
        f"Machine: {machine['cpu_count']} CPUs ({machine['affinity']} usable), torch {machine['torch']}, "
        f"{machine['torch_threads']} torch threads.",
        "",
        f"Target: >= {results['target_frames_per_s_per_worker']:,.0f} frames/s per worker (W = 0 counts as one).",
        "",
        "| workers | frames/s | frames/s per worker | target met | warm-up epoch (s) |",
        "|---:|---:|---:|:---:|---:|",
    ]
    for row in results["loader"]:
        lines.append(f"| {row['num_workers']} | {row['frames_per_s']:,.0f} | {row['frames_per_s_per_worker']:,.0f} | "
                     f"{'yes' if row['meets_target'] else 'no'} | {row['warmup_s']:.2f} |")
    lines += ["", f"Decode only (decord `read_frames`, in-process, no DataLoader): "
              f"{results['decode_only']['frames_per_s']:,.0f} frames/s.", ""]
    md_path.write_text("\n".join(lines))
    return json_path, md_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run (seconds)")
    parser.add_argument("--out", default="reports/bench")
    args = parser.parse_args()
    results = run(quick=args.quick)
    for row in results["loader"]:
        print(f"workers={row['num_workers']}: {row['frames_per_s']:,.0f} frames/s "
              f"({row['frames_per_s_per_worker']:,.0f} per worker)")
    print(f"decode only: {results['decode_only']['frames_per_s']:,.0f} frames/s")
    for path in write_reports(results, args.out):
        print(path)


if __name__ == "__main__":
    main()
