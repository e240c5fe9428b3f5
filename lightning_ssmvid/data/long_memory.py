"""Long-memory synthetic videos: a coloured cue object hides behind a grey occluder for a known gap, then returns.

Each clip shows 1 + ``n_distractors`` shapes bouncing on a black background. The *cue object* (drawn last, so
nothing covers it but the occluder; its size a fraction ``cue_size`` of the frame, the others ``object_size``) has a
colour from a palette of ``palette_size`` saturated colours; every other object is a pale tint that is never a
palette colour, and the occluder, a full-height band at the left or right edge, is neutral grey. So while the cue
object is fully behind the occluder, no pixel of the video tells its colour.

One clip holds several *events* (generator version 2): the cue object is fully visible in its colour for at least
``min_visible`` frames, slides into the occluder when it reaches it, and stays fully hidden for exactly ``gap``
frames (a value of ``gap_bins``) without moving: its y is frozen from the first frame it enters until it returns,
its x while hidden, so it returns at exactly the row where it hid. On the last hidden frame (``announce``) the band
turns dark grey (``ANNOUNCE_RGB``, no colour information): the next frame is the reveal. The reveal is a single-frame
step out: at ``reveal_start`` the cue object is already fully visible, touching the band's inner edge, then it moves
away and keeps bouncing, fully visible for at least ``reveal_frames`` frames (the *reveal window*, where recall is
scored: ``lightning_ssmvid.metrics.recall``). The memory distance of an event is its gap: the number of frames in
which no pixel of the cue object is visible.

Colours are balanced: the cue's first colour is ``index % palette_size`` and the first event's gap is
``gap_bins[index % len(gap_bins)]``, so any lcm(palette_size, len(gap_bins)) consecutive clips of a split hold every
(colour, first gap) pair equally often. With ``colour_per_event`` the cue object takes a new colour (random, never
its previous one) at the end of each reveal window, and shows it fully for ``min_visible`` frames before hiding
again; otherwise its colour never changes within a clip. Each event records the colour that returns at its reveal.

Layout of a generated set (``generate_long_memory``)::

    ROOT/long_memory-64px-1440f-<hash>/config.json
        train/clip_00000.mp4   lossless H.264 (libx264rgb), decoded bit-exactly by decord
        train/clip_00000.npz   per-frame arrays: positions (T, n_objects, 2) int16 (x, y of each object's
                               top-left corner), cue_visible (T,) int16 (visible pixels of the cue object),
                               cue_colour (T,) int16 (palette index of the cue object; while hidden, the colour
                               it will show at its reveal)
        train/clip_00000.json  the sidecar (see ``plan_clip``); written last, so its presence marks the clip done
        train/manifest.json    written after every clip of the split: the split is complete
        val/ ... test/ ...

Frames are re-rendered exactly from a sidecar (``render_frames``), so masks never need storing: ``cue_mask``
rasterises the cue object's (visible) mask at any frame.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from lightning_ssmvid.data.video_io import VideoWriter
from lightning_ssmvid.utils.files import atomic_path, config_hash, exclusive_lock, write_json_atomic
from lightning_ssmvid.utils.integrity import check_manifest, record

log = logging.getLogger(__name__)

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
        return generate_long_memory(root, self, workers=workers, progress=progress)


class LongMemory(LongMemoryConfig):
    """``LongMemoryConfig`` plus run options (not hashed): ``LongMemory(workers=4, n_frames=720, ...)(root)``."""

    def __init__(self, workers: int | None = None, progress: bool = True, **config: Any):
        super().__init__(**config)
        self._workers, self._progress = workers, progress

    def __call__(self, root: str | os.PathLike, workers: int | None = None, progress: bool | None = None) -> Path:
        return generate_long_memory(
            root, self.config(), workers=self._workers if workers is None else workers,
            progress=self._progress if progress is None else progress,
        )

    def config(self) -> LongMemoryConfig:
        return LongMemoryConfig(**asdict(self))


# Colours ------------------------------------------------------------------------------------------------------------
def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def make_palette(k: int) -> np.ndarray:
    """(k, 3) uint8 clearly distinct saturated colours: evenly spaced hues, in rings of darker value past 12."""
    if not 2 <= k <= MAX_PALETTE:
        raise ValueError(f"palette size must be in [2, {MAX_PALETTE}], got {k}")
    rings = math.ceil(k / 12)
    colours = []
    for i in range(k):
        ring, j = i % rings, i // rings
        per_ring = math.ceil(k / rings)
        hue = j / per_ring + ring / (2 * per_ring)
        colours.append(_hsv_to_rgb(hue, 1.0, 1.0 - 0.45 * ring))
    return np.array(colours, np.uint8)


def distractor_colours() -> np.ndarray:
    """(6, 3) uint8 pale tints: far from every palette colour, the background and the occluder grey."""
    return np.array([_hsv_to_rgb(i / 6 + 1 / 12, 0.3, 0.95) for i in range(6)], np.uint8)


# Shapes -------------------------------------------------------------------------------------------------------------
@functools.cache  # masks are rasterised at every frame of every clip: build each stamp once
def shape_stamp(shape: str, size: int) -> np.ndarray:
    """(size, size) bool mask of a shape in its bounding box (read-only: it is shared)."""
    stamp = _shape_stamp(shape, int(size))
    stamp.setflags(write=False)
    return stamp


def _shape_stamp(shape: str, size: int) -> np.ndarray:
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "disc":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (size / 2) ** 2
    if shape == "diamond":
        return np.abs(yy - c) + np.abs(xx - c) <= size / 2
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


# Planning: the trajectory and events of one clip --------------------------------------------------------------------
def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_IDS[split], int(index)]))


def clip_name(index: int) -> str:
    return f"clip_{index:05d}"


def _rint(x: float) -> int:
    return int(math.floor(x + 0.5))


def _bounce(x: float, v: float, lo: float, hi: float) -> tuple[float, float]:
    x += v
    if x < lo:
        x, v = 2 * lo - x, -v
    if x > hi:
        x, v = 2 * hi - x, -v
    return min(max(x, lo), hi), v


def _signed_speed(rng: np.random.Generator, speed: tuple[float, float]) -> float:
    return float(rng.uniform(*speed)) * (1.0 if rng.random() < 0.5 else -1.0)


def plan_clip(config: LongMemoryConfig, split: str, index: int) -> dict:
    """The sidecar of clip ``index`` of ``split`` (deterministic), with its per-frame arrays as numpy arrays.

    Sidecar fields: ``format``, ``clip``, ``split``, ``index``, ``seed``, ``n_frames``, ``fps``, ``frame_size``,
    ``palette`` (K x RGB), ``background`` (RGB), ``occluder`` (``x0, x1, y0, y1`` half-open box, ``rgb``,
    ``announce_rgb`` (its colour on announce frames), ``side``), ``objects`` (in drawing order; each ``shape``,
    ``size``, ``rgb``, ``role`` = cue/distractor, ``palette_index`` or null; the cue's are its first colour),
    ``cue`` (``object`` index, ``palette_index``, ``rgb``: the colour of the first event), ``events`` (each:
    ``gap`` = frames with no cue pixel visible = ``hide_end - hide_start + 1``, ``gap_bin``, ``palette_index``
    (the colour that returns at the reveal, shown before ``hide_start``), ``last_full`` (last fully visible frame
    before hiding), ``hide_start``, ``hide_end``, ``announce`` (= ``hide_end``: the band is ``announce_rgb``),
    ``reveal_start`` (first frame with a cue pixel visible again: the whole object), ``full_start``
    (= ``reveal_start``), ``reveal_stop`` (exclusive: ``full_start + reveal_frames``); the reveal window is
    ``[reveal_start, reveal_stop)``), ``arrays``.
    Arrays (``ARRAY_KEYS``, stored in the ``.npz`` named by ``arrays``): ``positions`` (T, n_objects, 2) int16,
    the top-left (x, y) of each object's ``size`` x ``size`` box; ``cue_visible`` (T,) int16, visible cue pixels;
    ``cue_colour`` (T,) int16, the cue object's palette index (while hidden: the colour it hid with).
    """
    cfg, rng = config, clip_rng(config.seed, split, index)
    S, T, K = cfg.frame_size, cfg.n_frames, cfg.palette_size
    lo, hi = cfg.size_range
    band = cfg.occluder_width
    band_x0 = S - band  # simulated with the occluder on the right; mirrored afterwards for side="left"
    palette = make_palette(K)
    pale = distractor_colours()

    n_distractors = int(rng.integers(cfg.n_distractors[0], cfg.n_distractors[1] + 1))
    side = "right" if rng.random() < 0.5 else "left"
    first_colour = int(index) % K  # balanced: every colour equally often over K consecutive clips of a split
    objects = []
    for _ in range(n_distractors):
        objects.append({
            "shape": SHAPES[int(rng.integers(len(SHAPES)))], "size": int(rng.integers(lo, hi + 1)),
            "rgb": pale[int(rng.integers(len(pale)))].tolist(), "role": "distractor", "palette_index": None,
        })
    cue_lo, cue_hi = cfg.cue_size_range
    cue_size = int(rng.integers(cue_lo, cue_hi + 1))
    objects.append({
        "shape": SHAPES[int(rng.integers(len(SHAPES)))], "size": cue_size,
        "rgb": palette[first_colour].tolist(), "role": "cue", "palette_index": first_colour,
    })
    positions = np.zeros((T, len(objects), 2), np.int16)
    colours = np.zeros(T, np.int16)

    # Distractors bounce everywhere (passing behind the occluder too).
    for k, obj in enumerate(objects[:-1]):
        s = obj["size"]
        x, y = rng.uniform(0, S - s), rng.uniform(0, S - s)
        vx, vy = _signed_speed(rng, cfg.speed), _signed_speed(rng, cfg.speed)
        for t in range(T):
            positions[t, k] = _rint(x), _rint(y)
            x, vx = _bounce(x, vx, 0, S - s)
            y, vy = _bounce(y, vy, 0, S - s)

    # The cue object: a state machine visible -> entering -> hidden (gap frames) -> visible (stepped out) ...
    s = cue_size
    x_max = band_x0 - s  # largest x at which the cue object is fully visible: touching the band's inner edge
    x, y = rng.uniform(0, x_max), rng.uniform(0, S - s)
    speed_x = float(rng.uniform(*cfg.speed))
    vx, vy = speed_x * (1.0 if rng.random() < 0.5 else -1.0), _signed_speed(rng, cfg.speed)
    transit = math.ceil(s / speed_x) + 1  # a bound on the frames from the decision to hide_start
    need = transit + cfg.reveal_frames  # frames an event takes after its decision frame, besides its gap
    colour, colour_from = first_colour, 0  # the current colour, shown fully from frame colour_from on
    phase, n_full = "visible", 0  # n_full: fully visible frames since colour_from
    visible_min = int(rng.integers(cfg.min_visible, 2 * cfg.min_visible + 1))
    planned: list[int] = []
    hidden_left = 0
    more_events = True
    for t in range(T):
        if t == colour_from:  # the end of a reveal window (or the clip start): the colour to show before hiding
            if t > 0 and cfg.colour_per_event:
                colour = (colour + 1 + int(rng.integers(K - 1))) % K  # never the previous colour
            n_full = 0
        colours[t] = colour
        positions[t, -1] = _rint(x), _rint(y)
        if phase == "visible" and t >= colour_from:
            n_full += 1  # x stays in [0, x_max] in this phase: always fully visible
        # the position of frame t + 1; y frozen while entering and hidden: the cue returns at the row where it hid
        if phase == "visible":
            y, vy = _bounce(y, vy, 0, S - s)
            if more_events and n_full >= visible_min and vx > 0 and x + vx > x_max:
                if not planned:  # the first event cycles through the bins over clip indices: every bin is used
                    choices = [cfg.gap_bins[index % len(cfg.gap_bins)]]
                    assert t + 1 + need + choices[0] <= T, "event overhead bound violated (a bug)"
                else:
                    choices = [g for g in cfg.gap_bins if t + 1 + need + g <= T]
                if choices:
                    planned.append(int(choices[int(rng.integers(len(choices)))]))
                    phase, x, n_full = "entering", x + vx, 0
                    continue
                more_events = False
            x, vx = _bounce(x, vx, 0, x_max)
        elif phase == "entering":
            x += speed_x
            if _rint(x) >= band_x0:  # fully behind the occluder from frame t + 1 on; x stays put while hidden
                x, phase, hidden_left = min(x, S - s), "hidden", planned[-1]
        elif phase == "hidden":
            hidden_left -= 1
            if hidden_left == 0:  # step out: fully visible at once, touching the band, then moving away from it
                x, vx, phase = float(x_max), -speed_x, "visible"
                colour_from = t + 1 + cfg.reveal_frames
                visible_min = int(rng.integers(cfg.min_visible, 2 * cfg.min_visible + 1))
    if side == "left":  # mirror (every shape is left-right symmetric)
        sizes = np.array([o["size"] for o in objects], np.int16)
        positions[..., 0] = S - sizes[None, :] - positions[..., 0]
        occluder_x = (0, band)
    else:
        occluder_x = (band_x0, S)

    sidecar = {
        "format": SIDECAR_FORMAT, "generator_version": GENERATOR_VERSION,
        "clip": clip_name(index), "split": split, "index": int(index), "seed": int(cfg.seed),
        "n_frames": T, "fps": cfg.fps, "frame_size": S,
        "palette": palette.tolist(), "background": list(BACKGROUND),
        "occluder": {
            "x0": occluder_x[0], "x1": occluder_x[1], "y0": 0, "y1": S, "rgb": list(OCCLUDER_RGB),
            "announce_rgb": list(ANNOUNCE_RGB), "side": side,
        },
        "objects": objects,
        "cue": {"object": len(objects) - 1, "palette_index": first_colour, "rgb": palette[first_colour].tolist()},
        "reveal_frames": cfg.reveal_frames, "min_visible": cfg.min_visible,
        "colour_per_event": cfg.colour_per_event,
        "arrays": f"{clip_name(index)}.npz",
    }
    sidecar["positions"] = positions
    visible = np.array([cue_mask(sidecar, t).sum() for t in range(T)], np.int16)
    sidecar["cue_visible"] = visible
    sidecar["cue_colour"] = colours
    full = int(shape_stamp(objects[-1]["shape"], s).sum())
    sidecar["events"] = _find_events(visible, colours, full, planned, cfg.reveal_frames)
    return sidecar


def _find_events(visible: np.ndarray, colours: np.ndarray, full: int, planned: Sequence[int],
                 reveal_frames: int) -> list[dict]:
    """Events measured on the rasterised visibility of the cue object (so they are exact by construction)."""
    hidden = visible == 0
    edges = np.diff(np.concatenate([[0], hidden.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    assert len(starts) == len(planned), f"planned {len(planned)} hidden periods, rasterised {len(starts)} (a bug)"
    events = []
    for h0, h1, gap in zip(starts, ends, planned):
        assert h1 - h0 + 1 == gap, f"hidden for {h1 - h0 + 1} frames, planned {gap} (a bug)"
        assert h0 > 0 and h1 + 1 < len(visible), "a hidden period at a clip end (a bug)"
        before = np.flatnonzero(visible[:h0] == full)
        full_start = int(h1 + 1)
        stop = full_start + reveal_frames
        assert stop <= len(visible) and (visible[full_start:stop] == full).all(), "reveal not fully visible (a bug)"
        assert colours[h0 - 1] == colours[h1 + 1], "the cue changed colour while hidden (a bug)"
        events.append({
            "gap": int(gap), "gap_bin": int(gap), "palette_index": int(colours[h0 - 1]), "last_full": int(before[-1]),
            "hide_start": int(h0), "hide_end": int(h1), "announce": int(h1), "reveal_start": int(h1 + 1),
            "full_start": full_start, "reveal_stop": int(stop),
        })
    return events


# Sidecars, masks and frames -----------------------------------------------------------------------------------------
def load_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar of a clip (``path``: its .json, .mp4 or .npz), with its arrays (``ARRAY_KEYS``: ``"positions"``,
    ``"cue_visible"``, ``"cue_colour"``) loaded as numpy arrays."""
    path = Path(path).with_suffix(".json")
    sidecar = json.loads(path.read_text())
    with np.load(path.with_name(sidecar["arrays"])) as arrays:
        sidecar.update({key: arrays[key] for key in ARRAY_KEYS})
    return sidecar


def object_mask(sidecar: dict, obj: int, t: int) -> np.ndarray:
    """(S, S) bool: pixels covered by object ``obj`` at frame ``t`` (ignoring anything drawn over it)."""
    S = sidecar["frame_size"]
    spec = sidecar["objects"][obj]
    x, y = (int(v) for v in sidecar["positions"][t, obj])
    mask = np.zeros((S, S), bool)
    mask[y : y + spec["size"], x : x + spec["size"]] = shape_stamp(spec["shape"], spec["size"])
    return mask


def cue_mask(sidecar: dict, t: int, visible: bool = True) -> np.ndarray:
    """(S, S) bool mask of the cue object at frame ``t``; with ``visible``, only its pixels not behind the occluder
    (the cue object is drawn over every other object, so this is exactly where its colour shows in the frame)."""
    mask = object_mask(sidecar, sidecar["cue"]["object"], t)
    if visible:
        occ = sidecar["occluder"]
        mask[occ["y0"] : occ["y1"], occ["x0"] : occ["x1"]] = False
    return mask


def render_frames(sidecar: dict, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Yield frames ``start..stop-1`` (S, S, 3) uint8 of a clip, exactly as written to its MP4.

    The cue object is drawn in its colour of each frame (``cue_colour``), the occluder band last, in
    ``announce_rgb`` on the announce frames (``event["announce"]``) and in ``rgb`` otherwise."""
    S = sidecar["frame_size"]
    stop = sidecar["n_frames"] if stop is None else stop
    positions = sidecar["positions"]
    cue = sidecar["cue"]["object"]
    cue_rgb = np.array(sidecar["palette"], np.uint8)[sidecar["cue_colour"]]  # (T, 3)
    objs = [(k, o["size"], shape_stamp(o["shape"], o["size"]), np.array(o["rgb"], np.uint8))
            for k, o in enumerate(sidecar["objects"])]
    occ = sidecar["occluder"]
    background, grey = np.array(sidecar["background"], np.uint8), np.array(occ["rgb"], np.uint8)
    signal_rgb = np.array(occ["announce_rgb"], np.uint8)
    announce = {int(event["announce"]) for event in sidecar["events"]}
    for t in range(start, stop):
        frame = np.empty((S, S, 3), np.uint8)
        frame[:] = background
        for k, s, stamp, rgb in objs:  # drawing order: distractors, then the cue object
            x, y = positions[t, k]
            frame[y : y + s, x : x + s][stamp] = cue_rgb[t] if k == cue else rgb
        frame[occ["y0"] : occ["y1"], occ["x0"] : occ["x1"]] = signal_rgb if t in announce else grey
        yield frame


# Writing ------------------------------------------------------------------------------------------------------------
def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


CLIP_FILES = (".mp4", ".npz", ".json")  # one clip: the video, its arrays, its sidecar (written last)


def clip_complete(split_dir: Path, index: int) -> bool:
    name = clip_name(index)
    return all((split_dir / f"{name}{ext}").is_file() for ext in CLIP_FILES)


def write_clip(config: LongMemoryConfig, split: str, index: int, split_dir: str | os.PathLike) -> Path:
    """Render and write one clip: the MP4 (atomic, streamed), then the arrays, then the JSON sidecar, last."""
    split_dir = Path(split_dir)
    sidecar = plan_clip(config, split, index)
    name = clip_name(index)
    with VideoWriter(split_dir / f"{name}.mp4", fps=config.fps, lossless=True) as writer:
        for frame in render_frames(sidecar):
            writer.write(frame)
    _save_npz_atomic(split_dir / f"{name}.npz", {key: sidecar[key] for key in ARRAY_KEYS})
    write_json_atomic(split_dir / f"{name}.json", {k: v for k, v in sidecar.items() if k not in ARRAY_KEYS})
    return split_dir / f"{name}.mp4"


def _write_clip_task(args: tuple) -> tuple[str, int]:
    config_dict, split, index, split_dir = args
    write_clip(LongMemoryConfig(**config_dict), split, index, split_dir)
    return split, index


def _manifest_ok(dataset_dir: Path, config: LongMemoryConfig) -> bool:
    for split, count in config.counts().items():
        try:
            manifest = json.loads((dataset_dir / split / MANIFEST).read_text())
        except (OSError, ValueError):
            return False
        if manifest.get("count") != count or manifest.get("config_hash") != config.hash():
            return False
    return True


def _remove_damaged(dataset_dir: Path, config: LongMemoryConfig) -> bool:
    """Check every recorded clip file against its split manifest; remove the damaged clips (all three files) and
    the manifest, so that generation rewrites exactly them (the generator is deterministic). True if any."""
    found = False
    for split in config.counts():
        split_dir = dataset_dir / split
        problems = check_manifest(split_dir / MANIFEST, f"long-memory data set {dataset_dir.name}/{split}",
                                  "rewriting those clips")
        for name in problems:
            for ext in CLIP_FILES:
                (split_dir / name).with_suffix(ext).unlink(missing_ok=True)
        found = found or bool(problems)
    return found


def _remove_stale(split_dir: Path) -> None:
    """Temporary files of an interrupted run (hidden ``.name.partial*`` / ``.name.tmp*``)."""
    for path in split_dir.glob(".*"):
        if ".partial" in path.name or ".tmp" in path.name:
            path.unlink(missing_ok=True)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def generate_long_memory(
    root: str | os.PathLike, config: LongMemoryConfig | None = None, workers: int | None = None, progress: bool = True
) -> Path:
    """Write the data set for ``config`` under ``root`` (once) and return its folder (``train/ val/ test/``).

    The folder name carries a hash of the config: a second call with the same config returns at once. Clips are
    written in parallel (``workers`` processes, default ``min(2, cpu count)``; ``<= 1``: in this process), each
    atomically; a split is complete when its ``manifest.json`` exists. A rerun after an interruption writes only
    the clips that are missing or incomplete.
    """
    config = config or LongMemoryConfig()
    config.validate()
    dataset_dir = Path(root) / config.dataset_name()
    if _manifest_ok(dataset_dir, config) and not _remove_damaged(dataset_dir, config):
        return dataset_dir
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(dataset_dir / ".lock"):
        if _manifest_ok(dataset_dir, config) and not _remove_damaged(dataset_dir, config):
            return dataset_dir  # another process finished it while we waited
        write_json_atomic(dataset_dir / "config.json", {
            "generator": "long_memory", "version": GENERATOR_VERSION, "hash": config.hash(), "config": asdict(config),
        })
        pending: list[tuple[str, int]] = []
        remaining: dict[str, int] = {}
        for split, count in config.counts().items():
            split_dir = dataset_dir / split
            split_dir.mkdir(exist_ok=True)
            _remove_stale(split_dir)
            todo = [(split, i) for i in range(count) if not clip_complete(split_dir, i)]
            pending += todo
            remaining[split] = len(todo)

        def finish(split: str) -> None:
            names = [clip_name(i) for i in range(config.counts()[split])]
            files = [dataset_dir / split / f"{name}{ext}" for name in names for ext in CLIP_FILES]
            write_json_atomic(dataset_dir / split / MANIFEST, {
                "generator": "long_memory", "config_hash": config.hash(), "split": split,
                "count": config.counts()[split], "clips": names, "files": record(dataset_dir / split, files),
            })

        for split, n in remaining.items():
            if n == 0:
                finish(split)
        workers = default_workers() if workers is None else workers
        tasks = [(asdict(config), split, i, str(dataset_dir / split)) for split, i in pending]
        pool = None
        if workers > 1 and len(tasks) > 1:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            pool = multiprocessing.get_context(method).Pool(min(workers, len(tasks)),  # before rich starts a thread
                                                            initializer=_default_sigterm)
        try:
            from rich.progress import Progress

            results = pool.imap_unordered(_write_clip_task, tasks) if pool else map(_write_clip_task, tasks)
            with Progress(disable=not progress or not tasks) as bar:
                job = bar.add_task(f"long-memory clips -> {dataset_dir.name}", total=len(tasks))
                for split, _ in results:
                    bar.advance(job)
                    remaining[split] -= 1
                    if remaining[split] == 0:
                        finish(split)
            if pool is not None:
                pool.close()  # all done: workers exit on their own
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    return dataset_dir


def _default_sigterm() -> None:
    """Pool workers die on SIGTERM (``Pool.terminate``) even when the parent ignores it, as submitit's SLURM jobs do."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def list_clips(split_dir: str | os.PathLike) -> list[Path]:
    """The MP4 files of a complete split, in order (from its manifest)."""
    split_dir = Path(split_dir)
    manifest = json.loads((split_dir / MANIFEST).read_text())
    return [split_dir / f"{name}.mp4" for name in manifest["clips"]]


# CLI ----------------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_ssmvid.data.long_memory", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--root", required=True, help="folder under which the data set folder is created")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: min(2, cpu count))")
    parser.add_argument("--no-progress", action="store_true")
    for field in fields(LongMemoryConfig):
        default = field.default
        flag = "--" + field.name.replace("_", "-")
        if isinstance(default, tuple):
            parser.add_argument(flag, type=type(default[0]), nargs="+", default=default, help=f"default: {default}")
        elif isinstance(default, bool):  # type=bool would read "false" as True
            parser.add_argument(flag, type=lambda v, name=field.name: _as_type(v, bool, name), default=default,
                                metavar="{true,false}", help=f"default: {default}")
        else:
            parser.add_argument(flag, type=type(default), default=default, help=f"default: {default}")
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    args = vars(_parser().parse_args(argv))
    root, workers, progress = args.pop("root"), args.pop("workers"), not args.pop("no_progress")
    try:
        config = LongMemoryConfig(**args)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    out = generate_long_memory(root, config, workers=workers, progress=progress)
    print(out)
    return out


if __name__ == "__main__":
    main()
