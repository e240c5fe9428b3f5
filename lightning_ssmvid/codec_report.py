"""How much of a long-memory scene a stage-1 codec keeps, and how much of it survives a latent drawn slightly wrong.

    python -m lightning_ssmvid.codec_report --codec data/codecs/HASH --out reports/codecs/NAME

A head draws latents with some error, so a codec whose decoder turns a small latent error into another colour cannot
give a rollout that keeps its objects, however good the head. For each of ``--clips`` validation clips of a
long-memory data set, every ``--every``-th frame of ``--frames`` is rendered exactly from its sidecar, encoded,
perturbed by Gaussian noise of ``sigma`` x each latent dim's spread (over the scored frames; on the codec's grid
dims, its frame-pooled dims, or all), decoded and scored as a rollout frame is (``metrics/scene.py``): the object
colours kept and the occluder kept. ``sigma = 0`` is the codec's own ceiling. Writes ``<out>/codec.json`` and
``<out>/codec.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from lightning_ssmvid.codecs.conv import ConvCodec
from lightning_ssmvid.data.long_memory import list_clips, load_sidecar, render_frames
from lightning_ssmvid.metrics.scene import frames_kept
from lightning_ssmvid.stages import load_codec_state
from lightning_ssmvid.utils.errors import UserError
from lightning_ssmvid.utils.files import write_json_atomic

PARTS = ("grid", "pooled", "all")  # which latent dims are perturbed


def load_stage1_codec(path: Path) -> ConvCodec:
    """A stage-1 codec from its folder (or its ``codec.pt``): weights and the architecture in ``identity.yaml``, read
    as plain values (only ``ConvCodec`` is built: a file names no class to run)."""
    folder = path if path.is_dir() else path.parent
    identity = folder / "identity.yaml"
    if not identity.is_file():
        raise UserError(f"{folder} has no identity.yaml: pass a codec folder written by stage 1 (data/codecs/HASH)")
    spec = (yaml.safe_load(identity.read_text()) or {}).get("codec")
    if not isinstance(spec, dict) or spec.get("_target_", "").rsplit(".", 1)[-1] != "ConvCodec":
        raise UserError(f"{identity} does not describe a ConvCodec; codec_report scores the conv codec only")
    codec = ConvCodec(**{k: v for k, v in spec.items() if k != "_target_"})
    codec.load_state_dict(load_codec_state(folder / "codec.pt"))
    return codec.eval()


def perturbed(z: Tensor, spread: Tensor, sigma: float, part: str, pooled_dims: int,
              generator: torch.Generator) -> Tensor:
    """z (N, L) plus ``sigma`` x ``spread`` (L,) Gaussian noise on the ``part`` dims (the grid: all but the last
    ``pooled_dims``)."""
    mask = torch.zeros_like(spread)
    grid_dims = z.shape[1] - pooled_dims
    if part in ("grid", "all"):
        mask[:grid_dims] = 1
    if part in ("pooled", "all"):
        mask[grid_dims:] = 1
    return z + sigma * spread * mask * torch.randn(z.shape, generator=generator, dtype=z.dtype)


def score(codec, clips: list[dict], frames: list[int], sigmas: list[float], parts: list[str], seed: int = 0) -> dict:
    """``codec`` (``encode`` (N, C, S, S) in [0, 1] -> (N, L), ``decode`` -> logits, ``global_dim``) over the exact
    frames ``frames`` of each clip's sidecar -> ``{"<part> sigma=<s>": {"colours_kept": .., "occluder_kept": ..}}``
    (means over every scored frame; objects not in view are not counted)."""
    encoded = []
    with torch.no_grad():
        for sidecar in clips:
            wanted = [t for t in frames if t < sidecar["n_frames"]]
            if not wanted:  # a clip shorter than the first scored frame: nothing to score
                continue
            pictures = np.stack([f for t, f in enumerate(render_frames(sidecar, 0, max(wanted) + 1)) if t in wanted])
            x = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255
            encoded.append((sidecar, wanted, codec.encode(x)))
    if not encoded:
        raise ValueError(f"no clip has a frame among {frames[:1]}...{frames[-1:]}")
    spread = torch.cat([z for *_, z in encoded]).std(0)
    pooled = int(getattr(codec, "global_dim", 0) or 0)
    out = {}
    for part in parts:
        for sigma in sigmas:
            if sigma == 0 and part != parts[0]:
                continue  # unperturbed: the same for every part
            generator = torch.Generator().manual_seed(seed)
            colours, occluder = [], []
            for sidecar, wanted, z in encoded:
                with torch.no_grad():
                    decoded = torch.sigmoid(codec.decode(perturbed(z, spread, sigma, part, pooled, generator)))
                clip_colours, clip_occluder = frames_kept(sidecar, wanted, decoded)
                colours += clip_colours
                occluder += clip_occluder
            key = "unperturbed" if sigma == 0 else f"{part} sigma={sigma:g}"
            out[key] = {"colours_kept": float(np.mean(colours)) if colours else float("nan"),
                        "occluder_kept": float(np.mean(occluder)), "frames": len(occluder)}
    return out


def markdown(codec_path: str, layout: str, figures: dict) -> str:
    lines = [f"# What the codec keeps ({codec_path}; {layout})", "",
             "| latent perturbed | colours kept | occluder kept | frames |", "|---|---|---|---|"]
    for key, f in figures.items():
        lines.append(f"| {key} | {f['colours_kept']:.3f} | {f['occluder_kept']:.3f} | {f['frames']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", type=Path, required=True, help="a stage-1 codec folder (data/codecs/HASH)")
    parser.add_argument("--data", type=Path, default=None,
                        help="a long-memory split folder (default: the val/ split of the one data set in data/)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=496, help="score frames 16..frames-1")
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.5])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", type=Path, default=Path("reports/codecs"))
    args = parser.parse_args(argv)
    if args.data is None:
        found = sorted(Path("data").glob("long_memory-*/val"))
        if len(found) != 1:
            raise SystemExit(f"codec_report: pass --data (found {len(found)} long-memory val folders in data/)")
        args.data = found[0]
    try:
        paths = list_clips(args.data)[: args.clips]
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"codec_report: {args.data} is not a complete long-memory split ({error})") from None
    if not paths:
        raise SystemExit(f"codec_report: no long-memory clips in {args.data}")
    try:
        codec = load_stage1_codec(args.codec)
    except UserError as error:
        raise SystemExit(f"codec_report: {error}") from None
    figures = score(codec, [load_sidecar(p) for p in paths], list(range(16, args.frames, args.every)), args.sigmas,
                    args.parts)
    layout = f"latent {codec.latent_dim}: an {codec.grid}x{codec.grid}x{codec.latent_channels} grid + " \
             f"{codec.global_dim} frame-pooled dims"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "codec.json", {"codec": str(args.codec), "layout": layout, "data": str(args.data),
                                                "clips": len(paths), "figures": figures})
    text = markdown(str(args.codec), layout, figures)
    (args.out / "codec.md").write_text(text)
    print(text)
    return figures


if __name__ == "__main__":
    main()
