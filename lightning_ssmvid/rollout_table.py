"""Rollouts of trained runs under sampling settings, as a table: does the scene stay, do the objects keep moving?

    python -m lightning_ssmvid.rollout_table --runs 'logs/mamba2_short/runs/*' --settings reencode=false reencode=true
    python -m lightning_ssmvid.rollout_table --runs 'logs/smoke/runs/*' --settings temperature=1 temperature=0.6 \\
        --frames 500 --out reports/rollouts/smoke
    python -m lightning_ssmvid.rollout_table --merge reports/rollouts/{a,b}/rollouts.json --frames 480 \\
        --out reports/rollouts/both   # earlier tables (one per seed, say) as one table; nothing is rolled out

Each run's ``last.ckpt`` generates ``--frames`` frames after 16 real ones from each ``--videos`` clip of its
validation split, once per setting (``make generate``'s keys: ``conf/generate.yaml``; seed 0), and each result is
kept in ``<out>/rollouts.json``. The table gives per setting and band the mean over clips of each run, then mean ±
the 95% t interval over runs (seeds): the persistence ratios (foreground, motion) and, on long-memory clips, the
scene kept (occluder, object colours), plus the rollouts that keep their objects and their motion in every band
(foreground 0.5-2x and motion >= 0.3x the context's: issue 14's smoke target) and those whose last band keeps the
occluder (>= 0.8). The last rows score references over the real frames after the context the same way (mean ±
95% t over the clips; "–" where the clips end before the band does): the real video (what a model that kept
everything exactly would get), the codec's reconstruction of it (the most any model drawing through that codec can
get), the last context frame held (copy-last: a frozen rollout, which keeps the scene but not the motion) and the
model's one-step draws of the real frames (teacher-forced, under the first setting; over every run's clips): what
a model loses before it reads any frame of its own, which tells a one-step failure from drift in the rollout; and
for each setting with ``snap=K``, the codec's reconstruction snapped onto that codebook (a snapped rollout's ceiling). A
rollout that goes NaN or inf is counted in the last column (from its first such frame) and its frames from there on
are not scored.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import re
from pathlib import Path

from lightning_ssmvid.generate import REFERENCE_NAMES
from lightning_ssmvid.generate import run as generate
from lightning_ssmvid.metrics.stats import t_interval
from lightning_ssmvid.report import fmt_ci
from lightning_ssmvid.utils.config import compose_config
from lightning_ssmvid.utils.files import write_json_atomic

KEPT = 0.8  # a rollout "keeps" the occluder when this share of its band stays as in the real video
FOREGROUND_BAND, MIN_MOTION = (0.5, 2.0), 0.3  # a rollout keeps its objects and their motion within these ratios
PER_SETTING = {"codec_snapped"}  # references that depend on the setting (its snap), one row per setting


def keeps_objects(figures: dict) -> bool:
    """Every band's foreground ratio in ``FOREGROUND_BAND`` and motion ratio >= ``MIN_MOTION`` (NaN, None: not kept)."""
    def within(prefix: str, low: float, high: float = math.inf) -> bool:
        return all(isinstance(v, (int, float)) and low <= v <= high for k, v in figures.items() if k.startswith(prefix))

    return within("foreground_ratio_h", *FOREGROUND_BAND) and within("motion_ratio_h", MIN_MOTION)


def roll_out(ckpt: Path, setting: str, video: int, frames: int, out: Path) -> dict:
    """``make generate`` of one clip under one setting (``"k=v k=v"``) -> its persistence and scene figures."""
    cfg = compose_config("generate", *setting.split(), f"ckpt_path={ckpt}", f"frames={frames}", f"video={video}",
                         f"out={out / 'last.mp4'}", "progress=false")
    result = generate(cfg)
    return {**result["persistence"], **result.get("scene", {}), "frames_per_s": result["frames_per_s"],
            "nonfinite_from": result.get("nonfinite_from"), "references": result.get("references", {})}


