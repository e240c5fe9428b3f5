"""Where a head's one-step draws go wrong on long-memory clips: on the cells the objects cover, or elsewhere?

    python -m lightning_ssmvid.draw_error --ckpt RUN/checkpoints/last.ckpt --out reports/draw_error/NAME

Teacher-forced, as ``make generate``'s one-step reference: each of ``--clips`` validation clips is rendered exactly
from its sidecar over frames 0..``--last``, encoded by the run's codec and read by the core in one pass; the head
draws every frame after the 16th from the real frames before it (at each ``--temperatures``, and its mean for a
stochastic head). Each draw's absolute latent error is divided by the head's per-dim unit (its running RMS of the
target, ``head.scale``) and averaged over the grid cells any object covers in the real frame, the other cells, and
the frame-pooled dims; beside it the same for copying the last frame, and for each the share of the object
colours the decoded draw keeps (``metrics/scene.py``). A head that has learnt to redraw what it reads errs less than
copy-last on every part. Writes ``<out>/draw_error.json`` and ``draw_error.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lightning_ssmvid.data.long_memory import load_sidecar, object_mask, render_frames
from lightning_ssmvid.metrics.scene import frames_kept
from lightning_ssmvid.utils.errors import UserError
from lightning_ssmvid.utils.files import write_json_atomic

CONTEXT = 16  # the first frame drawn is the 17th, as in make generate


def object_cells(sidecar: dict, frames: range, grid: int) -> Tensor:
    """(len(frames), grid, grid) bool: the cells any object's pixels fall in, per frame."""
    size = sidecar["frame_size"]
    cells = np.zeros((len(frames), grid, grid), bool)
    for i, t in enumerate(frames):
        covered = np.zeros((size, size), bool)
        for k in range(len(sidecar["objects"])):
            covered |= object_mask(sidecar, k, t)
        cells[i] = covered.reshape(grid, size // grid, grid, size // grid).any((1, 3))
    return torch.from_numpy(cells)


def mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@torch.no_grad()
def draw_errors(model, sidecar: dict, last: int, temperatures: list[float], seed: int = 0) -> dict[str, dict]:
    """One clip: ``{draw: {"object_cells", "other_cells", "pooled", "colours_kept"}}`` for the head's draws at each
    temperature (``"t=<T>"``), its ``"mean"`` (stochastic heads) and ``"copy last"``. ``model``: a VideoModel (codec
    with ``grid``/``latent_channels``/``global_dim``, ``core``, ``embed``, ``head``)."""
    codec, head = model.codec, model.head
    last = min(last, sidecar["n_frames"] - 1)
    if last <= CONTEXT:
        raise ValueError(f"draw_error needs frames past the {CONTEXT}-frame context; the clip has {last + 1}")
    pictures = np.stack(list(render_frames(sidecar, 0, last + 1)))
    z = codec.encode(torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255)[None]  # (1, T, L)
    h, _ = model.core(model.embed(z))
    reads, real, targets = z[:, CONTEXT - 1 : last], z[0, CONTEXT : last + 1], range(CONTEXT, last + 1)
    draws = {}
    generator = torch.Generator().manual_seed(seed)
    if getattr(head, "stochastic", False):
        chosen = head.temperature
        for temperature in temperatures:
            head.temperature = temperature
            draws[f"t={temperature:g}"] = head.sample(h[:, CONTEXT - 1 : last], reads, generator=generator)[0]
        head.temperature = chosen
    draws["mean"] = head.mean(h[:, CONTEXT - 1 : last], reads)[0]
    draws["copy last"] = reads[0]
    grid, channels = codec.grid, codec.latent_channels
    on_objects = object_cells(sidecar, targets, grid)  # (N, G, G)
    unit = getattr(head, "scale", None)
    unit = torch.ones(z.shape[-1]) if unit is None else unit
    out = {}
    for name, draw in draws.items():
        error = (draw - real).abs() / unit
        cells = error[:, : grid * grid * channels].reshape(-1, channels, grid, grid).permute(0, 2, 3, 1)
        pooled = error[:, grid * grid * channels :]
        out[name] = {"object_cells": float(cells[on_objects].mean()) if on_objects.any() else float("nan"),
                     "other_cells": float(cells[~on_objects].mean()) if (~on_objects).any() else float("nan"),
                     "pooled": float(pooled.mean()) if pooled.numel() else float("nan"),
                     "colours_kept": mean_or_nan(frames_kept(sidecar, targets, torch.sigmoid(codec.decode(draw)))[0])}
    return out


def main(argv: list[str] | None = None) -> dict:
    from lightning_ssmvid.generate import dataset_video
    from lightning_ssmvid.model import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a run's checkpoint (RUN/checkpoints/last.ckpt)")
    parser.add_argument("--clips", type=int, nargs="+", default=[0, 1, 2, 3], help="validation clip indices")
    parser.add_argument("--last", type=int, default=200, help="draw frames 17..last")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--out", type=Path, default=Path("reports/draw_error"))
    args = parser.parse_args(argv)
    try:
        model = load_model(args.ckpt)
        paths = [dataset_video(model.run_config["data"], "val", i) for i in args.clips]
    except (UserError, OSError, IndexError, KeyError, ValueError) as error:
        raise SystemExit(f"draw_error: {error}") from None
    if not hasattr(model.codec, "latent_channels"):
        raise SystemExit("draw_error: needs the conv codec (a latent grid of cells)")
    try:
        per_clip = [draw_errors(model, load_sidecar(path), args.last, args.temperatures) for path in paths]
    except (OSError, ValueError, KeyError) as error:  # no sidecar (not a long-memory run), or too short a clip
        raise SystemExit(f"draw_error: {error}") from None
    means = {name: {key: float(np.nanmean([clip[name][key] for clip in per_clip])) for key in per_clip[0][name]}
             for name in per_clip[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "draw_error.json", {"ckpt": args.ckpt, "clips": args.clips, "last": args.last,
                                                     "means": means, "per_clip": per_clip})
    lines = [f"# One-step draw error ({args.ckpt}; val clips {args.clips}, frames {CONTEXT + 1}-{args.last})", "",
             "| draw | error on object cells | on other cells | on frame-pooled dims | colours kept |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {m['object_cells']:.3f} | {m['other_cells']:.3f} | {m['pooled']:.3f} | "
              f"{m['colours_kept']:.3f} |" for name, m in means.items()]
    text = "\n".join(lines) + "\n"
    (args.out / "draw_error.md").write_text(text)
    print(text)
    return means


if __name__ == "__main__":
    main()
