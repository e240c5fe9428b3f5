"""A picture of a rollout: real (top) vs generated (bottom) frames at chosen horizons after the context.

    python -m lightning_ssmvid.strip ckpt_path=RUN/checkpoints/last.ckpt out=docs/strip.png
    python -m lightning_ssmvid.strip ckpt_path=CKPT horizons=[1,16,64,240] video=2 seed=1

A Hydra app (``conf/strip.yaml`` lists every key).
The model rolls out ``max(horizons)`` frames (streamed; only the chosen frames are kept); the real frames come from
the same video (black past its end). Also writes the rollout's persistence ratios next to the PNG (``.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from lightning_ssmvid.frames import to_unit
from lightning_ssmvid.generate import (
    dataset_video,
    iter_real_frames,
    load_checkpoint,
    read_context,
    run_folder,
    set_rollout_snap,
)
from lightning_ssmvid.metrics.persistence import RolloutPersistence, rollout_bands
from lightning_ssmvid.pictures import to_image
from lightning_ssmvid.sampling import apply_sampling
from lightning_ssmvid.utils.config import CONFIG_DIR, project_relative
from lightning_ssmvid.utils.errors import UserError, user_errors
from lightning_ssmvid.utils.files import write_json_atomic


def rollout_strip(model, context: torch.Tensor, real_frames, horizons: Sequence[int], seed: int = 0):
    """context (K, C, H, W); real_frames: an iterable of (C, H, W) frames continuing it -> (real, generated) lists
    of (H, W, 3) uint8 images at each horizon (1-based), and the rollout's ``RolloutPersistence``."""
    wanted, steps = set(horizons), max(horizons)
    persistence = RolloutPersistence(to_unit(context).cpu(), rollout_bands(steps))
    real_iter, generated, real = iter(real_frames), {}, {}
    black = np.zeros((*context.shape[-2:], 3), np.uint8)
    for h, frame in enumerate(model.rollout(context[None], steps, seed=seed), start=1):
        persistence.update(frame[0])
        actual = next(real_iter, None)
        if h in wanted:
            generated[h] = to_image(frame[0])
            real[h] = black if actual is None else to_image(actual)
    return [real[h] for h in horizons], [generated[h] for h in horizons], persistence


def draw(context_image: np.ndarray, real: list, generated: list, horizons: Sequence[int], title: str, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(horizons) + 1
    fig, axes = plt.subplots(2, columns, figsize=(1.4 * columns, 3.2), squeeze=False)
    for row, (label, images) in enumerate((("real", real), ("generated", generated))):
        for col, (image, name) in enumerate(zip([context_image, *images], ["last context", *map(str, horizons)])):
            ax = axes[row][col]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(name if col == 0 else f"t + {name}", fontsize=8)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def run(cfg: DictConfig) -> Path:
    """Draw the strip ``cfg`` (``conf/strip.yaml``'s keys) asks for; returns the PNG's path."""
    if min(cfg.horizons) < 1 or cfg.context < 1:
        raise ValueError(f"horizons={list(cfg.horizons)} and context={cfg.context} must be >= 1")
    horizons = sorted(set(cfg.horizons))
    model = load_checkpoint(cfg.ckpt_path)
    set_rollout_snap(model, cfg.ckpt_path, cfg.snap, cfg.snap_pooled, cfg.snap_feedback)
    sampling = apply_sampling(model, cfg.temperature, cfg.steps, cfg.rollout_noise, cfg.reencode)
    data = dict(model.run_config["data"])
    frame_size, stride = int(data.get("frame_size") or 32), int(data.get("stride") or 1)
    source = dataset_video(data, cfg.split, cfg.video)
    reader, context = read_context(source, cfg.context, frame_size, stride)
    real, generated, persistence = rollout_strip(model, context, iter_real_frames(reader, cfg.context * stride,
                                                                                  stride, frame_size),
                                                 horizons, cfg.seed)
    config = model.run_config
    head = (config["model"].get("head") or {}).get("name", "mse")
    title = (f"{config.get('name')} (run seed {config.get('seed')}; {config['model']['core'].get('name')} core, "
             f"{head} head, draw seed {cfg.seed}): {source.name} of {cfg.split}, {cfg.context} context frames")
    out = Path(cfg.out) if cfg.out else run_folder(cfg.ckpt_path) / "generated" / f"strip_{source.stem}.png"
    draw(to_image(context[-1]), real, generated, horizons, title, out)
    write_json_atomic(out.with_suffix(".json"), {"ckpt": project_relative(cfg.ckpt_path),
                                                 "source": project_relative(source),
                                                 "seed": cfg.seed,
                                                 "sampling": sampling,
                                                 "horizons": horizons,
                                                 "persistence": persistence.summary()})
    print(f"wrote {out}")
    return out


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="strip")
def main(cfg: DictConfig) -> None:
    with user_errors():  # one line and exit status 2, like every command
        try:
            run(cfg)
        except (FileNotFoundError, ValueError, IndexError, TypeError) as error:  # bad horizons/context/video values
            raise UserError(str(error)) from None


if __name__ == "__main__":
    main()
