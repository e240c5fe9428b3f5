"""Shared fixtures: compose the real Hydra configs with outputs in temporary folders."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from tests.helpers import compose_config

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# one thread per pytest-xdist worker (make test runs one worker per core), two when run alone
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def seeded_rng():
    """Every test starts from the same random state, so its draws do not depend on which tests ran before it."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One data folder for the whole session, so each synthetic set is written once."""
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture
def compose_cfg(tmp_path, data_dir):
    """compose_cfg(*overrides) -> the train config, outputs in this test's tmp_path."""
    yield lambda *overrides: compose_config(tmp_path, data_dir, *overrides)
    GlobalHydra.instance().clear()
