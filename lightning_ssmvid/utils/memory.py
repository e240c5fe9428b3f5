"""This process's memory, as the benchmarks, generation and run summaries report it."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``: kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now (``VmRSS``) or its peak so far (``VmHWM``) in MiB, from /proc (Linux); elsewhere the
    peak (``peak_rss_mb``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()
