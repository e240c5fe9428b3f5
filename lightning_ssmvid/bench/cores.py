"""Benchmark of the sequence cores and scans (not a test): training-step time and peak memory vs sequence length.

    python -m lightning_ssmvid.bench.cores            # full run -> reports/bench/cores.json, reports/bench/cores.md
    python -m lightning_ssmvid.bench.cores --quick    # tiny sizes, seconds

Per core and length: forward + backward of the whole core stack (B=2, d_model=256, the same n_layers for all),
median over repetitions after a warm-up. Each (core, length) of the full run executes in its own subprocess, whose
peak memory is the growth of ``ru_maxrss`` during the measurement (torch allocations are invisible to
tracemalloc). A configuration whose time predicted from the previous length (linear, or quadratic for full
attention) exceeds ``max_seconds`` is skipped and reported as such. Scans are timed against their sequential
references. ``quick=True`` runs everything in-process at tiny sizes (no memory figures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from lightning_ssmvid.bench.common import core_options
from lightning_ssmvid.utils.memory import peak_rss_mb

# the cores measured; each with the options of its conf/core/<name>.yaml (common.core_options), at one width
CORES = ("gru", "lstm", "transformer", "transformer_window", "ssm", "s4d", "mamba", "mamba2", "segmented_ssm", "hybrid")
QUADRATIC = {"transformer"}
RECURRENT = ["gru", "lstm", "ssm", "s4d", "mamba", "mamba2", "segmented_ssm", "hybrid", "transformer_window"]

FULL = dict(batch=2, d_model=256, n_layers=2, lengths=[256, 1024, 4096, 16384], scan_length=4096, max_seconds=60.0)
QUICK = dict(batch=1, d_model=32, n_layers=1, lengths=[16, 64], scan_length=96, max_seconds=10.0)


def _time_fwd_bwd(fn, reps: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + reps):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def _reps_for(predicted: float) -> tuple[int, int]:
    """(reps, warmup) for a run predicted to take ``predicted`` seconds."""
    if predicted < 0.5:
        return 5, 1
    if predicted < 5:
        return 3, 1
    return (2, 0) if predicted < 15 else (1, 0)


def measure_core(spec: dict, length: int, batch: int, d_model: int, n_layers: int, predicted: float = 0.0) -> dict:
    """Forward + backward time (and peak memory growth of this process) of one core stack at one length."""
    from lightning_ssmvid.cores import build_core

    torch.manual_seed(0)
    opts = {k: v for k, v in spec.items() if k != "name"}
    core = build_core(spec["name"], d_model=d_model, n_layers=n_layers, **opts).train()
    u = torch.randn(batch, length, d_model, requires_grad=True)

    def step():
        core.zero_grad(set_to_none=True)
        u.grad = None
        y, _ = core(u)
        y.square().mean().backward()

    base = peak_rss_mb()
    reps, warmup = _reps_for(predicted)
    times = _time_fwd_bwd(step, reps, warmup)
    return {"seconds": statistics.median(times), "times": times, "peak_mb": peak_rss_mb() - base}


def measure_scans(length: int, batch: int, d_model: int, reps: int = 3) -> dict:
    """Each scan's dispatched path (on CPU: the fused C++ kernel for ``selective_scan``, the chunked form for
    ``ssd_scan``) and its chunked PyTorch form against the plain sequential loop, forward + backward, at the
    cores' shapes, side by side in this process."""
    from lightning_ssmvid.ops import (
        selective_scan,
        selective_scan_ref,
        selective_scan_torch,
        ssd_scan_ref,
        ssd_scan_torch,
    )
    from lightning_ssmvid.ops.selective_scan import _fused_cpu_reason

    torch.manual_seed(0)
    out = {}
    d_inner = 2 * d_model
    # Mamba-1 shapes: d_inner channels, N = 16.
    n = 16
    sel = dict(u=torch.randn(batch, d_inner, length), delta=torch.randn(batch, d_inner, length) - 2,
               A=-torch.arange(1.0, n + 1).repeat(d_inner, 1), B=torch.randn(batch, n, length),
               C=torch.randn(batch, n, length), D=torch.ones(d_inner))
    # Mamba-2 shapes: heads of 64 (or fewer), N = 64, one group.
    p = min(64, d_inner)
    h, n2 = d_inner // p, 64
    ssd = dict(x=torch.randn(batch, length, h, p), dt=torch.rand(batch, length, h) * 0.1, A=-torch.rand(h) * 4 - 1,
               B=torch.randn(batch, length, 1, n2), C=torch.randn(batch, length, 1, n2), D=torch.ones(h))
    reason = _fused_cpu_reason(sel["u"], sel["B"], sel["C"])
    cases = {
        "selective_scan": (sel, "fused C++" if reason is None else f"chunked torch ({reason})", {
            "fast": lambda kw: selective_scan(**kw, delta_softplus=True),
            "chunked": lambda kw: selective_scan_torch(**kw, delta_softplus=True),
            "reference": lambda kw: selective_scan_ref(**kw, delta_softplus=True)}),
        "ssd_scan": (ssd, "chunked torch", {
            "fast": lambda kw: ssd_scan_torch(**kw, chunk_size=64)[0],
            "reference": lambda kw: ssd_scan_ref(**kw)[0]}),
    }
    for name, (inputs, path, fns) in cases.items():
        result = {"length": length, "path": path}
        for label, fn in fns.items():
            leaves = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}

            def run(fn=fn, leaves=leaves):
                for v in leaves.values():
                    v.grad = None
                fn(leaves).square().mean().backward()

            result[f"{label}_s"] = statistics.median(_time_fwd_bwd(run, reps, 1))
        result["speedup"] = result["reference_s"] / result["fast_s"]
        out[name] = result
    out["ssd_scan"]["chunk_sizes"] = {}  # the chunk size is chosen by this sweep (the Mamba-2 core uses 64)
    for chunk in (16, 32, 64, 128, 256):
        leaves = {k: v.clone().requires_grad_(True) for k, v in ssd.items()}

        def run(chunk=chunk, leaves=leaves):
            ssd_scan_torch(**leaves, chunk_size=chunk)[0].square().mean().backward()

        out["ssd_scan"]["chunk_sizes"][str(chunk)] = statistics.median(_time_fwd_bwd(run, max(3, reps), 1))
    return out