def column_order(key: str) -> tuple[int, int, int]:
    """Persistence, then scene; band by band; the kinds in a fixed order (rows read back from json come sorted)."""
    kinds = ("foreground_ratio", "motion_ratio", "occluder_kept", "colours_kept")
    kind = next((i for i, name in enumerate(kinds) if key.startswith(name)), len(kinds))
    band = re.search(r"_h(\d+)", key)
    return (0 if "ratio_h" in key else 1, int(band.group(1)) if band else 0, kind)


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Per setting: mean ± 95% t interval over runs of each run's mean over clips, for every figure."""
    keys = sorted((k for k in rows[0] if ("ratio_h" in k or "kept_h" in k)), key=column_order)
    objects = f"objects kept ({FOREGROUND_BAND[0]}-{FOREGROUND_BAND[1]}x) and moving (>= {MIN_MOTION}x) in every band"
    header = ["setting", "runs", *keys, objects, f"occluder kept (>= {KEPT}) in the last band", "diverged (NaN/inf)"]
    last = next((k for k in reversed(keys) if k.startswith("occluder_kept_")), None)  # the last band's occluder

    def kept(scored: list[dict]) -> str:
        return f"{sum(f.get(last, 0) >= KEPT for f in scored)} of {len(scored)}" if last else "–"

    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        runs = sorted({r["run"] for r in mine})
        cells = []
        for key in keys:
            per_run = [sum(r[key] for r in mine if r["run"] == run) / sum(r["run"] == run for r in mine)
                       for run in runs]
            cells.append(fmt_ci(t_interval(per_run), 2, percent=False))
        diverged = [r["nonfinite_from"] for r in mine if r.get("nonfinite_from") is not None]
        out.append([setting, str(len(runs)), *cells, f"{sum(map(keeps_objects, mine))} of {len(mine)}", kept(mine),
                    f"{len(diverged)} of {len(mine)}" + (f" (from frame {min(diverged)})" if diverged else "")])
    first = [r for r in rows if r["setting"] == rows[0]["setting"]]
    references = [(name, label, first) for name, label in REFERENCE_NAMES.items() if name not in PER_SETTING]
    references += [(name, f"{label}, {setting}", [r for r in rows if r["setting"] == setting])
                   for name, label in REFERENCE_NAMES.items() if name in PER_SETTING
                   for setting in dict.fromkeys(r["setting"] for r in rows)]
    for name, label, scored_rows in references:  # scored against the same context, once per clip
        # runs on one data set and codec score the same clip the same: counted once
        unique = {(r["video"], json.dumps(r["references"][name], sort_keys=True)): r["references"][name]
                  for r in scored_rows if name in r.get("references", {})}
        scored = list(unique.values())
        if not scored:
            continue
        cells = []
        for key in keys:
            values = [figures[key] for figures in scored if key in figures]
            cells.append(fmt_ci(t_interval(values), 2, percent=False) if len(values) == len(scored) else "–")
        out.append([label, "–", *cells, f"{sum(map(keeps_objects, scored))} of {len(scored)}", kept(scored), "–"])
    return header, out


def roll_out_runs(patterns: list[str], settings: list[str], videos: list[int], frames: int, out: Path) -> list[dict]:
    """Every run folder matching ``patterns`` x setting x video rolled out; rows kept in ``out/rollouts.json``."""
    runs = sorted(Path(p) for pattern in patterns for p in glob.glob(pattern) if (Path(p) / "checkpoints").is_dir())
    if not runs:
        raise SystemExit(f"error: no run folders match {patterns}")
    rows = []
    for run_dir in runs:
        for setting in settings:
            for video in videos:
                figures = roll_out(run_dir / "checkpoints" / "last.ckpt", setting, video, frames, out)
                rows.append({"run": str(run_dir), "setting": setting, "video": video, **figures})
                write_json_atomic(out / "rollouts.json", rows)
    return rows


def merged(paths: list[Path]) -> list[dict]:
    """The rows of earlier tables' ``rollouts.json`` files (e.g. one per seed), tabulated as one."""
    rows = []
    for path in paths:
        try:
            rows += json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"error: {path} is not a readable rollouts.json ({error})") from None
    if not rows:
        raise SystemExit(f"error: no rollouts in {[str(p) for p in paths]}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", help="run folders (shell patterns)")
    parser.add_argument("--merge", nargs="+", type=Path,
                        help="instead of rolling out: tabulate the rollouts.json files of earlier tables together")
    parser.add_argument("--settings", nargs="+", default=["reencode=false"], help='"k=v k=v" per setting')
    parser.add_argument("--videos", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--frames", type=int, default=480)
    parser.add_argument("--out", type=Path, default=Path("reports/rollouts"))
    args = parser.parse_args()
    if bool(args.runs) == bool(args.merge):
        raise SystemExit("error: give --runs (roll out) or --merge (tabulate earlier rollouts.json files), not both")
    rows = merged(args.merge) if args.merge else roll_out_runs(args.runs, args.settings, args.videos, args.frames,
                                                               args.out)
    args.videos = sorted({r["video"] for r in rows})
    args.settings = list(dict.fromkeys(r["setting"] for r in rows))
    header, body = table(rows)
    title = f"Rollouts ({args.frames} frames after 16 real ones; clips {args.videos} of each run's validation split)"
    lines = [f"# {title}",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             *("| " + " | ".join(row) + " |" for row in body)]
    if args.merge:
        write_json_atomic(args.out / "rollouts.json", rows)
    (args.out / "rollouts.md").write_text("\n".join(lines) + "\n")
    for scratch in ("last.mp4", "last.json"):
        (args.out / scratch).unlink(missing_ok=True)
    print("\n".join(lines))
    print(f"wrote {args.out / 'rollouts.md'} and rollouts.json ({json.dumps(args.settings)})")


if __name__ == "__main__":
    main()
