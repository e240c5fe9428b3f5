"""The DataModule every experiment uses: clips from a folder of videos, optionally generated first."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from lightning_ssmvid.data.cue_labels import load_cue_labels
from lightning_ssmvid.data.latent_cache import load_latents
from lightning_ssmvid.data.streaming import StreamBatchSampler
from lightning_ssmvid.data.video_folder import (
    ClipDataset,
    FixedClipSampler,
    RandomClipSampler,
    VideoEntry,
    collate_clips,
    scan_videos,
    split_videos,
)
from lightning_ssmvid.data.video_io import list_videos
from lightning_ssmvid.utils.errors import UserError

log = logging.getLogger(__name__)


class VideoDataModule(L.LightningDataModule):
    """Batches ``{"frames": (B, T, 3, S, S) uint8, "video": (B,), "start": (B,)}`` from ``root`` (plus ``"cue"``
    (B, T) colour labels for long-memory clips, the memory arm's target).

    ``generator`` (optional) is a callable ``generator(root) -> dataset_dir`` that writes a synthetic set once
    (cached by its config); without it, ``root`` is a folder of the user's videos (``train/``/``val/`` subfolders,
    or a deterministic ``val_fraction`` split of the files).

    ``val_split`` names the subfolder validation reads and ``test_split`` the one ``trainer.test`` reads.
    ``sampling="random"``: random clips of ``clip_length``. ``sampling="stream"``: each batch slot walks one video in
    consecutive ``clip_length`` segments; batches add ``reset``/``valid`` (B,) flags and the model carries the core
    state between them. In both modes the position in the epoch is saved in checkpoints (``state_dict``), so a run
    resumed mid-epoch goes on from the next unseen batch. Both modes shard by DDP rank themselves (use
    ``trainer.use_distributed_sampler=false``).
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
        sampling: str = "random",
        val_split: str = "val",
        test_split: str = "test",
        seed: int = 0,
    ):
        super().__init__()
        if root in (None, "", "???"):
            raise ValueError("data.root is not set: point it at a folder of videos, e.g. data.root=/path/to/videos")
        for key, value, least in (("clip_length", clip_length, 2), ("batch_size", batch_size, 1),
                                  ("frame_size", frame_size, 8), ("stride", stride, 1)):
            if not isinstance(value, int) or value < least:
                raise UserError(f"data.{key}={value}: must be an integer >= {least}"
                                + (" (a clip needs a frame to predict and one to predict it from)"
                                   if key == "clip_length" else ""))
        if isinstance(generator, Mapping):  # an experiment's generator settings, composed with data=video_folder
            log.warning("data.generator settings (%s) ignored: this data set reads videos from data.root=%s",
                        ", ".join(map(str, generator)), root)
            generator = None
        self.root, self.generator = Path(root), generator
        self.clip_length, self.frame_size, self.stride = clip_length, frame_size, stride
        self.batch_size, self.num_workers = batch_size, num_workers
        self.samples_per_epoch, self.val_clips_per_video = samples_per_epoch, val_clips_per_video
        if sampling not in ("random", "stream"):
            raise ValueError(f"data.sampling must be 'random' or 'stream', got {sampling!r}")
        self.val_fraction, self.sampling, self.val_split, self.seed = val_fraction, sampling, val_split, seed
        self.test_split = test_split
        self.skipped: dict[str, int] = {}
        self.train_set = self.val_set = self.test_set = None
        self.stream_position = {"epoch": -1, "consumed": 0}  # batches of the epoch the model has trained on

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
        if self.train_set is None:
            self._setup_train_val()
        if stage == "test" and self.test_set is None:  # trainer.test: the test_split folder (the probes fit on train)
            folder = self.dataset_dir / self.test_split
            if not folder.is_dir():
                raise UserError(f"{self.dataset_dir} has no {self.test_split}/ folder to test on: add it, or set "
                                "data.test_split to the folder that holds the test videos")
            videos = self._scan(list_videos(folder), self.test_split)
            if not videos:
                raise UserError(f"no readable video with at least {(self.clip_length - 1) * self.stride + 1} frames "
                                f"in {folder} (skipped: {self.skipped or 'none'})")
            self.test_set = self._dataset(videos)

    def _setup_train_val(self) -> None:
        folder = self.dataset_dir
        if not folder.is_dir():
            raise UserError(f"data.root: data folder {folder} does not exist; pass data.root=DIR, a folder of videos "
                            "(with train/ and val/ subfolders, or videos split by data.val_fraction)")
        if (folder / "train").is_dir() and not (folder / self.val_split).is_dir():
            raise UserError(f"{folder} has a train/ folder but no {self.val_split}/ folder: add it, or set "
                            f"data.val_split to the folder that holds the validation videos")
        if (folder / "train").is_dir():
            splits = {"train": self._scan(list_videos(folder / "train"), "train"),
                      "val": self._scan(list_videos(folder / self.val_split), self.val_split)}
        else:
            splits = split_videos(self._scan(list_videos(folder), "all"), self.val_fraction)
        for split, videos in splits.items():
            if not videos:
                span = (self.clip_length - 1) * self.stride + 1
                raise UserError(f"no readable video with at least {span} frames in {folder} ({split} split; "
                                        f"skipped: {self.skipped or 'none'})")
        self.train_set, self.val_set = self._dataset(splits["train"]), self._dataset(splits["val"])

    def _dataset(self, videos: list[VideoEntry], latents=None) -> ClipDataset:
        return ClipDataset(videos, self.clip_length, self.frame_size, self.stride,
                           max_open_readers=max(8, 2 * self.batch_size), latents=latents, labels=load_cue_labels)

    def use_latent_cache(self, cache_dir: Path) -> None:
        """Read latents from ``cache_dir`` (see ``data.latent_cache``) instead of decoding frames."""
        latents = partial(load_latents, Path(cache_dir), self.dataset_dir)
        self.train_set = self._dataset(self.train_set.videos, latents)
        self.val_set = self._dataset(self.val_set.videos, latents)

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: ClipDataset, sampler=None, batch_sampler=None) -> DataLoader:
        batching = {"batch_sampler": batch_sampler} if batch_sampler else {"batch_size": self.batch_size,
                                                                          "sampler": sampler}
        return DataLoader(dataset, num_workers=self.num_workers, collate_fn=collate_clips,
                          persistent_workers=self.num_workers > 0, **batching)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        if self.sampling == "stream":
            sampler = StreamBatchSampler([v.n_frames for v in self.train_set.videos], self.batch_size,
                                         self.clip_length, self.stride, self.seed, rank, world_size)
        else:
            num_samples = self.samples_per_epoch or len(self.train_set.videos)
            sampler = RandomClipSampler(self.train_set, num_samples, self.seed, rank, world_size, self.batch_size)
        if self.stream_position["epoch"] >= 0:  # resuming: start after the batches already trained on
            sampler.epoch, sampler.skip = self.stream_position["epoch"], self.stream_position["consumed"]
        if self.sampling == "stream":
            return self._loader(self.train_set, batch_sampler=sampler)
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        return self._loader(self.val_set, FixedClipSampler(self.val_set, self.val_clips_per_video, rank, world_size))

    def test_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        return self._loader(self.test_set, FixedClipSampler(self.test_set, self.val_clips_per_video, rank, world_size))

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Count the training batches the model actually consumes (prefetched ones are not yet consumed)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            epoch = trainer.current_epoch
            consumed = self.stream_position["consumed"] + 1 if self.stream_position["epoch"] == epoch else 1
            self.stream_position = {"epoch": epoch, "consumed": consumed}
        return batch

    def state_dict(self) -> dict:
        return {"stream_position": dict(self.stream_position)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.stream_position = dict(state_dict.get("stream_position", self.stream_position))
