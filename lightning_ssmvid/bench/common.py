"""Shared helpers of the benchmarks: memory readings and report files."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_markdown(path: Path, title: str, header: list[str], rows: list[list[str]], notes: str = "") -> Path:
    lines = [f"# {title}", "", *(notes.strip().splitlines()[2:] if notes else []), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def core_options(core: str) -> dict:
    """``build_core`` keyword arguments of ``conf/core/<core>.yaml`` (``name`` included; sizes are the caller's)."""
    from omegaconf import OmegaConf

    from lightning_ssmvid.utils.config import compose_train_config

    spec = OmegaConf.to_container(compose_train_config(f"core={core}").core, resolve=True)
    return {k: v for k, v in spec.items() if k not in ("_target_", "d_model", "n_layers")}
