"""Where the configs live and how lists of config nodes become objects."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


# conf/paths resolves ${oc.env:PROJECT_ROOT}; set it on import so every entry point and test composes alike.
os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))


def project_relative(path: str | os.PathLike) -> str:
    """``path`` relative to the project when inside it (committed reports hold no machine paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def instantiate_list(cfg: DictConfig | None) -> list:
    """Instantiate every ``_target_`` node of a mapping (callbacks, loggers); null entries are skipped."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]


def compose_train_config(*overrides: str) -> DictConfig:
    """The train config as ``python -m lightning_ssmvid.train OVERRIDES`` composes it (without the hydra node)."""
    GlobalHydra.instance().clear()  # compose needs a fresh Hydra (a test or an earlier compose may hold one)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))
