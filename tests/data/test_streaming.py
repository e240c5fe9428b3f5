"""Stateful streaming: sharding across ranks and workers, state carried like one pass, exact resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_ssmvid.codecs.conv import ConvCodec
from lightning_ssmvid.cores import build_core
from lightning_ssmvid.data.datamodule import VideoDataModule
from lightning_ssmvid.data.streaming import StreamBatchSampler, segments_in
from lightning_ssmvid.data.video_folder import collate_clips
from lightning_ssmvid.data.video_io import write_video
from lightning_ssmvid.model import VideoModel


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    for i, n_frames in enumerate([40, 57, 23, 64, 31, 48, 16]):
        frames = rng.integers(0, 256, (n_frames, 64, 64, 3), dtype=np.uint8)
        write_video(root / ("train" if i < 6 else "val") / f"v{i}.mp4", frames)
    return root


def datamodule(root: Path, **kwargs) -> VideoDataModule:
    dm = VideoDataModule(root=str(root), clip_length=8, frame_size=32, batch_size=3, sampling="stream", **kwargs)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("world_size, num_workers", [(1, 0), (2, 2)])
def test_every_segment_exactly_once_across_ranks_and_workers(videos, world_size, num_workers):
    dm = datamodule(videos, num_workers=num_workers)
    lengths = [v.n_frames for v in dm.train_set.videos]
    expected = Counter((v, k * 8) for v, n in enumerate(lengths) for k in range(segments_in(n, 8, 1)))
    seen, n_batches = Counter(), set()
    for rank in range(world_size):
        sampler = StreamBatchSampler(lengths, 3, 8, rank=rank, world_size=world_size)
        sampler.set_epoch(1)
        loader = DataLoader(dm.train_set, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_clips)
        batches = list(loader)
        n_batches.add(len(batches))
        for batch in batches:
            for v, start, valid in zip(batch["video"], batch["start"], batch["valid"]):
                if valid:
                    seen[(int(v), int(start))] += 1
    assert seen == expected
    assert len(n_batches) == 1  # every rank runs the same number of steps


def test_slots_walk_videos_in_order_with_resets(videos):
    dm = datamodule(videos)
    previous = {}
    for batch in dm.train_dataloader():
        for slot in range(3):
            if not batch["valid"][slot]:
                continue
            video, start = int(batch["video"][slot]), int(batch["start"][slot])
            if batch["reset"][slot]:
                assert start == 0
            else:
                assert previous[slot] == (video, start - 8)
            previous[slot] = (video, start)


def test_segments_with_carried_state_equal_one_full_pass(videos):
    torch.manual_seed(0)
    core = build_core("gru", d_model=16, n_layers=2).eval()
    codec = ConvCodec(frame_size=32, latent_dim=16, width=4).eval()
    dm = datamodule(videos)
    outputs: dict[int, list] = {}
    state = None
    with torch.no_grad():
        for batch in dm.train_dataloader():
            fresh = core.initial_state(3)
            if state is not None:
                state = {k: torch.where((batch["reset"] | ~batch["valid"]).view(-1, 1), fresh[k], v)
                         for k, v in state.items()}
            y, state = core(codec.encode(batch["frames"].float() / 255), state)
            for slot in range(3):
                if batch["valid"][slot]:
                    outputs.setdefault(int(batch["video"][slot]), []).append(y[slot])
        for video, pieces in outputs.items():
            n = len(pieces) * 8
            frames = dm.train_set._read(video, 0) if n == 8 else torch.cat(
                [dm.train_set._read(video, s) for s in range(0, n, 8)])
            full, _ = core(codec.encode(frames.float()[None] / 255))
            torch.testing.assert_close(torch.cat(pieces), full[0], rtol=1e-5, atol=1e-5)


def test_resume_mid_epoch_continues_the_stream_exactly(videos):
    dm = datamodule(videos)
    sampler = dm.train_dataloader().batch_sampler
    sampler.set_epoch(0)
    all_batches = [[(i.video, i.start, i.reset) for i in b] for b in sampler]

    resumed = datamodule(videos)
    resumed.load_state_dict({"stream_position": {"epoch": 0, "consumed": 2}})
    sampler = resumed.train_dataloader().batch_sampler
    sampler.set_epoch(0)  # what Lightning does at the start of the (restarted) epoch
    assert len(sampler) == len(all_batches)
    assert [[(i.video, i.start, i.reset) for i in b] for b in sampler] == all_batches[2:]
    sampler.set_epoch(1)
    assert len(list(sampler)) == len(sampler)


def test_padding_batches_give_zero_loss_with_gradients():
    torch.manual_seed(0)
    model = VideoModel(ConvCodec(frame_size=16, latent_dim=8, width=4), build_core("gru", d_model=8, n_layers=1),
                       optimizer=torch.optim.SGD)
    frames = torch.rand(2, 4, 3, 16, 16)
    out, _ = model.losses({"frames": frames, "valid": torch.tensor([False, False])})
    assert out["loss"].item() == 0 and out["loss"].requires_grad
    one, _ = model.losses({"frames": frames[:1]})
    masked, _ = model.losses({"frames": frames, "valid": torch.tensor([True, False])})
    torch.testing.assert_close(masked["loss"], one["loss"])
