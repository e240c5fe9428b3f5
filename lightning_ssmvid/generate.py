"""Generate a long video from a trained checkpoint, streamed to an MP4 (constant memory for bounded-state cores).

    python -m lightning_ssmvid.generate ckpt_path=RUN/checkpoints/last.ckpt frames=2000
    python -m lightning_ssmvid.generate ckpt_path=CKPT frames=500 video=3 split=val side_by_side=true
    python -m lightning_ssmvid.generate ckpt_path=CKPT frames=500 context_video=any_video.mp4

A Hydra app (``conf/generate.yaml`` lists every key). The first ``context`` frames of a video of the run's data set
(or of ``context_video``) are read through decord at the model's frame size and stride; the model rolls out
``frames`` frames after them.

Output format: the MP4 holds ``context + frames`` frames: the K context frames first, marked with a thin red
border (so a viewer sees where generation starts), then the N generated frames. ``side_by_side`` doubles the
width: real | generated, the real continuation read in chunks from the source video (black once it ends).
Default output: ``<run folder>/generated/<video>_<N>f.mp4`` (``..._sbs.mp4`` side by side), where the run folder
is the parent of the checkpoint's ``checkpoints/`` folder.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from lightning_ssmvid.data.video_io import VideoWriter, open_video, read_frames
from lightning_ssmvid.frames import to_unit
from lightning_ssmvid.metrics.persistence import RolloutPersistence, rollout_bands
from lightning_ssmvid.metrics.scene import SceneKept, scene_bands
from lightning_ssmvid.pictures import side_by_side, to_image, with_border
from lightning_ssmvid.sampling import apply_sampling
from lightning_ssmvid.streamed_rollout import streamed_rollout
from lightning_ssmvid.utils.config import CONFIG_DIR
from lightning_ssmvid.utils.errors import UserError, user_errors
from lightning_ssmvid.utils.files import write_json_atomic
from lightning_ssmvid.utils.memory import rss_mb

CHUNK = 64  # real frames read from the source video at a time (side by side)


class DataUnavailableError(FileNotFoundError):
    """The run's data set cannot be read here; ``context_video=PATH`` gives a context from any video file."""


