"""Bouncing shapes: the first synthetic data set, written as real MP4 files (train/ and val/ splits)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.progress import track

from lightning_ssmvid.data.video_io import write_video
from lightning_ssmvid.utils.files import config_hash, write_json_atomic
from lightning_ssmvid.utils.integrity import check_manifest, record

MANIFEST = "manifest.json"


def render_bouncing_clip(rng: np.random.Generator, n_frames: int, frame_size: int, n_shapes: int):
    """Yield (S, S, 3) uint8 frames of ``n_shapes`` coloured squares bouncing off the walls."""
    size = rng.integers(frame_size // 8, frame_size // 4 + 1, n_shapes)
    pos = rng.uniform(0, frame_size - size, (2, n_shapes)).T
    vel = rng.uniform(-1.5, 1.5, (n_shapes, 2)) + np.sign(rng.uniform(-1, 1, (n_shapes, 2))) * 0.5
    colour = rng.integers(64, 256, (n_shapes, 3), dtype=np.uint8)
    for _ in range(n_frames):
        frame = np.zeros((frame_size, frame_size, 3), np.uint8)
        for k in range(n_shapes):
            y, x = pos[k].astype(int)
            frame[y : y + size[k], x : x + size[k]] = colour[k]
        yield frame
        pos += vel
        hit_low, hit_high = pos < 0, pos > frame_size - size[:, None]
        vel[hit_low | hit_high] *= -1
        pos = np.clip(pos, 0, frame_size - size[:, None])


@dataclass
class BouncingShapes:
    """Generator of the bouncing-shapes set; ``generator(root)`` writes it once and returns its folder."""

    n_train: int = 32
    n_val: int = 8
    n_frames: int = 64
    render_size: int = 64  # files are written at this size (decord decodes 64-multiples exactly)
    n_shapes: int = 2
    fps: float = 24
    seed: int = 0

    def __call__(self, root: str | Path) -> Path:
        config = asdict(self)
        out = Path(root) / f"bouncing-{config_hash(config)}"
        if (out / MANIFEST).exists():
            problems = check_manifest(out / MANIFEST, f"bouncing data set {out.name}", "rewriting them")
            if not problems:
                return out
            for name in problems:
                (out / name).unlink(missing_ok=True)
        clips = [("train", i) for i in range(self.n_train)] + [("val", i) for i in range(self.n_val)]
        for split, index in track(clips, description=f"writing bouncing shapes to {out}"):
            path = out / split / f"clip_{index:05d}.mp4"
            if path.exists():
                continue  # written atomically, so an existing file is complete
            rng = np.random.default_rng([self.seed, 0 if split == "train" else 1, index])
            write_video(path, render_bouncing_clip(rng, self.n_frames, self.render_size, self.n_shapes), fps=self.fps)
        files = [out / split / f"clip_{index:05d}.mp4" for split, index in clips]
        write_json_atomic(out / MANIFEST, {"generator": "bouncing", "config": config, "files": record(out, files)})
        return out

