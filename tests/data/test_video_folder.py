"""The DataModule on freshly written video files, including broken and too-short ones."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lightning_ssmvid.data.datamodule import VideoDataModule
from lightning_ssmvid.data.video_folder import FixedClipSampler
from lightning_ssmvid.data.video_io import open_video, read_frames, write_video
from lightning_ssmvid.utils.errors import UserError


def clip(n_frames: int, size: int, value0: int = 0) -> list[np.ndarray]:
    return [np.full((size, size, 3), (value0 + 3 * i) % 256, np.uint8) for i in range(n_frames)]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "videos"
    for i in range(4):
        write_video(root / f"good_{i}.mp4", clip(40, 64, 10 * i))
    write_video(root / "odd_size.mp4", [np.full((36, 48, 3), 7, np.uint8)] * 40)
    write_video(root / "short.mp4", clip(5, 64))
    (root / "empty.mp4").write_bytes(b"")
    (root / "not_a_video.avi").write_bytes(b"this is not a video" * 100)
    truncated = (root / "good_0.mp4").read_bytes()
    (root / "truncated.mkv").write_bytes(truncated[: len(truncated) // 3])
    return root


def test_reads_exact_frames_lossless(tmp_path):
    frames = clip(12, 64)
    write_video(tmp_path / "a.mp4", frames)
    got = read_frames(open_video(tmp_path / "a.mp4"), start=2, length=5, stride=2)
    expected = torch.from_numpy(np.stack(frames[2:12:2])).permute(0, 3, 1, 2)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("size", [32, 48, 96])
def test_reads_widths_decord_cannot_copy_natively(tmp_path, size):
    write_video(tmp_path / "a.mp4", clip(3, size, 50))
    got = read_frames(open_video(tmp_path / "a.mp4", frame_size=32), 0, 3, frame_size=32)
    assert got.shape == (3, 3, 32, 32)
    assert (got.float() - torch.tensor([50.0, 53, 56]).view(3, 1, 1, 1)).abs().max() <= 2


def test_datamodule_skips_bad_files_and_counts_them(folder, caplog):
    dm = VideoDataModule(root=str(folder), clip_length=8, frame_size=32, batch_size=2, val_fraction=0.25)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    n_good = len(dm.train_set.videos) + len(dm.val_set.videos)
    assert n_good == 5  # 4 good + the odd-sized one
    assert sum(dm.skipped.values()) == 4
    assert any(key.endswith("too_short") for key in dm.skipped)
    skipped_names = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    for name in ("short.mp4", "empty.mp4", "not_a_video.avi", "truncated.mkv"):
        assert any(name in message for message in skipped_names), name
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (2, 8, 3, 32, 32) and batch["frames"].dtype == torch.uint8


def test_clips_follow_seed_and_epoch(folder):
    dm = VideoDataModule(root=str(folder), clip_length=8, frame_size=32, batch_size=2, samples_per_epoch=6)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = [b["start"].tolist() + b["video"].tolist() for b in loader]
    assert first == [b["start"].tolist() + b["video"].tolist() for b in loader]
    loader.sampler.set_epoch(1)
    assert first != [b["start"].tolist() + b["video"].tolist() for b in loader]


def test_train_and_val_subfolders(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            write_video(tmp_path / split / f"{i}.mp4", clip(20, 64, i))
    dm = VideoDataModule(root=str(tmp_path), clip_length=10, frame_size=32, val_clips_per_video=2)
    dm.setup("fit")
    assert len(dm.train_set.videos) == 3 and len(dm.val_set.videos) == 2
    assert len(dm.val_dataloader().sampler) == 4


def test_folder_without_readable_video_names_the_folder(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    dm = VideoDataModule(root=str(tmp_path), clip_length=8)
    with pytest.raises(UserError, match=str(tmp_path)):
        dm.setup("fit")


def test_missing_root_is_a_clear_error():
    with pytest.raises(ValueError, match="data.root"):
        VideoDataModule(root="???")


@pytest.mark.parametrize("n_videos, clips_per_video, world_size, fillers", [(3, 2, 2, 0), (1, 1, 3, 2), (4, 1, 3, 1),
                                                                          (2, 3, 4, 1)])
def test_validation_clips_split_over_ranks_exactly_once_with_fillers(tmp_path, n_videos, clips_per_video, world_size,
                                                                     fillers):
    for i in range(n_videos):
        write_video(tmp_path / f"v{i}.mp4", clip(20, 64, 10 * i))
    dm = VideoDataModule(root=str(tmp_path), clip_length=4, frame_size=32, batch_size=2, val_fraction=0.5)
    dm.setup()
    ranks = [list(FixedClipSampler(dm.val_set, clips_per_video, rank, world_size)) for rank in range(world_size)]
    assert len({len(items) for items in ranks}) == 1 and ranks[0], "every rank runs as many clips as the others, >0"
    assert sum(not item[2] for items in ranks for item in items) == fillers
    valid = [item[:2] for items in ranks for item in items if item[2]]
    expected = [item[:2] for item in FixedClipSampler(dm.val_set, clips_per_video)]
    assert sorted(valid) == sorted(expected) and len(set(expected)) == len(expected), "each clip exactly once"
