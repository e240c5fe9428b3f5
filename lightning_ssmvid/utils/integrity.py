"""File integrity: the size and sha256 of every file a generated data set, codec or latent cache is made of,
recorded in its manifest when written and checked before each use, so a deleted, truncated or changed file is
found (and rebuilt by its writer) instead of silently shrinking the data or failing mid-training."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def sha256(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def record(root: Path, paths: Iterable[Path]) -> dict[str, dict]:
    """``{relative path: {"size", "sha256"}}`` of ``paths`` under ``root`` (what a manifest stores)."""
    return {Path(p).relative_to(root).as_posix(): {"size": Path(p).stat().st_size, "sha256": sha256(p)}
            for p in paths}


def damaged(root: Path, files: dict[str, dict]) -> dict[str, str]:
    """The recorded files that are missing or differ, each with what is wrong (empty: all intact)."""
    problems = {}
    for name, expected in files.items():
        path = Path(root) / name
        if not path.is_file():
            problems[name] = "missing"
        elif path.stat().st_size != expected["size"]:
            problems[name] = f"{path.stat().st_size} bytes, expected {expected['size']}"
        elif sha256(path) != expected["sha256"]:
            problems[name] = "content changed (sha256 differs)"
    return problems


def summary(problems: dict[str, str], limit: int = 3) -> str:
    """``a (missing), b (12 bytes, expected 40) and 2 more``: for one log line."""
    shown = [f"{name} ({why})" for name, why in list(problems.items())[:limit]]
    more = len(problems) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def check_manifest(manifest: Path, label: str, remedy: str) -> dict[str, str]:
    """The damaged files among those ``manifest`` records (paths relative to its folder; older manifests record
    none). If there are any, logs ``<label>: N damaged file(s): ...; <remedy>`` and removes the manifest, so that its
    writer rebuilds; the caller removes the damaged files it rebuilds."""
    problems = damaged(manifest.parent, json.loads(manifest.read_text()).get("files", {}))
    if problems:
        log.warning("%s: %d damaged file(s): %s; %s", label, len(problems), summary(problems), remedy)
        manifest.unlink()
    return problems
