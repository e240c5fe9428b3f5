"""Random fixed-length clips from a folder of video files, read through decord."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lightning_ssmvid.data.streaming import SegmentItem
from lightning_ssmvid.data.video_io import open_video, read_frames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoEntry:
    path: Path
    n_frames: int


def scan_videos(paths: list[Path], min_frames: int) -> tuple[list[VideoEntry], dict[str, int]]:
    """Open every file once; keep readable videos with at least ``min_frames`` frames.

    Returns the kept entries and counts of what was skipped (each skip is logged once with its reason).
    """
    kept, skipped = [], {"unreadable": 0, "too_short": 0}
    for path in paths:
        try:
            reader = open_video(path)
            n_frames = len(reader)
            if n_frames > 0:
                reader.get_batch([0])  # some broken files open but fail on the first decode
            del reader
        except Exception as error:  # decord raises its own error types for every kind of bad file
            skipped["unreadable"] += 1
            log.warning("skipped %s: unreadable video (%s)", path, str(error).splitlines()[0][:200])
            continue
        if n_frames < min_frames:
            skipped["too_short"] += 1
            log.warning("skipped %s: %d frames, fewer than the %d needed", path, n_frames, min_frames)
            continue
        kept.append(VideoEntry(path, n_frames))
    return kept, skipped


class ClipDataset(Dataset):
    """Item ``(video_index, start)`` -> ``{"frames": (T, 3, S, S) uint8, "video": index, "start": start}``.

    With ``latents`` (a function ``video path -> memory-mapped (n_frames, D) array``, from the latent cache) items
    hold ``"latents": (T, D) float32`` instead of frames, and no video is decoded. With ``labels`` (a function
    ``video path -> (n_frames,) int array or None``) items also hold ``"cue": (T,) int64`` when every video has
    labels (long-memory sidecars); otherwise none does.
    """

    def __init__(self, videos: list[VideoEntry], clip_length: int, frame_size: int, stride: int = 1,
                 max_open_readers: int = 8, latents: Callable[[Path], np.ndarray] | None = None,
                 labels: Callable[[Path], np.ndarray | None] | None = None):
        self.videos, self.clip_length, self.frame_size, self.stride = videos, clip_length, frame_size, stride
        self.max_open_readers, self.latents = max_open_readers, latents
        self.key = "frames" if latents is None else "latents"
        self._readers: OrderedDict[int, object] = OrderedDict()
        self._labels = [labels(v.path) for v in videos] if labels is not None else []
        if not self._labels or any(label is None for label in self._labels):  # all or nothing: batches must stack
            self._labels = []

    @property
    def span(self) -> int:
        """Frames of the source video one clip covers."""
        return (self.clip_length - 1) * self.stride + 1

    def _reader(self, index: int):
        if index in self._readers:
            self._readers.move_to_end(index)
        else:
            path = self.videos[index].path
            self._readers[index] = open_video(path, self.frame_size) if self.latents is None else self.latents(path)
            if len(self._readers) > self.max_open_readers:
                self._readers.popitem(last=False)
        return self._readers[index]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, item) -> dict:
        """``item``: ``(video, start[, valid])`` or a streaming ``SegmentItem`` (which adds ``reset``/``valid``)."""
        if isinstance(item, SegmentItem):
            # an invalid filler slot reads a real clip too (cheap, same shape); its loss weight is zero
            return {self.key: self._read(item.video, item.start), "video": item.video, "start": item.start,
                    "reset": item.reset, "valid": item.valid, "batch_index": item.batch_index,
                    **self._cue(item.video, item.start)}
        index, start, *valid = item  # (video, start) or (video, start, valid)
        out = {self.key: self._read(index, start), "video": index, "start": start, **self._cue(index, start)}
        return (out | {"valid": valid[0]}) if valid else out

    def _cue(self, index: int, start: int) -> dict:
        """``{"cue": (T,) int64}`` labels of the clip, or nothing for videos without labels."""
        if not self._labels:
            return {}
        return {"cue": torch.from_numpy(self._labels[index][start : start + self.span : self.stride].copy())}

    def _read(self, index: int, start: int) -> torch.Tensor:
        """(T, 3, S, S) uint8 frames, or (T, D) float32 latents."""
        if self.latents is not None:
            stop = start + (self.clip_length - 1) * self.stride + 1
            return torch.from_numpy(np.array(self._reader(index)[start : stop : self.stride]))
        return read_frames(self._reader(index), start, self.clip_length, self.stride, self.frame_size)

    def __getstate__(self):  # readers hold native handles: each worker opens its own
        return {**self.__dict__, "_readers": OrderedDict()}


class RandomClipSampler(Sampler):
    """``num_samples`` random ``(video, start)`` pairs per epoch, drawn from ``(seed, epoch)`` only, dealt to ranks.

    Depending on nothing but the seed and the epoch makes a resumed run see exactly the clips of an uninterrupted one;
    rank ``r`` of ``world_size`` takes draws ``r, r + world_size, ...`` (``num_samples`` is rounded up to a multiple
    of ``world_size`` so every rank runs the same number of steps).
    """

    def __init__(self, dataset: ClipDataset, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1):
        self.dataset, self.seed, self.epoch, self.batch_size = dataset, seed, 0, batch_size
        self.skip = 0  # batches of this epoch already consumed (resume mid-epoch)
        self.rank, self.world_size = rank, world_size
        self.total = -(-num_samples // world_size) * world_size
        self.num_samples = self.total // world_size

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        videos = rng.integers(0, len(self.dataset.videos), self.total)
        last_starts = np.array([video.n_frames - self.dataset.span for video in self.dataset.videos])
        starts = (rng.random(self.total) * (last_starts[videos] + 1)).astype(int)
        mine = list(zip(videos, starts))[self.rank :: self.world_size]
        for index, start in mine[self.skip * self.batch_size :]:
            yield int(index), int(start)
        self.skip = 0


class FixedClipSampler(Sampler):
    """Validation clips: ``clips_per_video`` evenly spaced clips of every video, always the same, as
    ``(video, start, valid)``.

    Rank ``r`` takes items ``r, r + world_size, ...``; ranks left short are topped up with ``valid=False`` fillers
    (re-reads of the first clip with weight zero, never counted), so every rank has the same number of clips (none
    is empty) and sums over ranks are exact.
    """

    def __init__(self, dataset: ClipDataset, clips_per_video: int = 1, rank: int = 0, world_size: int = 1):
        items = []
        for index, video in enumerate(dataset.videos):
            last_start = video.n_frames - dataset.span
            starts = np.linspace(0, last_start, clips_per_video).round().astype(int)
            items += [(index, int(start), True) for start in sorted(set(starts.tolist()))]
        mine = items[rank::world_size]
        fillers = -(-len(items) // world_size) - len(mine)
        self.items = mine + [(*items[0][:2], False)] * fillers if fillers else mine

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


def split_videos(videos: list[VideoEntry], val_fraction: float) -> dict[str, list[VideoEntry]]:
    """A deterministic split of sorted videos: the last ``val_fraction`` (at least one) for validation.

    A single video serves both splits (nothing else is possible; a warning says so).
    """
    if len(videos) < 2:
        if videos:
            log.warning("only one usable video (%s): it is used for both training and validation", videos[0].path)
        return {"train": videos, "val": videos}
    n_val = min(len(videos) - 1, max(1, round(len(videos) * val_fraction)))
    return {"train": videos[:-n_val], "val": videos[-n_val:]}


def collate_clips(items: list[dict]) -> dict:
    """Stack frames (B, T, 3, S, S) or latents (B, T, D); turn the per-item scalars into (B,) tensors."""
    batch = {}
    for key, value in items[0].items():
        if isinstance(value, torch.Tensor):
            batch[key] = torch.stack([item[key] for item in items])
        else:
            batch[key] = torch.tensor([item[key] for item in items])
    return batch
