"""Planning one long-memory clip: its objects' trajectories, the cue's hide/reveal events and colours (the sidecar)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lightning_ssmvid.data.long_memory.config import (
    ANNOUNCE_RGB,
    BACKGROUND,
    GENERATOR_VERSION,
    OCCLUDER_RGB,
    SHAPES,
    SIDECAR_FORMAT,
    SPLIT_IDS,
    LongMemoryConfig,
)
from lightning_ssmvid.data.long_memory.palette import distractor_colours, make_palette, shape_stamp
from lightning_ssmvid.data.long_memory.sidecar import cue_mask


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