def iter_real_frames(reader, start: int, stride: int = 1, frame_size: int | None = None,
                     chunk: int = CHUNK) -> Iterator[Tensor]:
    """(3, S, S) uint8 frames ``start, start + stride, ...`` of a decord reader until the video ends, ``chunk`` at a
    time (never the whole video in memory)."""
    n = len(reader)
    while start < n:
        length = min(chunk, (n - 1 - start) // stride + 1)
        yield from read_frames(reader, start, length, stride, frame_size)
        start += length * stride


# ---------------------------------------------------------------------------------------------------- generation
def generate_video(
    model,
    context: Tensor,
    n_frames: int,
    out_path: str | Path,
    *,
    real: Iterable[Tensor] | None = None,
    fps: float = 24,
    reencode: bool | None = None,
    mark_context: bool = True,
    progress: bool = True,
    lossless: bool = False,
    seed: int = 0,
    decode_chunk: int = 16,
    rss_every: int = 1000,
    scene: SceneKept | None = None,
) -> dict:
    """Roll ``model`` out ``n_frames`` frames after ``context`` and stream them to ``out_path`` (MP4).

    context: (K, C, H, W) or (1, K, C, H, W), uint8 or float in [0, 1]. The file holds the K context frames (with a
    red border when ``mark_context``) then the ``n_frames`` generated ones; each generated frame is written as it
    comes, none are kept. ``real``: an iterable of (C, H, W) frames continuing the context; when given, every frame is
    real | generated side by side (black where ``real`` runs out).

    Returns ``frames`` (generated), ``written`` (frames in the file), ``seconds`` and ``frames_per_s`` of the rollout
    loop (model + writing), ``peak_rss_mb`` (largest VmRSS sampled during the rollout), ``start_rss_mb``, ``path``
    and ``persistence``: foreground and motion of the rollout against the context's per horizon band
    (``RolloutPersistence``; ~1 when the objects stay and keep moving, 0 when they vanish or freeze), and
    ``rss_curve``: (frames generated, VmRSS MiB) every ``rss_every`` frames and at the end, and ``nonfinite_from``:
    the first generated frame (1-based) holding a NaN or inf, or None (a diverged rollout: that frame and every later
    one is written black and left out of the persistence and scene figures, which are NaN for bands wholly after it,
    so a diverged video never reads as an empty or frozen one). A stochastic head's draws
    are fixed by ``seed``. With ``scene`` (a long-memory clip's ``SceneKept``), ``scene`` holds whether the
    occluder and the object colours are kept per band (1-16, 17-128, 129-240, 241-N). Latents are drawn in a
    background thread and decoded ``decode_chunk`` at a time (``streamed_rollout``; 1: one at a time in this thread).
    """
    if context.dim() == 4:
        context = context.unsqueeze(0)
    if context.dim() != 5 or context.shape[0] != 1:
        raise ValueError(f"context must be (K, C, H, W) or (1, K, C, H, W), got {tuple(context.shape)}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    real_iter = iter(real) if real is not None else None
    black = None

    def next_real() -> np.ndarray:
        nonlocal black
        frame = next(real_iter, None)
        if frame is None:
            if black is None:
                black = np.zeros((*context.shape[-2:], 3), np.uint8)
            return black
        return to_image(frame)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out_path = Path(out_path)
    persistence = RolloutPersistence(to_unit(context[0]).cpu(), rollout_bands(n_frames))
    start_rss = peak_rss = rss_mb()
    rss_curve, nonfinite_from = [], None
    writer = VideoWriter(out_path, fps=fps, lossless=lossless)
    try:
        for frame in context[0]:
            image = with_border(to_image(frame)) if mark_context else to_image(frame)
            writer.write(side_by_side(image, image) if real_iter is not None else image)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[speed]} frames/s"), TimeRemainingColumn())
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(f"generating {out_path.name}", total=n_frames, speed="-")
            start = time.perf_counter()
            with closing(streamed_rollout(model, context, n_frames, reencode, seed, decode_chunk)) as frames:
                for i, frame in enumerate(frames):
                    if nonfinite_from is None and not torch.isfinite(frame).all():
                        nonfinite_from = i + 1
                    if nonfinite_from is not None:  # diverged: this frame and every later one is black, not scored
                        frame = torch.full_like(frame, float("nan"))
                    persistence.update(frame[0])
                    if scene is not None:
                        scene.update(frame[0])
                    image = to_image(frame[0].nan_to_num(0.0, 0.0, 0.0))
                    writer.write(side_by_side(next_real(), image) if real_iter is not None else image)
                    del frame, image
                    if i % 16 == 15 or i + 1 == n_frames:
                        peak_rss = max(peak_rss, rss_mb())
                        elapsed = time.perf_counter() - start
                        bar.update(task, completed=i + 1, speed=f"{(i + 1) / max(elapsed, 1e-9):.0f}")
                    if (i + 1) % rss_every == 0 or i + 1 == n_frames:
                        rss_curve.append((i + 1, rss_mb()))
            seconds = time.perf_counter() - start
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {
        "frames": n_frames,
        "written": writer.frames_written,
        "seconds": seconds,
        "frames_per_s": n_frames / max(seconds, 1e-9),
        "peak_rss_mb": peak_rss,
        "start_rss_mb": start_rss,
        "rss_curve": rss_curve,
        "path": str(out_path),
        "nonfinite_from": nonfinite_from,
        "persistence": persistence.summary(),
        **({"scene": scene.summary()} if scene is not None else {}),
    }


# ---------------------------------------------------------------------------------------------- data, checkpoint
def load_checkpoint(ckpt: str | Path, device: str = "cpu"):
    """``load_model`` (a missing, damaged or hostile file is a one-line ``UserError``) on ``device``; a model trained
    on snapped latents (``model.train_snap``) snaps its rollouts onto its training codebook (saved in the checkpoint;
    read from the run folder for a checkpoint without it)."""
    from lightning_ssmvid.model import load_model

    model = load_model(str(ckpt), map_location="cpu").to(device)
    if getattr(model, "train_snap", 0) and model.train_snap_book is None:
        model.use_train_codebook(rollout_codebook(model, ckpt, model.train_snap, model.train_snap_pooled))
    return model


def run_folder(ckpt: str | Path) -> Path:
    ckpt = Path(ckpt).resolve()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def dataset_videos(data_config: dict, split: str = "val") -> list[Path]:
    """The videos of ``split`` of the run's data set (``run_config["data"]``), via the data module."""
    from hydra.utils import instantiate

    if split not in ("val", "train", "test"):
        raise ValueError(f"split={split}: must be val, train or test")
    hint = "pass context_video=PATH to start from any video file instead"
    root = Path(str(data_config.get("root")))
    if not root.is_dir():
        raise DataUnavailableError(f"the run's data folder {root} (data.root of the checkpoint's run config) does not "
                                   f"exist here; {hint}")
    try:
        dm = instantiate(data_config, _convert_="all")
        dm.prepare_data()
        if split == "test":
            from lightning_ssmvid.data.video_io import list_videos

            videos = list_videos(dm.dataset_dir / getattr(dm, "test_split", "test"))
        else:
            dm.setup()
            videos = [v.path for v in (dm.val_set if split == "val" else dm.train_set).videos]
    except (FileNotFoundError, OSError) as error:
        raise DataUnavailableError(f"the run's data set under {root} cannot be read ({error}); {hint}") from error
    if not videos:
        raise DataUnavailableError(f"no {split} videos in {dm.dataset_dir} (this data set may have no {split} split); "
                                   f"{hint}")
    return [Path(v) for v in videos]


def dataset_video(data_config: dict, split: str = "val", index: int = 0) -> Path:
    """The ``index``-th video of ``split`` of the run's data set (``run_config["data"]``)."""
    videos = dataset_videos(data_config, split)
    if not 0 <= index < len(videos):
        raise IndexError(f"video={index} is out of range: the {split} split has {len(videos)} videos (0..."
                         f"{len(videos) - 1})")
    return videos[index]


def rollout_codebook(model, ckpt: str | Path, k: int, k_pooled: int = 0):
    """The ``CellCodebook`` that ``snap=k snap_pooled=k_pooled`` snaps a rollout onto (``run_codebook`` of the
    checkpoint's run folder)."""
    return run_codebook(run_folder(ckpt), model.codec, model.run_config["data"], k, k_pooled)


def run_codebook(run_dir: Path, codec, data_config: dict, k: int, k_pooled: int = 0, n_videos: int = 16,
                 every: int = 8):
    """``k`` k-means centroids of grid cells and ``k_pooled`` of frame-pooled parts (0: those stay as drawn), fitted
    on every ``every``-th frame of the first ``n_videos`` training videos of ``data_config``'s data set, encoded by
    ``codec``, and kept in ``run_dir/codebooks/cells_k{k}_pooled{k_pooled}.npz``, so that later rollouts of the run
    (and a run trained on snapped latents, ``model.train_snap``) reuse it. A damaged cache is refitted."""
    from lightning_ssmvid.codecs.codebook import CellCodebook, valid_count

    if not valid_count(k):
        raise ValueError(f"snap={k}: must be an integer >= 2 (the number of centroids)")
    if not valid_count(k_pooled, zero_ok=True):
        raise ValueError(f"snap_pooled={k_pooled}: must be an integer >= 2 (the number of centroids), or 0 for none")
    path = Path(run_dir) / "codebooks" / f"cells_k{int(k)}_pooled{int(k_pooled)}.npz"
    if path.is_file():
        try:
            return CellCodebook.load(path, codec)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # a cache: refit, never trust it
            print(f"refitting the codebook: {path} is damaged or not this codec's ({error})")
    data = dict(data_config)
    frame_size = int(data.get("frame_size") or 32)
    device = next(codec.parameters()).device

    def batches() -> Iterator[Tensor]:
        for video in dataset_videos(data, "train")[:n_videos]:
            reader = open_video(video, frame_size)
            yield to_unit(read_frames(reader, 0, len(reader) // every, every, frame_size)).to(device)

    was_training = codec.training
    codebook = CellCodebook.fit(codec.eval(), batches(), int(k), int(k_pooled))
    codec.train(was_training)  # a codec fitted on at the start of training goes on in the mode it was in
    codebook.save(path)
    return codebook


def set_rollout_snap(model, ckpt: str | Path, k: int, k_pooled: int = 256, feedback: float = 0.0) -> None:
    """Snap ``model``'s rollouts onto ``rollout_codebook(model, ckpt, k, k_pooled)``, carrying ``feedback`` times each
    snap's error on (``snap``, ``snap_pooled`` and ``snap_feedback`` of generate, strip and evaluate); ``k=0`` keeps
    the codebook the model has (none, or its training one: ``model.train_snap``). A feedback outside [0, 1], or one
    with no codebook, is a ``ValueError``."""
    feedback = float(feedback or 0.0)
    if not 0.0 <= feedback <= 1.0:
        raise ValueError(f"snap_feedback={feedback}: must be in [0, 1] (the share of each snap's error carried on)")
    if k:
        model.rollout_snap = rollout_codebook(model, ckpt, k, k_pooled)
    if feedback and getattr(model, "rollout_snap", None) is None:
        raise ValueError(f"snap_feedback={feedback} needs snap=K (a codebook to snap onto)")
    model.rollout_snap_feedback = feedback


def read_context(path: str | Path, n_context: int, frame_size: int, stride: int = 1):
    """(reader, (K, 3, S, S) uint8): the first ``n_context`` frames of ``path`` (``stride`` apart)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"context video {path} does not exist")
    reader = open_video(path, frame_size)
    span = (n_context - 1) * stride + 1
    if len(reader) < span:
        raise ValueError(f"{path} has {len(reader)} frames; a context of {n_context} frames at stride {stride} needs "
                         f"{span} (lower context)")
    return reader, read_frames(reader, 0, n_context, stride, frame_size)


def reference_rollouts(reader, context: Tensor, n_frames: int, stride: int, frame_size: int, codec=None,
                       sidecar: dict | None = None, model=None, seed: int = 0) -> dict[str, dict]:
    """What the references score on a rollout's own measures, over the real frames after ``context``
    (K, 3, S, S) uint8, up to ``n_frames`` of them: ``real`` (the video's frames: the metric's ceiling),
    ``codec`` (each real frame encoded and decoded by ``codec``: the ceiling of any model that draws through it),
    ``copy_last`` (the last context frame held: a frozen rollout), and with ``model``, ``one_step`` (each real frame
    drawn by the model from the real frames before it, teacher-forced, draws fixed by ``seed``: what the model loses
    in one step, before any of its own frames is fed back) and, when the model snaps its rollouts (``snap``),
    ``codec_snapped`` (the codec's latent of each real frame snapped onto that codebook: the ceiling of a snapped
    rollout). Each holds ``frames`` (how many there were),
    the persistence ratios of the bands the video reaches and, with a long-memory ``sidecar``, the scene kept;
    {} when the video ends with the context. Read ``CHUNK`` frames at a time (constant memory)."""
    unit = to_unit(context).cpu()
    names = ("real", "codec", "copy_last") if codec is not None else ("real", "copy_last")
    names += ("one_step",) if model is not None else ()
    snap = getattr(model, "rollout_snap", None) if codec is not None and model is not None else None
    names += ("codec_snapped",) if snap is not None and codec is model.codec else ()
    persistence = {name: RolloutPersistence(unit, rollout_bands(n_frames)) for name in names}
    start = len(context) * stride
    scene = {name: SceneKept(sidecar, start, scene_bands(n_frames)) for name in names} if sidecar else {}
    seen, last = 0, unit[-1]
    device = next(codec.parameters()).device if codec is not None else None
    if model is not None:  # the context's last draw is the first real frame's; each chunk's last, the next chunk's
        generator = model.sampling_generator(seed)
        with torch.no_grad():
            drawn, state = model.predict_latents(model.codec.encode(unit[None].to(model.device)), None, generator)
        pending = drawn[:, -1:]
    real = iter_real_frames(reader, start, stride, frame_size)
    while seen < n_frames:
        chunk = [to_unit(frame) for _, frame in zip(range(min(CHUNK, n_frames - seen)), real)]
        if not chunk:
            break
        frames = {"real": torch.stack(chunk), "copy_last": last.expand(len(chunk), *last.shape)}
        with torch.no_grad():
            encoded = codec.encode(frames["real"].to(device)) if codec is not None else None
            if codec is not None:
                frames["codec"] = torch.sigmoid(codec.decode(encoded)).float().cpu()
            if "codec_snapped" in names:
                frames["codec_snapped"] = torch.sigmoid(codec.decode(snap(encoded))).float().cpu()
            if model is not None:  # the model's own codec is usually ``codec``: its latents are encoded once
                z = encoded if codec is model.codec else model.codec.encode(frames["real"].to(model.device))
                drawn, state = model.predict_latents(z[None], state, generator)
                latents, pending = torch.cat([pending, drawn[:, :-1]], 1), drawn[:, -1:]
                frames["one_step"] = torch.sigmoid(model.codec.decode(latents[0])).float().cpu()
        for name in names:
            for frame in frames[name]:
                persistence[name].update(frame)
                if scene:
                    scene[name].update(frame)
        seen += len(chunk)
    if not seen:
        return {}
    out = {}
    for name in names:  # bands the real video does not reach have no frames (NaN): left out
        figures = {**persistence[name].summary(), **(scene[name].summary() if scene else {})}
        out[name] = {"frames": seen, **{k: v for k, v in figures.items() if v == v}}
    return out


REFERENCE_NAMES = {"real": "the real video", "codec": "the codec's reconstruction of it",
                   "copy_last": "the last context frame held (copy-last)",
                   "one_step": "the model's one-step draws of it (teacher-forced)",
                   "codec_snapped": "the codec's reconstruction, each latent snapped onto the codebook (snap)"}


def long_memory_sidecar(video: Path) -> dict | None:
    """The long-memory sidecar next to ``video``, or None (none there, another kind of .json, or a damaged one)."""
    from lightning_ssmvid.data.long_memory.sidecar import load_sidecar

    path = Path(video).with_suffix(".json")
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        is_sidecar = isinstance(record, dict) and str(record.get("format", "")).startswith("long_memory/")
        return load_sidecar(path) if is_sidecar else None
    except (OSError, ValueError, KeyError) as error:
        print(f"not scoring the scene: {path} is not a readable long-memory sidecar ({error})")
        return None


# ------------------------------------------------------------------------------------------------------------ CLI
def run(cfg: DictConfig) -> dict:
    """Generate as ``cfg`` (``conf/generate.yaml``'s keys) asks; returns ``generate_video``'s result."""
    if cfg.frames < 1 or cfg.context < 1:
        raise ValueError(f"frames={cfg.frames} and context={cfg.context} must be >= 1")
    model = load_checkpoint(cfg.ckpt_path, cfg.device)
    set_rollout_snap(model, cfg.ckpt_path, cfg.snap, cfg.snap_pooled, cfg.snap_feedback)
    sampling = apply_sampling(model, cfg.temperature, cfg.steps, cfg.rollout_noise, cfg.reencode)
    data = dict(model.run_config["data"])
    frame_size, stride = int(data.get("frame_size") or 32), int(data.get("stride") or 1)
    source = Path(cfg.context_video) if cfg.context_video else dataset_video(data, cfg.split, cfg.video)
    reader, context = read_context(source, cfg.context, frame_size, stride)
    real = iter_real_frames(reader, cfg.context * stride, stride, frame_size) if cfg.side_by_side else None
    sidecar = long_memory_sidecar(source) if stride == 1 else None  # a long-memory clip: is its scene kept?
    scene = SceneKept(sidecar, cfg.context, scene_bands(cfg.frames)) if sidecar is not None else None
    fps = cfg.fps or float((data.get("generator") or {}).get("fps") or 24)
    out = Path(cfg.out) if cfg.out else (run_folder(cfg.ckpt_path) / "generated"
                                         / f"{source.stem}_{cfg.frames}f{'_sbs' if cfg.side_by_side else ''}.mp4")
    result = generate_video(model, context, cfg.frames, out, real=real, fps=fps,
                            progress=cfg.progress, seed=cfg.seed, decode_chunk=cfg.decode_chunk, scene=scene)
    references = reference_rollouts(reader, context, cfg.frames, stride, frame_size, model.codec, sidecar, model,
                                    cfg.seed)
    if references:
        result["references"] = references
    write_json_atomic(out.with_suffix(".json"), {**result, "ckpt": str(cfg.ckpt_path), "context": cfg.context,
                                                 "seed": cfg.seed, "source": str(source), "sampling": sampling})
    from rich import print as rprint

    rprint(f"wrote {result['path']}: {cfg.context} context + {result['frames']} generated frames "
           f"({result['frames_per_s']:.1f} frames/s, peak RSS {result['peak_rss_mb']:.0f} MiB)")
    if result["nonfinite_from"] is not None:
        rprint(f"[red]the rollout diverged: generated frame {result['nonfinite_from']} held NaN or inf values; it and "
               "every later frame are written black and not scored[/red]")
    ratios = {k: v for k, v in result["persistence"].items() if "ratio" in k}
    rprint("vs the context: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if "scene" in result:
        rprint("scene kept: " + ", ".join(f"{k} {v:.2f}" for k, v in result["scene"].items()))
    for name, figures in result.get("references", {}).items():  # the same measures' ceilings and frozen baseline
        rprint(f"{REFERENCE_NAMES[name]}, over the real video's {figures['frames']} frames after the context: "
               + ", ".join(f"{k} {v:.2f}" for k, v in figures.items() if "ratio_h" in k or "kept_h" in k))
    return result


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="generate")
def main(cfg: DictConfig) -> None:
    with user_errors():  # one line and exit status 2, like every command
        try:
            run(cfg)
        except (FileNotFoundError, ValueError, IndexError, TypeError) as error:  # bad context/frames/out/video values
            raise UserError(str(error)) from None


if __name__ == "__main__":
    main()
