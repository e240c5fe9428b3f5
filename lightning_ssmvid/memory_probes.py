"""Memory probes over every event of long-memory clips, with their controls.

One teacher-forced pass per clip (from the latent cache when there is one) gives, for every event:

- ``recall``: the pixel probe of the model's one-step prediction of the first reveal frame, given the real frames
  up to the announcement (the frame before it): memory and drawing, no long rollout. Absent objects count wrong.
- ``codec``: the same probe on the codec's reconstruction of the real reveal frame (the ceiling, per colour).
- ``oracle``: the real reveal frame (must be 100%); ``copy_last``: the real announcement frame repeated (the
  cue is hidden there, so it scores ~0, "absent").
- ``probe``: the state read-out (``metrics.probe.StateProbe``) of the core output at the last hidden frame; fitted on
  training clips (``fit=True``), scored on the others, with its shuffled-label control.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssmvid.data.video_io import open_video, read_frames
from lightning_ssmvid.frames import to_unit
from lightning_ssmvid.metrics.probe import StateProbe
from lightning_ssmvid.metrics.recall import CueRecall, clip_id, event_colour, nearest_bin
from lightning_ssmvid.model import VideoModel

log = logging.getLogger(__name__)
LatentSource = Callable[[Path], np.ndarray] | None


def load_clip_sidecar(video_path: Path) -> dict | None:
    """The long-memory ground truth next to a clip, if there is one."""
    from lightning_ssmvid.data.long_memory.sidecar import load_sidecar

    sidecar = Path(video_path).with_suffix(".json")
    return load_sidecar(sidecar) if sidecar.is_file() else None


@torch.no_grad()
def encode_video(model: VideoModel, reader, frame_size: int, stop: int, chunk: int = 256) -> Tensor:
    """Latents (1, stop, latent) of frames [0, stop) of a video, decoded ``chunk`` frames at a time."""
    pieces = []
    for start in range(0, stop, chunk):
        frames = read_frames(reader, start, min(chunk, stop - start), frame_size=frame_size)
        pieces.append(model.codec.encode(to_unit(frames).to(model.device)))
    return torch.cat(pieces)[None]


def at_sidecar_size(frames: Tensor, sidecar: dict) -> Tensor:
    """Frames (T, 3, S, S) in [0, 1] on the CPU, at the ground truth's resolution (where they are scored)."""
    frames = frames.float().cpu()
    if frames.shape[-1] != sidecar["frame_size"]:
        frames = F.interpolate(frames, size=(sidecar["frame_size"],) * 2, mode="nearest")
    return frames


