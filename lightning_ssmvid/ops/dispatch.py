"""One log line per (op, device, reason) when a scan dispatch falls back to the PyTorch path."""

from __future__ import annotations

import logging

log = logging.getLogger("lightning_ssmvid.ops")
_seen: set[tuple[str, str, str]] = set()


def log_fallback(op: str, device: str, reason: str) -> None:
    """Log (once per distinct reason) that ``op`` on ``device`` runs the pure-PyTorch path because of ``reason``."""
    key = (op, device, reason)
    if key not in _seen:
        _seen.add(key)
        log.warning("%s on %s: using the PyTorch path (%s)", op, device, reason)
