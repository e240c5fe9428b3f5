"""Small file helpers: content hashes of configs, atomic writes and an exclusive lock between processes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock


def config_hash(config: dict[str, Any], length: int = 10) -> str:
    """A short, stable hash of a JSON-serialisable config (keys sorted)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends without an
    error (removed otherwise), so readers never see a half-written file. ``suffix`` keeps an extension some
    writers need (``.npy``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


@contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) while the block runs: one process at a
    time (DDP ranks, SLURM tasks, parallel experiments) builds a shared data set or stage."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield
