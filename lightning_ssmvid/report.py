"""The comparison table, built only from runs' ``summary.json`` files and ``make bench`` results.

``python -m lightning_ssmvid.report [--logs logs] [--bench reports/bench] [--out reports]`` writes
``reports/comparison.md`` (one row per experiment), ``reports/comparison.json`` and the plots.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from lightning_ssmvid.metrics import keys
from lightning_ssmvid.metrics.stats import t_interval
from lightning_ssmvid.utils.config import PROJECT_ROOT, code_commit, project_relative


def run_key(summary: dict) -> str:
    """A table row: the experiment, and its protocol arm when it has one (``lstm_long+cue``)."""
    arm = summary.get("arm")
    return f"{summary['name']}+{arm}" if arm else summary["name"]


def find_runs(logs: Path) -> dict[str, list[dict]]:
    """Finished runs by experiment (and arm, ``run_key``); for each seed only the newest run counts (a rerun
    replaces it)."""
    newest: dict[tuple[str, Any], tuple[float, dict]] = {}
    for path in sorted(logs.rglob("summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if summary.get("status") != "finished" or not summary.get("name"):
            continue
        summary["run_dir"] = project_relative(path.parent)
        key = (run_key(summary), summary.get("seed"))
        written = summary.get("written_at", path.stat().st_mtime)
        if key not in newest or written > newest[key][0]:
            newest[key] = (written, summary)
    runs: dict[str, list[dict]] = {}
    for (name, _), (_, summary) in sorted(newest.items(), key=lambda item: str(item[0])):
        runs.setdefault(name, []).append(summary)
    return runs


def mean_std(values: list[float]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(stat: tuple[float, float] | None, digits: int = 2, percent: bool = False) -> str:
    if stat is None:
        return "–"
    mean, std = stat
    scale = 100 if percent else 1
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std else "")


PROTOCOL_EXPERIMENTS = ("*_long", "*_short")  # what the comparison compares (not smoke runs)


def comparison_runs(logs: Path, patterns: Sequence[str] = PROTOCOL_EXPERIMENTS) -> dict[str, list[dict]]:
    """``find_runs`` restricted to the experiments matching ``patterns`` (shell patterns)."""
    return {key: s for key, s in find_runs(logs).items() if any(fnmatch(s[0]["name"], p) for p in patterns)}


def gap_bins(runs: dict[str, list[dict]]) -> list[int]:
    bins = set()
    for summaries in runs.values():
        for summary in summaries:
            bins |= {int(m.group(1)) for k in summary["final"] if (m := re.fullmatch(r"val/recall_gap(\d+)", k))}
    return sorted(bins)


def horizon_bins(runs: dict[str, list[dict]]) -> list[str]:
    names = {k.split("/")[1] for s in sum(runs.values(), []) for k in s["final"] if "/psnr_h" in k}
    return sorted(names, key=lambda n: int(n.split("h")[1].split("-")[0]))


def fmt_ci(stat: tuple[float, float] | None, digits: int = 1, percent: bool = True) -> str:
    """``mean ± half-width`` of a 95% t interval over seeds (percent by default)."""
    if stat is None:
        return "–"
    scale, unit = (100, "%") if percent else (1, "")
    mean, half = stat
    return f"{mean * scale:.{digits}f}" + (f" ± {half * scale:.{digits}f}" if half else "") + unit


def build_rows(runs: dict[str, list[dict]], generation: dict[str, dict]) -> tuple[list[str], list[list[str]], dict]:
    """One row per experiment and arm: memory (pixel probe, state read-out, controls; mean ± 95% CI over seeds),
    quality, cost. Returns the markdown header and rows, and the data of ``comparison.json``."""
    bins, horizons = gap_bins(runs), horizon_bins(runs)
    short_h, long_h = (horizons[0], horizons[-1]) if horizons else (None, None)
    fvd_keys = sorted({k for s in sum(runs.values(), []) for k in s["final"] if "/fvd_" in k})
    header = (["experiment", "arm", "core", "seeds", "core params"]
              + [f"state read-out gap {b}" for b in bins] + ["read-out chance", "read-out shuffled"]
              + [f"pixel recall gap {b} (absent)" for b in bins]
              + ["pixel chance", "copy-last", "oracle", "codec ceiling (worst colour)", "events/seed"]
              + [f"rollout recall gap {b}" for b in bins[-1:]]
              + [f"PSNR {h.split('_')[1]}" for h in (short_h, long_h) if h]
              + [f"SSIM {h.split('_')[1]}" for h in (short_h, long_h) if h]
              + [fvd_keys[0].split("/")[1].upper() if fvd_keys else "FVD"]
              + ["train frames/s", "run time s", "peak RSS MB", "gen frames/s", "gen RSS growth MB/1k frames"])
    rows, data = [], {}
    order = sorted(runs, key=lambda key: (not runs[key][0]["name"].endswith("_long"), key))
    for key in order:
        summaries = runs[key]
        values = lambda k, summaries=summaries: [s["final"].get(k) for s in summaries]  # noqa: E731
        ci = lambda k, values=values: t_interval(values(k))  # noqa: E731
        name, core = summaries[0]["name"], summaries[0].get("core", "?")
        gen = generation.get(name.rsplit("_", 1)[0], {})  # benchmarks are keyed like experiments: transformer_window
        row = [name, summaries[0].get("arm") or "–", core, str(len(summaries)), f"{summaries[0]['params']['core']:,}"]
        row += [fmt_ci(ci(f"val/probe_recall_gap{b}")) for b in bins]
        row += [fmt_ci(ci("val/probe_chance")), fmt_ci(ci("val/probe_shuffled"))]
        row += [f"{fmt_ci(ci(f'val/recall_gap{b}'))} ({fmt_ci(ci(f'val/recall_absent_gap{b}'), 0)})" for b in bins]
        worst = values("val/recall_codec_worst_colour")
        row += [fmt_ci(ci("val/recall_chance")), fmt_ci(ci("val/recall_copy_last")), fmt_ci(ci("val/recall_oracle")),
                f"{fmt_ci(ci('val/recall_codec_ceiling'))} ({fmt_ci(t_interval(worst))})"]
        row.append("/".join(f"{int(summaries[0]['final'].get(f'val/recall_events_gap{b}', 0))}" for b in bins))
        row += [fmt_ci(ci(f"val/recall_rollout_gap{b}")) for b in bins[-1:]]
        row += [fmt(mean_std(values(f"val/{h}"))) for h in (short_h, long_h) if h]
        row += [fmt(mean_std(values(f"val/{h.replace('psnr', 'ssim')}")), 3) for h in (short_h, long_h) if h]
        row.append(fmt(mean_std(values(fvd_keys[0])), 1) if fvd_keys else "n/a (no I3D weights)")
        row += [fmt(mean_std([s.get("train/frames_per_s") for s in summaries]), 0),
                fmt(mean_std([s.get("wall_time_s") for s in summaries]), 0),
                fmt(mean_std([s.get(keys.PEAK_RSS_MB) for s in summaries]), 0)]
        row += [f"{gen['frames_per_s']:.0f}" if gen else "–",
                f"{gen['rss_growth_mb_per_1k']:.2f}" if gen else "–"]
        rows.append(row)
        metric_names = sorted({k for s in summaries for k in s["final"]})
        data[key] = {"name": name, "arm": summaries[0].get("arm"), "core": core, "seeds": len(summaries),
                     "seed_values": [s.get("seed") for s in summaries], "params": summaries[0]["params"],
                     "final": {k: mean_std(values(k)) for k in metric_names},
                     "ci95": {k: t_interval(values(k)) for k in metric_names},
                     "wall_time_s": mean_std([s.get("wall_time_s") for s in summaries]),
                     "runs": [s["run_dir"] for s in summaries]}
    return header, rows, data


COMPACT = ("experiment", "arm", "seeds", "state read-out", "read-out chance", "read-out shuffled", "pixel recall gap",
           "copy-last", "run time s")


def compact(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """The memory columns of the table (what README shows)."""
    keep = [i for i, name in enumerate(header) if name.startswith(COMPACT)]
    return [header[i] for i in keep], [[row[i] for i in keep] for row in rows]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(runs: dict[str, list[dict]]) -> str:
    commits = sorted({s.get("code_commit", "unrecorded") for s in sum(runs.values(), [])})
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    import os

    return (f"runs made by code commit(s) {', '.join(f'`{c}`' for c in commits)}, table by `{code_commit()}`; "
            f"{os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display here or on clusters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, legend_ax, path: Path) -> Path:
    """Legend, tight layout, PNG at 120 dpi; the figure is closed."""
    legend_ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_recall(runs: dict[str, list[dict]], out: Path) -> Path | None:
    """State read-out and pixel recall vs gap per experiment and arm (mean and 95% t interval over seeds)."""
    plt = pyplot()
    bins = gap_bins(runs)
    if not bins:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, template, title in ((axes[0], "val/probe_recall_gap{b}", "State read-out (linear probe)"),
                                (axes[1], "val/recall_gap{b}", "Pixel recall (one-step reveal)")):
        for key, summaries in sorted(runs.items()):
            stats = [t_interval([s["final"].get(template.format(b=b)) for s in summaries]) for b in bins]
            points = [(b, st) for b, st in zip(bins, stats) if st]
            if points:
                ax.errorbar([b for b, _ in points], [st[0] for _, st in points], yerr=[st[1] for _, st in points],
                            marker="o", label=key, capsize=3)
        chance = mean_std([s["final"].get("val/recall_chance") for s in sum(runs.values(), [])])
        if chance:
            ax.axhline(chance[0], color="grey", linestyle="--", label="chance")
        ax.set(xscale="log", xlabel="gap (frames the cue was hidden)", ylabel="accuracy", ylim=(-0.02, 1.02),
               title=title)
    return save_figure(plt, fig, axes[1], out / "recall_vs_gap.png")


def plot_psnr(runs: dict[str, list[dict]], out: Path) -> Path | None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    plotted = False
    for name, summaries in sorted(runs.items()):
        curves_path = Path(summaries[-1]["run_dir"]) / "curves.json"
        if not curves_path.is_file():
            continue
        curves = json.loads(curves_path.read_text())
        points = [(h, p) for h, p in zip(curves["horizon"], curves["psnr"]) if p is not None]
        if points:
            ax.plot(*zip(*points), label=name)
            plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set(xlabel="horizon (frames after the context)", ylabel="PSNR (dB)", title="Rollout PSNR vs horizon")
    return save_figure(plt, fig, ax, out / "psnr_vs_horizon.png")


def plot_core_scaling(bench: Path) -> Path | None:
    """Training-step time and peak memory vs sequence length per core, from ``make bench`` (cores.json)."""
    path = bench / "cores.json"
    if not path.is_file():
        return None
    plt = pyplot()
    cores = json.loads(path.read_text())["cores"]
    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for core, rows in sorted(cores.items()):
        points = sorted((int(length), row) for length, row in rows.items() if "seconds" in row)
        if points:
            time_ax.plot([n for n, _ in points], [r["seconds"] for _, r in points], marker="o", label=core)
            memory_ax.plot([n for n, _ in points], [r.get("peak_mb") for _, r in points], marker="o", label=core)
    time_ax.set(xscale="log", yscale="log", xlabel="sequence length (frames)", ylabel="forward+backward (s)",
                title="Training step time vs length")
    memory_ax.set(xscale="log", yscale="log", xlabel="sequence length (frames)", ylabel="peak memory growth (MB)",
                  title="Memory vs length")
    return save_figure(plt, fig, time_ax, bench / "cores_scaling.png")


def ordering_lines(runs: dict[str, list[dict]]) -> list[str]:
    """The order of the rows by state read-out at the longest gap, per seed (is the ranking stable over seeds?)."""
    bins = gap_bins(runs)
    if not bins:
        return []
    key = f"val/probe_recall_gap{bins[-1]}"
    seeds = sorted({s.get("seed") for summaries in runs.values() for s in summaries if key in s["final"]},
                   key=str)
    lines = []
    for seed in seeds:
        scores = {row: s["final"][key] for row, summaries in runs.items() for s in summaries
                  if s.get("seed") == seed and key in s["final"]}
        if len(scores) > 1:
            order = " > ".join(f"{row} ({100 * v:.0f}%)" for row, v in sorted(scores.items(), key=lambda kv: -kv[1]))
            lines.append(f"- seed {seed}: {order}")
    if not lines:
        return []
    return [f"State read-out at gap {bins[-1]}, rows ordered per seed:", "", *lines, ""]


def codec_ceiling_lines(runs: dict[str, list[dict]]) -> list[str]:
    """The shared codec's pixel-probe ceiling per true colour (from a run's ``curves.json``; every run of a
    comparison shares the codec, so any run gives the same numbers)."""
    for summaries in runs.values():
        for summary in summaries:
            path = PROJECT_ROOT / summary["run_dir"] / "curves.json"
            per_colour = json.loads(path.read_text()).get("codec_ceiling_per_colour") if path.is_file() else None
            if per_colour:
                cells = " | ".join(f"{100 * v:.1f}%" for _, v in sorted(per_colour.items(), key=lambda kv: int(kv[0])))
                return ["Codec ceiling per cue colour (palette index 0..7; the pixel probe on the codec's "
                        f"reconstruction of the real first reveal frame, from `{summary['run_dir']}`):", "",
                        "| " + " | ".join(f"colour {k}" for k in sorted(per_colour, key=int)) + " |",
                        "|" + "---|" * len(per_colour), "| " + cells + " |", ""]
    return []


def load_generation(bench: Path) -> dict[str, dict]:
    path = bench / "generation.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text()).get("results", [])  # the comparison's models have the mse head
    return {row["core"]: row for row in rows if row.get("head", "mse") == "mse"}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logs", type=Path, default=PROJECT_ROOT / "logs")
    parser.add_argument("--bench", type=Path, default=PROJECT_ROOT / "reports" / "bench")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports")
    parser.add_argument("--pattern", nargs="+", default=list(PROTOCOL_EXPERIMENTS),
                        help="experiments to compare (shell patterns; default: the protocol experiments)")
    args = parser.parse_args(argv)
    runs = comparison_runs(args.logs, args.pattern)
    if not runs:
        raise SystemExit(f"no finished run of {' '.join(args.pattern)} (summary.json with status 'finished') "
                         f"under {args.logs}")
    args.out.mkdir(parents=True, exist_ok=True)
    header, rows, data = build_rows(runs, load_generation(args.bench))
    plots = [p for p in (plot_recall(runs, args.out), plot_psnr(runs, args.out)) if p]
    plot_core_scaling(args.bench)
    bench_plots = sorted(args.bench.glob("*.png")) if args.bench.is_dir() else []
    text = [
        "# Comparison of sequence cores on long-memory video",
        "",
        f"Generated by `make table` from {sum(len(v) for v in runs.values())} finished runs under `{args.logs.name}/` "
        f"({provenance(runs)}). Metrics are the final validation values of each run, mean ± half-width of the 95% "
        "Student t interval over seeds (no ± with one seed). **State read-out**: a linear probe fitted on training "
        "clips reads the cue colour from the frozen core output at the last hidden frame (memory apart from drawing); "
        "its controls are the majority-colour rate (chance) and the probe fitted on shuffled labels. **Pixel recall**: "
        "the model's one-step prediction of the first reveal frame given the real frames up to the announcement; in "
        "brackets the share of events where the object was not drawn at all (counted wrong). Copy-last repeats the "
        "announcement frame (the cue is hidden there); oracle is the real frame; the codec ceiling is the probe on "
        "the shared codec's reconstruction of the real frame (worst colour in brackets). Rollout recall needs a "
        "free rollout through the whole gap. Per-run bootstrap CIs over clips are in `comparison.json`.",
        "",
        "**Memory at a glance** (the columns of the full table below that answer the question):",
        "",
        markdown_table(*compact(header, rows)),
        "",
        markdown_table(header, rows),
        "",
        *codec_ceiling_lines(runs),
        *ordering_lines(runs),
        *[f"![{p.stem}]({p.relative_to(args.out)})" for p in plots],
        *[f"![{p.stem}]({p.relative_to(args.out)})" for p in bench_plots if p.is_relative_to(args.out)],
    ]
    (args.out / "comparison.md").write_text("\n".join(text) + "\n")
    (args.out / "comparison.json").write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {args.out / 'comparison.md'} ({len(rows)} experiments)")
    return args.out / "comparison.md"


if __name__ == "__main__":
    main()
