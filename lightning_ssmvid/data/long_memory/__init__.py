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

Written by ``python -m lightning_ssmvid.data.prepare experiment=NAME [data.generator.KEY=VALUE ...]`` (or on a run's
first use). One concept per module: ``config`` (settings, hashed), ``palette`` (colours, shapes), ``plan`` (one clip's
trajectories and events), ``sidecar`` (reading a clip back: a leaf that metrics import), ``writer`` (the data set).
"""

from lightning_ssmvid.data.long_memory.config import (
    ANNOUNCE_RGB,
    ARRAY_KEYS,
    BACKGROUND,
    GENERATOR_VERSION,
    MANIFEST,
    MAX_PALETTE,
    OCCLUDER_RGB,
    SIDECAR_FORMAT,
    SPLITS,
    LongMemory,
    LongMemoryConfig,
)
from lightning_ssmvid.data.long_memory.palette import distractor_colours, make_palette, shape_stamp
from lightning_ssmvid.data.long_memory.plan import clip_name, plan_clip
from lightning_ssmvid.data.long_memory.sidecar import cue_mask, load_sidecar, object_mask, render_frames
from lightning_ssmvid.data.long_memory.writer import generate_long_memory, list_clips, write_clip

__all__ = ["ANNOUNCE_RGB", "ARRAY_KEYS", "BACKGROUND", "GENERATOR_VERSION", "MANIFEST", "MAX_PALETTE", "OCCLUDER_RGB",
           "SIDECAR_FORMAT", "SPLITS", "LongMemory", "LongMemoryConfig", "clip_name", "cue_mask", "distractor_colours",
           "generate_long_memory", "list_clips", "load_sidecar", "make_palette", "object_mask", "plan_clip",
           "render_frames", "shape_stamp", "write_clip"]
