"""The DataModule every experiment uses: clips from a folder of videos, optionally generated first."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import lightning as L
from torch.utils.data import DataLoader

from lightning_ssmvid.data.video_folder import (
    ClipDataset, FixedClipSampler, RandomClipSampler, VideoEntry, collate_clips, scan_videos, split_videos,
)
from lightning_ssmvid.data.video_io import list_videos

log = logging.getLogger(__name__)


class VideoDataModule(L.LightningDataModule):
    """Batches ``{"frames": (B, T, 3, S, S) uint8, "video": (B,), "start": (B,)}`` from ``root``.

    ``generator`` (optional) is a callable ``generator(root) -> dataset_dir`` that writes a synthetic set once
    (cached by its config); without it, ``root`` is a folder of the user's videos (``train/``/``val/`` subfolders,
    or a deterministic ``val_fraction`` split of the files).
    """

    def __init__(
        self,
        root: str,
        generator: Callable[[str], Path] | None = None,
        clip_length: int = 16,
        frame_size: int = 32,
        stride: int = 1,
        batch_size: int = 8,
        num_workers: int = 0,
        samples_per_epoch: int | None = None,
        val_clips_per_video: int = 1,
        val_fraction: float = 0.1,
        seed: int = 0,
    ):
        super().__init__()
        if root in (None, "", "???"):
            raise ValueError("data.root is not set: point it at a folder of videos, e.g. data.root=/path/to/videos")
        self.root, self.generator = Path(root), generator
        self.clip_length, self.frame_size, self.stride = clip_length, frame_size, stride
        self.batch_size, self.num_workers = batch_size, num_workers
        self.samples_per_epoch, self.val_clips_per_video = samples_per_epoch, val_clips_per_video
        self.val_fraction, self.seed = val_fraction, seed
        self.skipped: dict[str, int] = {}
        self.train_set = self.val_set = None

    @property
    def dataset_dir(self) -> Path:
        return self.generator(self.root) if self.generator is not None else self.root

    def prepare_data(self) -> None:
        """Write the synthetic set if it is missing (rank 0 only; a no-op for a folder of real videos)."""
        _ = self.dataset_dir

    def _scan(self, files: list[Path], label: str) -> list[VideoEntry]:
        videos, skipped = scan_videos(files, min_frames=(self.clip_length - 1) * self.stride + 1)
        self.skipped.update({f"{label}/{reason}": count for reason, count in skipped.items() if count})
        if any(skipped.values()):
            log.warning("%s videos of %s: %d kept, skipped %s", label, self.dataset_dir, len(videos), skipped)
        return videos

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        folder = self.dataset_dir
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder {folder} does not exist")
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            splits = {split: self._scan(list_videos(folder / split), split) for split in ("train", "val")}
        else:
            splits = split_videos(self._scan(list_videos(folder), "all"), self.val_fraction)
        for split, videos in splits.items():
            if not videos:
                span = (self.clip_length - 1) * self.stride + 1
                raise FileNotFoundError(f"no readable video with at least {span} frames in {folder} ({split} split; "
                                        f"skipped: {self.skipped or 'none'})")
        make = lambda videos: ClipDataset(videos, self.clip_length, self.frame_size, self.stride)  # noqa: E731
        self.train_set, self.val_set = make(splits["train"]), make(splits["val"])

    def _loader(self, dataset: ClipDataset, sampler) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            collate_fn=collate_clips, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        num_samples = self.samples_per_epoch or len(self.train_set.videos)
        return self._loader(self.train_set, RandomClipSampler(self.train_set, num_samples, seed=self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, FixedClipSampler(self.val_set, self.val_clips_per_video))
