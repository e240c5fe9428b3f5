"""The long-memory generator's settings (``LongMemoryConfig``: everything hashed into the cache name) and the
constants of its scenes."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lightning_ssmvid.utils.files import config_hash

GENERATOR_VERSION = 2  # bump when the rendered data change, so cached sets are regenerated
SIDECAR_FORMAT = "long_memory/v2"
SPLITS = ("train", "val", "test")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
MANIFEST = "manifest.json"
SHAPES = ("square", "disc", "diamond")  # all left-right symmetric: mirroring a clip mirrors positions only
BACKGROUND = (0, 0, 0)
OCCLUDER_RGB = (128, 128, 128)
ANNOUNCE_RGB = (64, 64, 64)  # the band on the frame before a reveal: a cue of "when", never of "which colour"
MAX_PALETTE = 16  # past 16 hues get too close (min RGB distance < 70)
ARRAY_KEYS = ("positions", "cue_visible", "cue_colour")


def _as_type(value: Any, kind: type, name: str) -> int | float | bool:
    if kind is bool:  # True/False, 0/1 or their spellings (CLI): never an int, so True and 1 hash alike
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        if not isinstance(value, str) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{name} takes a bool, got {value!r}")
    if kind is int and float(value) != int(value):
        raise ValueError(f"{name} takes integers, got {value!r}")
    return kind(value)


@dataclass
class LongMemoryConfig:
    """Everything that determines the generated data (all of it goes into the cache hash).

    Sizes are in pixels unless noted; ``object_size`` (distractors) and ``cue_size`` (the cue object) are (min, max)
    fractions of ``frame_size``; ``speed`` is a (min, max) speed in pixels per frame along each axis;
    ``n_distractors`` is an inclusive (min, max) range; ``colour_per_event``: a new cue colour after each reveal.
    """

    frame_size: int = 64
    n_frames: int = 1440
    fps: float = 24.0
    palette_size: int = 8
    n_distractors: tuple[int, int] = (0, 2)
    gap_bins: tuple[int, ...] = (60, 240, 960)
    min_visible: int = 16
    reveal_frames: int = 8
    object_size: tuple[float, float] = (0.125, 0.1875)
    cue_size: tuple[float, float] = (0.1875, 0.25)
    speed: tuple[float, float] = (1.0, 2.0)
    colour_per_event: bool = False
    n_train: int = 256
    n_val: int = 168  # the smallest multiple of 24 with >= 100 val and test events per default gap bin
    n_test: int = 168
    seed: int = 0

    def __post_init__(self):
        # Lists from YAML/CLI -> tuples, so asdict() (and the hash) does not depend on the caller's container type.
        # Likewise ints/floats by the field's default type (24 and 24.0 must hash alike).
        for field in fields(LongMemoryConfig):
            value, default = getattr(self, field.name), field.default
            if isinstance(default, tuple):
                value = tuple(_as_type(v, type(default[0]), field.name) for v in value)
            elif isinstance(default, bool):
                value = _as_type(value, bool, field.name)
            elif isinstance(default, (int, float)):
                value = _as_type(value, type(default), field.name)
            setattr(self, field.name, value)
        self.validate()

    # Derived geometry -------------------------------------------------------------------------------------------
    @property
    def size_range(self) -> tuple[int, int]:
        lo = max(3, round(self.frame_size * self.object_size[0]))
        return lo, max(lo, round(self.frame_size * self.object_size[1]))

    @property
    def cue_size_range(self) -> tuple[int, int]:
        lo = max(3, round(self.frame_size * self.cue_size[0]))
        return lo, max(lo, round(self.frame_size * self.cue_size[1]))

    @property
    def occluder_width(self) -> int:
        # wide enough to hide the largest object (cue or distractor) fully, plus a margin
        return max(self.size_range[1], self.cue_size_range[1]) + max(2, self.frame_size // 16)

    def event_overhead(self) -> int:
        """Frames an event needs besides its gap, in the worst case over the random draws (see ``plan_clip``): from
        the previous reveal (or the clip start) to the end of its own reveal window."""
        lo, hi = self.cue_size_range
        travel = self.frame_size - self.occluder_width - lo  # widest range of x while fully visible
        wait = 2 * math.ceil(travel / self.speed[0]) + 2  # until the object next touches the occluder
        transit = math.ceil(hi / self.speed[0]) + 1  # sliding fully in (the step out takes no frame)
        visible = self.reveal_frames + 2 * self.min_visible  # previous reveal window, then its colour shown
        return visible + wait + transit + self.reveal_frames + 1

    def validate(self) -> None:
        if self.frame_size < 16:
            raise ValueError(f"frame_size must be >= 16, got {self.frame_size}")
        if not 2 <= self.palette_size <= MAX_PALETTE:
            raise ValueError(f"palette_size must be in [2, {MAX_PALETTE}], got {self.palette_size}")
        lo, hi = self.n_distractors
        if not 0 <= lo <= hi:
            raise ValueError(f"n_distractors must be an inclusive range (min, max) with 0 <= min <= max, got {lo, hi}")
        if not (0 < self.speed[0] <= self.speed[1]):
            raise ValueError(f"speed must be (min, max) with 0 < min <= max, got {self.speed}")
        for name in ("object_size", "cue_size"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi < 0.5):
                raise ValueError(f"{name} must be fractions (min, max), 0 < min <= max < 0.5: {(lo, hi)}")
        smallest = min(self.size_range[0], self.cue_size_range[0])
        if self.speed[1] > smallest - 0.5:  # else one step could jump from fully visible to fully hidden
            raise ValueError(f"speed max {self.speed[1]} must be at most the smallest object size {smallest} - 0.5")
        room = self.frame_size - self.occluder_width - self.cue_size_range[1]
        if room < self.speed[1]:
            raise ValueError(f"cue_size {self.cue_size} leaves the cue object {room} px beside the occluder in a "
                             f"{self.frame_size} px frame (< speed max {self.speed[1]}): lower cue_size/object_size")
        if not isinstance(self.colour_per_event, bool):
            raise ValueError(f"colour_per_event must be a bool, got {self.colour_per_event!r}")
        if self.min_visible < 1 or self.reveal_frames < 1:
            raise ValueError("min_visible and reveal_frames must be >= 1")
        if not self.gap_bins or any(int(g) != g or g < 1 for g in self.gap_bins):
            raise ValueError(f"gap_bins must be positive integers, got {self.gap_bins}")
        if len(set(self.gap_bins)) != len(self.gap_bins):
            raise ValueError(f"gap_bins must be distinct, got {self.gap_bins}")
        overhead = self.event_overhead()
        too_long = [g for g in self.gap_bins if g + overhead > self.n_frames]
        if too_long:
            raise ValueError(
                f"gap bin(s) {too_long} do not fit in a clip of n_frames={self.n_frames}: an event needs its gap plus "
                f"up to {overhead} frames (the previous reveal, visible before hiding, waiting to reach the occluder, "
                f"sliding in, reveal), i.e. n_frames >= {max(too_long) + overhead}; lower gap_bins or raise n_frames"
            )
        for split in SPLITS:
            if getattr(self, f"n_{split}") < 0:
                raise ValueError(f"n_{split} must be >= 0")

    def counts(self) -> dict[str, int]:
        return {split: getattr(self, f"n_{split}") for split in SPLITS}

    def hash(self) -> str:
        return config_hash({"generator": "long_memory", "version": GENERATOR_VERSION, **asdict(self)})

    def dataset_name(self) -> str:
        return f"long_memory-{self.frame_size}px-{self.n_frames}f-{self.hash()}"

    def __call__(self, root: str | os.PathLike, workers: int | None = None, progress: bool = True) -> Path:
        """``config(root)``: the generator callable the datamodule expects (see ``generate_long_memory``)."""
        from lightning_ssmvid.data.long_memory.writer import generate_long_memory  # the writer imports this module

        return generate_long_memory(root, self, workers=workers, progress=progress)


class LongMemory(LongMemoryConfig):
    """``LongMemoryConfig`` plus run options (not hashed): ``LongMemory(workers=4, n_frames=720, ...)(root)``."""

    def __init__(self, workers: int | None = None, progress: bool = True, **config: Any):
        super().__init__(**config)
        self._workers, self._progress = workers, progress

    def __call__(self, root: str | os.PathLike, workers: int | None = None, progress: bool | None = None) -> Path:
        from lightning_ssmvid.data.long_memory.writer import generate_long_memory  # the writer imports this module

        return generate_long_memory(
            root, self.config(), workers=self._workers if workers is None else workers,
            progress=self._progress if progress is None else progress,
        )

    def config(self) -> LongMemoryConfig:
        return LongMemoryConfig(**asdict(self))
