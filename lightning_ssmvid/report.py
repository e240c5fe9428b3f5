"""The comparison table, built only from runs' ``summary.json`` files and ``make bench`` results.

``python -m lightning_ssmvid.report [--logs logs] [--bench reports/bench] [--out reports]`` writes
``reports/comparison.md`` (one row per experiment), ``reports/comparison.json`` and the plots.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Sequence

from lightning_ssmvid.metrics import keys
from lightning_ssmvid.utils.config import PROJECT_ROOT
from lightning_ssmvid.utils.summary import code_commit


def find_runs(logs: Path) -> dict[str, list[dict]]:
    """Finished runs by experiment name; for each seed only the newest run counts (a rerun replaces it)."""
    newest: dict[tuple[str, Any], tuple[float, dict]] = {}
    for path in sorted(logs.rglob("summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if summary.get("status") != "finished" or not summary.get("name"):
            continue
        summary["run_dir"] = str(path.parent)
        key = (summary["name"], summary.get("seed"))
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
    return {name: s for name, s in find_runs(logs).items() if any(fnmatch(name, p) for p in patterns)}


def gap_bins(runs: dict[str, list[dict]]) -> list[int]:
    bins = set()
    for summaries in runs.values():
        for summary in summaries:
            bins |= {int(k.split("recall_gap")[1]) for k in summary["final"] if "/recall_gap" in k}
    return sorted(bins)


def horizon_bins(runs: dict[str, list[dict]]) -> list[str]:
    names = {k.split("/")[1] for s in sum(runs.values(), []) for k in s["final"] if "/psnr_h" in k}
    return sorted(names, key=lambda n: int(n.split("h")[1].split("-")[0]))


def build_rows(runs: dict[str, list[dict]], generation: dict[str, dict]) -> tuple[list[str], list[list[str]], dict]:
    bins, horizons = gap_bins(runs), horizon_bins(runs)
    short_h, long_h = (horizons[0], horizons[-1]) if horizons else (None, None)
    fvd_keys = sorted({k for s in sum(runs.values(), []) for k in s["final"] if "/fvd_" in k})
    tf_bins = [b for b in bins if any(f"val/recall_tf_gap{b}" in s["final"] for s in sum(runs.values(), []))]
    header = (["experiment", "core", "seeds", "core params"] + [f"recall gap {b} (events)" for b in bins]
              + [f"recall, real gap frames, gap {b}" for b in tf_bins] + ["chance", "codec ceiling"]
              + [f"PSNR {h.split('_')[1]}" for h in (short_h, long_h) if h]
              + [f"SSIM {h.split('_')[1]}" for h in (short_h, long_h) if h]
              + [fvd_keys[0].split("/")[1].upper() if fvd_keys else "FVD"]
              + ["train frames/s", "peak RSS MB", "gen frames/s", "gen RSS growth MB/1k frames"])
    rows, data = [], {}
    order = sorted(runs, key=lambda name: (not name.endswith("_long"), name))
    for name in order:
        summaries = runs[name]
        metric = lambda key: mean_std([s["final"].get(key) for s in summaries])  # noqa: E731
        core = summaries[0].get("core", "?")
        gen = generation.get(name.rsplit("_", 1)[0], {})  # benchmarks are keyed like experiments: transformer_window
        row = [name, core, str(len(summaries)), f"{summaries[0]['params']['core']:,}"]
        percent = lambda key: fmt(metric(key), 1, percent=True) + "%" if metric(key) else "–"  # noqa: E731
        events = [int(sum(s["final"].get(f"val/recall_events_gap{b}", 0) for s in summaries)) for b in bins]
        row += [f"{percent(f'val/recall_gap{b}')} ({n})" for b, n in zip(bins, events)]
        row += [percent(f"val/recall_tf_gap{b}") for b in tf_bins]
        row += [percent("val/recall_chance"), percent("val/recall_codec_ceiling")]
        row += [fmt(metric(f"val/{h}")) for h in (short_h, long_h) if h]
        row += [fmt(metric(f"val/{h.replace('psnr', 'ssim')}"), 3) for h in (short_h, long_h) if h]
        row.append(fmt(metric(fvd_keys[0]), 1) if fvd_keys else "n/a (no I3D weights)")
        row += [fmt(mean_std([s.get("train/frames_per_s") for s in summaries]), 0),
                fmt(mean_std([s.get(keys.PEAK_RSS_MB) for s in summaries]), 0)]
        row += [f"{gen['frames_per_s']:.0f}" if gen else "–",
                f"{gen['rss_growth_mb_per_1k']:.2f}" if gen else "–"]
        rows.append(row)
        data[name] = {"core": core, "seeds": len(summaries), "params": summaries[0]["params"],
                      "final": {k: metric(k) for k in summaries[0]["final"]}, "runs": [s["run_dir"] for s in summaries]}
    return header, rows, data


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
    plt = pyplot()
    bins = gap_bins(runs)
    if not bins:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, summaries in sorted(runs.items()):
        stats = [mean_std([s["final"].get(f"val/recall_gap{b}") for s in summaries]) for b in bins]
        xs = [b for b, st in zip(bins, stats) if st]
        if xs:
            ax.errorbar(xs, [st[0] for st in stats if st], yerr=[st[1] for st in stats if st], marker="o", label=name,
                        capsize=3)
    chance = mean_std([s["final"].get("val/recall_chance") for s in sum(runs.values(), [])])
    if chance:
        ax.axhline(chance[0], color="grey", linestyle="--", label="chance")
    ax.set(xscale="log", xlabel="gap (frames the cue was hidden)", ylabel="cue recall", ylim=(-0.02, 1.02),
           title="Long-range recall vs gap")
    return save_figure(plt, fig, ax, out / "recall_vs_gap.png")


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


def load_generation(bench: Path) -> dict[str, dict]:
    path = bench / "generation.json"
    if not path.is_file():
        return {}
    return {row["core"]: row for row in json.loads(path.read_text()).get("results", [])}


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
        f"({provenance(runs)}). Metrics are the final validation values of each run (mean ± std over seeds); "
        "recall is the share of cue events whose colour the rollout reproduces after the gap; \"real gap frames\" "
        "is the same probe when the model is shown the real (cue-free) frames through the gap and generates only the "
        "reveal, which scores memory without the long rollout; the codec ceiling is the same probe on the shared "
        "codec's reconstructions of the real frames (the best any core can score).",
        "",
        markdown_table(header, rows),
        "",
        *[f"![{p.stem}]({p.relative_to(args.out)})" for p in plots],
        *[f"![{p.stem}]({p.relative_to(args.out)})" for p in bench_plots if p.is_relative_to(args.out)],
    ]
    (args.out / "comparison.md").write_text("\n".join(text) + "\n")
    (args.out / "comparison.json").write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {args.out / 'comparison.md'} ({len(rows)} experiments)")
    return args.out / "comparison.md"


if __name__ == "__main__":
    main()
