"""Shared fixtures: compose the real Hydra configs with outputs in temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lightning_ssmvid.utils.config import CONFIG_DIR

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One data folder for the whole session, so each synthetic set is written once."""
    return str(tmp_path_factory.mktemp("data"))


def compose_config(output_dir: Path, data_dir: str, *overrides: str) -> DictConfig:
    """The train config as `python -m lightning_ssmvid.train` would see it, with outputs under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(output_dir / "run")
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.paths.data_dir = data_dir
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # a Hydra app's task function never sees this node
    return cfg


@pytest.fixture
def compose_cfg(tmp_path, data_dir):
    """compose_cfg(*overrides) -> the train config, outputs in this test's tmp_path."""
    yield lambda *overrides: compose_config(tmp_path, data_dir, *overrides)
    GlobalHydra.instance().clear()
