"""Writing a long-memory data set: clips rendered by a process pool, manifests and integrity records, resumable."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lightning_ssmvid.data.long_memory.config import ARRAY_KEYS, GENERATOR_VERSION, MANIFEST, LongMemoryConfig
from lightning_ssmvid.data.long_memory.plan import clip_name, plan_clip
from lightning_ssmvid.data.long_memory.sidecar import render_frames
from lightning_ssmvid.data.video_io import VideoWriter
from lightning_ssmvid.utils.files import atomic_path, exclusive_lock, write_json_atomic
from lightning_ssmvid.utils.integrity import check_manifest, record

log = logging.getLogger(__name__)

# Writing ------------------------------------------------------------------------------------------------------------
def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


CLIP_FILES = (".mp4", ".npz", ".json")  # one clip: the video, its arrays, its sidecar (written last)


def clip_complete(split_dir: Path, index: int) -> bool:
    name = clip_name(index)
    return all((split_dir / f"{name}{ext}").is_file() for ext in CLIP_FILES)


def write_clip(config: LongMemoryConfig, split: str, index: int, split_dir: str | os.PathLike) -> Path:
    """Render and write one clip: the MP4 (atomic, streamed), then the arrays, then the JSON sidecar, last."""
    split_dir = Path(split_dir)
    sidecar = plan_clip(config, split, index)
    name = clip_name(index)
    with VideoWriter(split_dir / f"{name}.mp4", fps=config.fps, lossless=True) as writer:
        for frame in render_frames(sidecar):
            writer.write(frame)
    _save_npz_atomic(split_dir / f"{name}.npz", {key: sidecar[key] for key in ARRAY_KEYS})
    write_json_atomic(split_dir / f"{name}.json", {k: v for k, v in sidecar.items() if k not in ARRAY_KEYS})
    return split_dir / f"{name}.mp4"


def _write_clip_task(args: tuple) -> tuple[str, int]:
    config_dict, split, index, split_dir = args
    write_clip(LongMemoryConfig(**config_dict), split, index, split_dir)
    return split, index


def _manifest_ok(dataset_dir: Path, config: LongMemoryConfig) -> bool:
    for split, count in config.counts().items():
        try:
            manifest = json.loads((dataset_dir / split / MANIFEST).read_text())
        except (OSError, ValueError):
            return False
        if manifest.get("count") != count or manifest.get("config_hash") != config.hash():
            return False
    return True


def _remove_damaged(dataset_dir: Path, config: LongMemoryConfig) -> bool:
    """Check every recorded clip file against its split manifest; remove the damaged clips (all three files) and
    the manifest, so that generation rewrites exactly them (the generator is deterministic). True if any."""
    found = False
    for split in config.counts():
        split_dir = dataset_dir / split
        problems = check_manifest(split_dir / MANIFEST, f"long-memory data set {dataset_dir.name}/{split}",
                                  "rewriting those clips")
        for name in problems:
            for ext in CLIP_FILES:
                (split_dir / name).with_suffix(ext).unlink(missing_ok=True)
        found = found or bool(problems)
    return found


def _remove_stale(split_dir: Path) -> None:
    """Temporary files of an interrupted run (hidden ``.name.partial*`` / ``.name.tmp*``)."""
    for path in split_dir.glob(".*"):
        if ".partial" in path.name or ".tmp" in path.name:
            path.unlink(missing_ok=True)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def generate_long_memory(
    root: str | os.PathLike, config: LongMemoryConfig | None = None, workers: int | None = None, progress: bool = True
) -> Path:
    """Write the data set for ``config`` under ``root`` (once) and return its folder (``train/ val/ test/``).

    The folder name carries a hash of the config: a second call with the same config returns at once. Clips are
    written in parallel (``workers`` processes, default ``min(2, cpu count)``; ``<= 1``: in this process), each
    atomically; a split is complete when its ``manifest.json`` exists. A rerun after an interruption writes only
    the clips that are missing or incomplete.
    """
    config = config or LongMemoryConfig()
    config.validate()
    dataset_dir = Path(root) / config.dataset_name()
    if _manifest_ok(dataset_dir, config) and not _remove_damaged(dataset_dir, config):
        return dataset_dir
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(dataset_dir / ".lock"):
        if _manifest_ok(dataset_dir, config) and not _remove_damaged(dataset_dir, config):
            return dataset_dir  # another process finished it while we waited
        write_json_atomic(dataset_dir / "config.json", {
            "generator": "long_memory", "version": GENERATOR_VERSION, "hash": config.hash(), "config": asdict(config),
        })
        pending: list[tuple[str, int]] = []
        remaining: dict[str, int] = {}
        for split, count in config.counts().items():
            split_dir = dataset_dir / split
            split_dir.mkdir(exist_ok=True)
            _remove_stale(split_dir)
            todo = [(split, i) for i in range(count) if not clip_complete(split_dir, i)]
            pending += todo
            remaining[split] = len(todo)

        def finish(split: str) -> None:
            names = [clip_name(i) for i in range(config.counts()[split])]
            files = [dataset_dir / split / f"{name}{ext}" for name in names for ext in CLIP_FILES]
            write_json_atomic(dataset_dir / split / MANIFEST, {
                "generator": "long_memory", "config_hash": config.hash(), "split": split,
                "count": config.counts()[split], "clips": names, "files": record(dataset_dir / split, files),
            })

        for split, n in remaining.items():
            if n == 0:
                finish(split)
        workers = default_workers() if workers is None else workers
        tasks = [(asdict(config), split, i, str(dataset_dir / split)) for split, i in pending]
        pool = None
        if workers > 1 and len(tasks) > 1:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            pool = multiprocessing.get_context(method).Pool(min(workers, len(tasks)),  # before rich starts a thread
                                                            initializer=_default_sigterm)
        try:
            from rich.progress import Progress

            results = pool.imap_unordered(_write_clip_task, tasks) if pool else map(_write_clip_task, tasks)
            with Progress(disable=not progress or not tasks) as bar:
                job = bar.add_task(f"long-memory clips -> {dataset_dir.name}", total=len(tasks))
                for split, _ in results:
                    bar.advance(job)
                    remaining[split] -= 1
                    if remaining[split] == 0:
                        finish(split)
            if pool is not None:
                pool.close()  # all done: workers exit on their own
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    return dataset_dir


def _default_sigterm() -> None:
    """Pool workers die on SIGTERM (``Pool.terminate``) even when the parent ignores it, as submitit's SLURM jobs do."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def list_clips(split_dir: str | os.PathLike) -> list[Path]:
    """The MP4 files of a complete split, in order (from its manifest)."""
    split_dir = Path(split_dir)
    manifest = json.loads((split_dir / MANIFEST).read_text())
    return [split_dir / f"{name}.mp4" for name in manifest["clips"]]
