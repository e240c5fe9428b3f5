"""Stage 2 of two-stage training: every video encoded once into a memory-mapped latent array.

Layout: ``<cache>/<relative video path>.npy`` (e.g. ``train/clip_00001.mp4.npy``) of shape (n_frames, latent_dim)
float32, plus ``manifest.json`` written last. The cache folder is keyed by the codec file's sha256 and the data
identity, so a changed codec or data set gets a new cache and an old one is never read by mistake.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from lightning_ssmvid.data.video_io import open_video, read_frames
from lightning_ssmvid.frames import to_unit
from lightning_ssmvid.utils.files import atomic_path, write_json_atomic
from lightning_ssmvid.utils.integrity import check_manifest, record

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"




def cache_path(cache_dir: Path, dataset_dir: Path, video: Path) -> Path:
    """``<cache>/<relative path>.npy``, keeping the video's own suffix (``a.mp4`` and ``a.avi`` never collide)."""
    return cache_dir / f"{video.relative_to(dataset_dir).as_posix()}.npy"


def is_complete(cache_dir: Path) -> bool:
    """The manifest exists and every file it records is intact; damaged files (and the manifest) are removed, with
    a log line, so that the build re-encodes exactly those videos."""
    if not (cache_dir / MANIFEST).is_file():
        return False
    problems = check_manifest(cache_dir / MANIFEST, f"latent cache {cache_dir}", "re-encoding them")
    for name in problems:
        (cache_dir / name).unlink(missing_ok=True)
    return not problems


@torch.no_grad()
def build_latent_cache(codec: nn.Module, dataset_dir: Path, videos: list[Path], cache_dir: Path, frame_size: int,
                       chunk: int = 256, description: str = "encoding latents") -> Path:
    """Encode every frame of ``videos`` (streamed ``chunk`` frames at a time) into ``cache_dir``; skip if complete."""
    if is_complete(cache_dir):
        return cache_dir
    codec.eval()
    with Progress() as progress:
        task = progress.add_task(description, total=len(videos))
        for video in videos:
            target = cache_path(cache_dir, dataset_dir, video)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                reader = open_video(video, frame_size)
                with atomic_path(target, suffix=".npy") as tmp:
                    latents = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                        shape=(len(reader), codec.latent_dim))
                    for start in range(0, len(reader), chunk):
                        frames = read_frames(reader, start, min(chunk, len(reader) - start), frame_size=frame_size)
                        latents[start : start + len(frames)] = codec.encode(to_unit(frames)).numpy()
                    latents.flush()
                    del latents
            progress.advance(task)
    arrays = [cache_path(cache_dir, dataset_dir, v) for v in videos]
    write_json_atomic(cache_dir / MANIFEST, {"videos": [str(v.relative_to(dataset_dir)) for v in videos],
                                             "frame_size": frame_size, "latent_dim": codec.latent_dim,
                                             "files": record(cache_dir, arrays)})
    return cache_dir


def load_latents(cache_dir: Path, dataset_dir: Path, video: Path) -> np.ndarray:
    """The (n_frames, latent_dim) array of ``video``, memory-mapped (nothing is read until sliced)."""
    return np.load(cache_path(cache_dir, dataset_dir, video), mmap_mode="r")