def _run_subprocess(spec: dict, length: int, cfg: dict, predicted: float, timeout: float) -> dict:
    args = json.dumps({"spec": spec, "length": length, "batch": cfg["batch"], "d_model": cfg["d_model"],
                       "n_layers": cfg["n_layers"], "predicted": predicted})
    threads = str(torch.get_num_threads())
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    try:
        proc = subprocess.run([sys.executable, "-m", "lightning_ssmvid.bench.cores", "--one", args],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc={proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False, only: list[str] | None = None, previous: dict | None = None) -> dict:
    """Run the benchmark; returns the results as a dict (see ``write_reports``). ``only``: re-measure just these
    cores and take the other cores and the scans from ``previous`` (an earlier result)."""
    cfg = QUICK if quick else FULL
    results: dict = {"config": {k: v for k, v in cfg.items()}, "threads": torch.get_num_threads(), "cores": {},
                     "quick": quick}
    if only and previous:
        results["cores"] = {k: v for k, v in previous["cores"].items()}
        results["remeasured"] = sorted(set(previous.get("remeasured", [])) | set(only))
    for key in CORES:
        if only and key not in only:
            continue
        spec = core_options(key)
        rows, prev = {}, None
        for length in cfg["lengths"]:
            predicted = 0.0
            if prev is not None and "seconds" in prev[1]:
                ratio = length / prev[0]
                quadratic = spec["name"] in QUADRATIC and spec.get("window") is None
                predicted = prev[1]["seconds"] * ratio * (ratio if quadratic else 1.0)
            if predicted > cfg["max_seconds"]:
                rows[str(length)] = {"skipped": f"predicted {predicted:.0f} s > {cfg['max_seconds']:.0f} s",
                                     "predicted_s": predicted}
                continue
            if quick:
                row = measure_core(spec, length, cfg["batch"], cfg["d_model"], cfg["n_layers"], predicted)
                row["peak_mb"] = None
            else:
                row = _run_subprocess(spec, length, cfg, predicted, timeout=max(120.0, 8 * cfg["max_seconds"]))
            rows[str(length)] = row
            prev = (length, row)
            print(f"{key:20s} L={length:6d} {row}", file=sys.stderr, flush=True)
        results["cores"][key] = rows
    if only and previous and "scans" not in only:
        results["scans"] = previous["scans"]
    else:
        results["scans"] = measure_scans(cfg["scan_length"], cfg["batch"], cfg["d_model"], reps=3 if not quick else 2)
    print(f"scans {results['scans']}", file=sys.stderr, flush=True)
    results["targets"] = _targets(results, cfg)
    return results


def _seconds(results: dict, core: str, length: int) -> float | None:
    return results["cores"].get(core, {}).get(str(length), {}).get("seconds")


def _targets(results: dict, cfg: dict) -> dict:
    lengths = cfg["lengths"]
    lo, hi = (lengths[1] if len(lengths) > 2 else lengths[0]), lengths[-1]
    scans = results["scans"]
    targets = {
        "selective_scan_speedup_vs_loop": {"value": scans["selective_scan"]["speedup"], "target": ">= 5",
                                           "length": cfg["scan_length"]},
        "ssd_speedup_vs_loop": {"value": scans["ssd_scan"]["speedup"], "target": ">= 20",
                                "length": cfg["scan_length"]},
    }
    mamba, mamba2, attn = (_seconds(results, c, hi) for c in ("mamba", "mamba2", "transformer"))
    targets["mamba_vs_mamba2"] = {"value": None if mamba is None or mamba2 is None else mamba2 / mamba,
                                  "target": ">= 1 (mamba no slower)", "length": hi}
    note = "measured"
    if attn is None:  # skipped: extrapolate quadratically from the longest measured length
        for length in reversed(cfg["lengths"]):
            if _seconds(results, "transformer", length) is not None:
                attn = _seconds(results, "transformer", length) * (hi / length) ** 2
                note = f"transformer extrapolated (L^2) from L={length}"
                break
    targets["mamba2_vs_transformer_speedup"] = {
        "value": None if mamba2 is None or attn is None else attn / mamba2, "target": ">= 5", "length": hi,
        "note": note}
    growth = {}
    for core in RECURRENT:
        a, b = _seconds(results, core, lo), _seconds(results, core, hi)
        growth[core] = None if a is None or b is None else (b / a) / (hi / lo)
    targets["growth_over_linear"] = {"value": growth, "target": "<= 1.3", "from": lo, "to": hi}
    return targets


def write_reports(results: dict, out_dir: str | Path = "reports/bench") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "cores.json", out_dir / "cores.md"
    json_path.write_text(json.dumps(results, indent=2))
    cfg = results["config"]
    lines = [
        "# Core benchmark",
        "",
        f"Forward + backward of each core stack, B={cfg['batch']}, d_model={cfg['d_model']}, "
        f"n_layers={cfg['n_layers']}, fp32 CPU, {results['threads']} thread(s); median seconds / peak memory "
        "growth (MB, ru_maxrss).",
        "",
        "| core | " + " | ".join(f"L={L}" for L in cfg["lengths"]) + " |",
        "|---|" + "---|" * len(cfg["lengths"]),
    ]
    for core, rows in results["cores"].items():
        cells = []
        for L in cfg["lengths"]:
            row = rows.get(str(L), {})
            if "seconds" in row:
                mem = "" if row.get("peak_mb") is None else f" / {row['peak_mb']:.0f} MB"
                cells.append(f"{row['seconds']:.3f} s{mem}")
            else:
                cells.append(row.get("skipped") or row.get("error") or "-")
        lines.append(f"| {core} | " + " | ".join(cells) + " |")
    lines += ["", "## Scans (forward + backward; speedup = plain sequential loop / dispatched path)", "",
              "| scan | L | dispatched path | dispatched s | chunked torch s | sequential loop s | speedup |",
              "|---|---|---|---|---|---|---|"]
    for name, r in results["scans"].items():
        chunked = f"{r['chunked_s']:.3f}" if "chunked_s" in r else "(same)"
        lines.append(f"| {name} | {r['length']} | {r['path']} | {r['fast_s']:.3f} | {chunked} | "
                     f"{r['reference_s']:.3f} | {r['speedup']:.1f}x |")
    sweep = results["scans"]["ssd_scan"].get("chunk_sizes")
    if sweep:
        lines += ["", "SSD chunk size sweep (fwd+bwd s): " + ", ".join(f"{k}: {v:.3f}" for k, v in sweep.items())]
    t = results["targets"]
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}x"  # noqa: E731
    lines += ["", "## Targets (reported, not asserted)", ""]
    lines.append(f"- selective_scan vs a plain loop at L={t['selective_scan_speedup_vs_loop']['length']}: "
                 f"{fmt(t['selective_scan_speedup_vs_loop']['value'])} (target >= 5x)")
    lines.append(f"- ssd_scan vs a plain loop at L={t['ssd_speedup_vs_loop']['length']}: "
                 f"{fmt(t['ssd_speedup_vs_loop']['value'])} (target >= 20x)")
    lines.append(f"- mamba2 time / mamba time at L={t['mamba_vs_mamba2']['length']}: "
                 f"{fmt(t['mamba_vs_mamba2']['value'])} (target >= 1x: mamba no slower)")
    m = t["mamba2_vs_transformer_speedup"]
    lines.append(f"- mamba2 vs full-attention transformer per training step at L={m['length']}: {fmt(m['value'])} "
                 f"(target >= 5x; {m['note']})")
    g = t["growth_over_linear"]
    growth = ", ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in g["value"].items())
    lines.append(f"- cost growth relative to linear from L={g['from']} to L={g['to']} (target <= 1.3): {growth}")
    if results.get("remeasured"):
        lines += ["", "Re-measured in a later run (`--only`), the rest kept from the full run: "
                      f"{', '.join(results['remeasured'])}."]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="reports/bench")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (default 2, the figure the targets are stated at; on a shared CPU, 2+ "
                             "threads make timings of small sequential ops more erratic)")
    parser.add_argument("--only", help="comma-separated cores (or 'scans') to re-measure, merged into OUT/cores.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement in this subprocess
    args = parser.parse_args()
    if not args.one:
        torch.set_num_threads(args.threads)
    if args.one:
        job = json.loads(args.one)
        row = measure_core(job["spec"], job["length"], job["batch"], job["d_model"], job["n_layers"],
                           job["predicted"])
        print(json.dumps(row))
        return
    only = args.only.split(",") if args.only else None
    previous = json.loads((Path(args.out) / "cores.json").read_text()) if only else None
    results = run(quick=args.quick, only=only, previous=previous)
    for path in write_reports(results, args.out):
        print(path)


if __name__ == "__main__":
    main()
