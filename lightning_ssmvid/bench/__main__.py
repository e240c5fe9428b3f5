"""``python -m lightning_ssmvid.bench [--quick] [--only NAME ...]``: every benchmark, written to reports/bench/.

Benchmarks: ``cores`` (time and memory vs sequence length, scans vs references), ``training`` (core training on
cached latents), ``generation`` (an hour of video in constant memory), ``loader`` (streaming decode).
Each writes ``reports/bench/<name>.json`` and ``.md``; comparisons are made side by side in one process.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time

BENCHMARKS = ("cores", "training", "generation", "loader")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for a smoke check")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--out", default="reports/bench")
    args = parser.parse_args()
    for name in args.only:
        start = time.perf_counter()
        print(f"== bench {name}", flush=True)
        sys.argv = [f"lightning_ssmvid.bench.{name}", "--out", args.out] + (["--quick"] if args.quick else [])
        runpy.run_module(f"lightning_ssmvid.bench.{name}", run_name="__main__")
        print(f"== bench {name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