class MemoryEvaluator:
    """Accumulates the memory probes (see the module docstring) over clips; every part is a torchmetrics Metric."""

    def __init__(self, gap_bins: Sequence[int], n_classes: int, feature_dim: int, batch_size: int = 8):
        self.gap_bins, self.batch_size = tuple(int(b) for b in gap_bins), batch_size
        self.recall, self.codec, self.oracle, self.copy_last = (CueRecall(self.gap_bins, frames="first")
                                                                for _ in range(4))
        self.probe = StateProbe(self.gap_bins, n_classes, feature_dim)
        self.codec_per_colour: dict[int, float] = {}  # the ceiling per true colour, after compute() (curves.json)

    def metrics(self) -> list:
        return [self.recall, self.codec, self.oracle, self.copy_last, self.probe]

    def to(self, device) -> MemoryEvaluator:
        for metric in self.metrics():
            metric.to(device)
        return self

    @torch.no_grad()
    def update(self, model: VideoModel, videos: Sequence[Path], frame_size: int, latents: LatentSource = None,
               fit: bool = False) -> None:
        """Run the probes over ``videos`` (long-memory clips; others are skipped). ``fit``: training clips, which only
        feed the state probe's fit."""
        clips = [(Path(p), s) for p in videos if (s := load_clip_sidecar(Path(p))) is not None and s["events"]]
        by_length: dict[int, list] = {}
        for path, sidecar in clips:
            by_length.setdefault(sidecar["n_frames"], []).append((path, sidecar))
        for group in by_length.values():
            for i in range(0, len(group), self.batch_size):
                self._update_batch(model, group[i : i + self.batch_size], frame_size, latents, fit)

    def _update_batch(self, model: VideoModel, clips: list, frame_size: int, latents: LatentSource, fit: bool) -> None:
        stop = max(max(e["reveal_start"] for e in s["events"]) + 1 for _, s in clips)
        if latents is not None:
            z = torch.stack([torch.from_numpy(np.array(latents(path)[:stop])) for path, _ in clips]).to(model.device)
        else:
            z = torch.cat([encode_video(model, open_video(path, frame_size), frame_size, stop) for path, _ in clips])
        z = z.to(model.dtype)
        per_clip = [[e for e in s["events"] if e["reveal_start"] < stop] for _, s in clips]
        width = max(len(events) for events in per_clip)  # every clip's reveal frames, padded with its last one
        at = torch.tensor([[e["reveal_start"] - 1 for e in events] + [events[-1]["reveal_start"] - 1]
                           * (width - len(events)) for events in per_clip], device=z.device)
        z_hat, h, _ = model.predict_with_features(z, None, model.sampling_generator(0), at=at)
        for b, (path, sidecar) in enumerate(clips):
            events = per_clip[b]
            starts = [e["reveal_start"] for e in events]
            self.probe.update(h[b, [s - 1 for s in starts]], torch.tensor([event_colour(sidecar, e) for e in events]),
                              torch.tensor([nearest_bin(e["gap_bin"], self.gap_bins) for e in events]),
                              torch.full((len(events),), clip_id(sidecar)), fit=fit)
            if fit:
                continue
            decode = lambda latent: torch.sigmoid(model.codec.decode(latent))  # noqa: E731
            predicted, reconstructed = decode(z_hat[b, : len(events)]), decode(z[b, starts])
            reader = open_video(path, frame_size)
            for k, event in enumerate(events):
                one = [{**sidecar, "events": [event]}]
                real = to_unit(read_frames(reader, event["reveal_start"] - 1, 2, frame_size=frame_size))
                for metric, frame in ((self.recall, predicted[k]), (self.codec, reconstructed[k]),
                                      (self.oracle, real[1]), (self.copy_last, real[0])):
                    metric.update([at_sidecar_size(frame[None], sidecar)], one, offsets=[event["reveal_start"]])

    def compute(self, prefix: str = "val") -> dict[str, float]:
        """Scalars ``prefix/...`` (see ``metrics.keys.memory_keys``)."""
        p, out = prefix, {}
        recall = self.recall.compute()
        for b in self.gap_bins:
            for name in (f"recall_gap{b}", f"recall_gap{b}_lo", f"recall_gap{b}_hi", f"recall_absent_gap{b}"):
                out[f"{p}/{name}"] = float(recall[name])
            out[f"{p}/recall_events_gap{b}"] = float(recall[f"events_gap{b}"])
        out[f"{p}/recall"], out[f"{p}/recall_absent"] = float(recall["recall"]), float(recall["recall_absent"])
        out[f"{p}/recall_chance"] = float(recall["chance"])
        codec = self.codec.compute()
        out[f"{p}/recall_codec_ceiling"] = float(codec["recall"])
        per_colour = [v for k, v in codec.items() if k.startswith("recall_colour") and torch.isfinite(v)]
        out[f"{p}/recall_codec_worst_colour"] = float(min(per_colour)) if per_colour else float("nan")
        self.codec_per_colour = {int(k.removeprefix("recall_colour")): float(v) for k, v in codec.items()
                                 if k.startswith("recall_colour") and torch.isfinite(v)}
        out[f"{p}/recall_oracle"] = float(self.oracle.compute()["recall"])
        out[f"{p}/recall_copy_last"] = float(self.copy_last.compute()["recall"])
        out.update({f"{p}/{k}": float(v) for k, v in self.probe.compute().items()})
        return out
