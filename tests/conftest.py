"""Shared fixtures: compose the real Hydra configs with outputs in temporary folders."""

from __future__ import annotations

import os

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


@pytest.fixture
def compose_cfg(tmp_path, data_dir):
    """compose_cfg(*overrides) -> the train config as `python -m lightning_ssmvid.train` would see it."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, return_hydra_config=True, overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.data_dir = data_dir
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # a Hydra app's task function never sees this node
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
