"""``python -m lightning_ssmvid.reproduce [--seeds 42 43 44] [--arms cue ...] [--pattern '*_short'] [-- overrides]``.

Runs every matching experiment of ``conf/experiment/`` once per arm and seed (skipping those with a finished run already
in ``--logs``, default ``logs/``), one after another, with a progress line per run; then writes the comparison table
(``report``) to ``--out`` (default ``reports/``). A variant (overrides that change the model, e.g. ``head=flow``)
belongs in its own ``--logs``/``--out`` folders, so that its runs neither count as the main comparison's nor mix
into its table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

from lightning_ssmvid import report
from lightning_ssmvid.utils.config import CONFIG_DIR, PROJECT_ROOT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--arms", nargs="+", default=["cue"], help="protocol arms (conf/arm/): cue generative ...")
    parser.add_argument("--pattern", nargs="+", default=["*_short"], help="experiments (shell patterns)")
    parser.add_argument("--logs", type=Path, default=PROJECT_ROOT / "logs", help="where runs are written and looked up")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports", help="where the table is written")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    args = parser.parse_args(argv)
    logs = args.logs.resolve()
    names = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")
                   if any(fnmatch(p.stem, pattern) for pattern in args.pattern))
    finished = report.find_runs(logs)
    todo = [(name, arm, seed) for seed in args.seeds for arm in args.arms for name in names]
    for i, (name, arm, seed) in enumerate(todo, start=1):
        prefix = f"[{i}/{len(todo)}] {name} arm={arm} seed={seed}"
        if any(s.get("seed") == seed for s in finished.get(f"{name}+{arm}", [])):
            print(f"{prefix}: already finished, skipped", flush=True)
            continue
        print(f"{prefix}: running ...", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "lightning_ssmvid.train", f"experiment={name}", f"arm={arm}",
                                 f"seed={seed}", f"paths.log_dir={logs}", *args.overrides], cwd=PROJECT_ROOT,
                                stdout=subprocess.DEVNULL)
        status = "done" if result.returncode == 0 else f"FAILED (exit {result.returncode}; see {logs / name}/runs/)"
        print(f"{prefix}: {status} in {time.perf_counter() - start:.0f} s", flush=True)
    report.main(["--logs", str(logs), "--out", str(args.out)])


if __name__ == "__main__":
    main()
