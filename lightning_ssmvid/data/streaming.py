"""Stateful streaming: each batch slot walks one long video in consecutive segments (truncated BPTT).

The schedule is a pure function of (video lengths, seed, epoch, rank, world size), so every rank can compute every
other rank's length (all ranks run the same number of batches, padding with invalid slots), a resumed run can skip
exactly the batches already consumed, and no segment is duplicated or dropped across ranks and workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler


@dataclass(frozen=True)
class SegmentItem:
    """What one batch slot reads: ``video`` from frame ``start``; ``reset`` when a new video begins there."""

    video: int
    start: int
    slot: int
    batch_index: int
    reset: bool
    valid: bool = True


def segments_in(n_frames: int, segment_length: int, stride: int) -> int:
    """Whole segments of ``segment_length`` frames (read ``stride`` apart) in a video of ``n_frames``."""
    return ((n_frames - 1) // stride + 1) // segment_length


def rank_schedule(lengths: list[int], batch_size: int, segment_length: int, stride: int, seed: int, epoch: int,
                  rank: int, world_size: int, shuffle: bool = True) -> list[list[tuple[int, int] | None]]:
    """Per slot, the list of ``(video, segment)`` this rank reads, in order.

    Videos are shuffled by ``(seed, epoch)``, dealt to ranks round-robin, then each goes to the slot with the fewest
    segments so far (so slots end at about the same time).
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    slots: list[list[tuple[int, int]]] = [[] for _ in range(batch_size)]
    for video in order[rank::world_size]:
        n_segments = segments_in(lengths[video], segment_length, stride)
        slot = min(range(batch_size), key=lambda s: len(slots[s]))
        slots[slot] += [(int(video), k) for k in range(n_segments)]
    return slots


class StreamBatchSampler(Sampler):
    """Yields batches (lists of ``batch_size`` ``SegmentItem``) of this rank's stream for the current epoch.

    ``set_epoch`` picks the epoch; ``skip`` batches already consumed (resume mid-epoch). ``len`` is the full epoch,
    equal on every rank.
    """

    def __init__(self, lengths: list[int], batch_size: int, segment_length: int, stride: int = 1, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if min(segments_in(n, segment_length, stride) for n in lengths) < 1:
            raise ValueError(f"every video needs at least one segment of {segment_length} frames at stride {stride}")
        self.lengths, self.batch_size, self.segment_length, self.stride = lengths, batch_size, segment_length, stride
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.epoch, self.skip = 0, 0
        # a sampler attribute with set_epoch: Lightning calls it at every epoch start (see _set_sampler_epoch)
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def _schedule(self, rank: int) -> list[list[tuple[int, int] | None]]:
        return rank_schedule(self.lengths, self.batch_size, self.segment_length, self.stride, self.seed, self.epoch,
                             rank, self.world_size, self.shuffle)

    def __len__(self) -> int:
        """Batches per epoch: the same on every rank and in every epoch (Lightning fixes it from the first one).

        Greedy slot filling ends every slot within one video of the mean, so this bound holds for any shuffle;
        batches past a rank's own schedule hold only invalid filler slots.
        """
        segments = sorted((segments_in(n, self.segment_length, self.stride) for n in self.lengths), reverse=True)
        busiest_rank = sum(segments[: -(-len(segments) // self.world_size)])
        return -(-busiest_rank // self.batch_size) + segments[0]

    def __iter__(self):
        slots, n_batches = self._schedule(self.rank), len(self)
        for b in range(self.skip, n_batches):
            batch = []
            for s, slot in enumerate(slots):
                if b < len(slot):
                    video, k = slot[b]
                    reset = b == 0 or slot[b - 1][0] != video
                    batch.append(SegmentItem(video, k * self.segment_length * self.stride, s, b, reset))
                else:  # this slot has finished: an invalid filler keeps shapes and ranks in step
                    batch.append(SegmentItem(0, 0, s, b, reset=True, valid=False))
            yield batch
        self.skip = 0
