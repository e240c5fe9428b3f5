"""Where the configs live and how lists of config nodes become objects."""

from __future__ import annotations

import itertools
import os
import subprocess
from datetime import datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


# conf/paths resolves ${oc.env:PROJECT_ROOT}; set it on import so every entry point and test composes alike.
os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))


def new_run_folder(parent: str) -> str:
    """``parent/<start time>``, created here and now: a second run started in the same second gets ``<time>-2``
    (``mkdir`` is atomic, so simultaneous starts cannot share a folder). DDP's extra processes are handed the first
    one's folder by Lightning (``hydra.run.dir=...``) and never call this."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    Path(parent).mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count(1):
        folder = Path(parent) / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return str(folder)
    raise AssertionError("unreachable")


# hydra.run.dir (conf/hydra/default.yaml) is ${new_run_folder:...}; cached, so every read in a process is one folder.
if not OmegaConf.has_resolver("new_run_folder"):
    OmegaConf.register_new_resolver("new_run_folder", new_run_folder, use_cache=True)


def project_relative(path: str | os.PathLike) -> str:
    """``path`` relative to the project when inside it (committed reports hold no machine paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def instantiate_list(cfg: DictConfig | None) -> list:
    """Instantiate every ``_target_`` node of a mapping (callbacks, loggers); null entries are skipped."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]


def compose_config(name: str, *overrides: str) -> DictConfig:
    """``conf/<name>.yaml`` as the command of that name composes it from ``OVERRIDES`` (without the hydra node)."""
    GlobalHydra.instance().clear()  # compose needs a fresh Hydra (a test or an earlier compose may hold one)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def compose_train_config(*overrides: str) -> DictConfig:
    """The train config as ``python -m lightning_ssmvid.train OVERRIDES`` composes it (without the hydra node)."""
    return compose_config("train", *overrides)


def code_commit() -> str:
    """The git commit of the code (``+dirty`` when tracked files differ from it), or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=PROJECT_ROOT).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
