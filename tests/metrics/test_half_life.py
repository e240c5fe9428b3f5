"""Memory horizon: half-lives from learned decays, checked against a decay we set by hand."""

import math

import pytest
import torch

from lightning_ssmvid.cores import build_core
from lightning_ssmvid.metrics.half_life import horizon_summary, memory_half_lives


def test_mamba2_half_life_matches_a_decay_set_by_hand():
    core = build_core("mamba2", d_model=32, n_layers=1, d_state=8, headdim=16)
    mixer = next(m for m in core.modules() if hasattr(m, "dt_bias"))
    with torch.no_grad():
        mixer.dt_bias.fill_(math.log(math.e - 1))  # softplus = 1
        mixer.A_log.fill_(math.log(math.log(2) / 100))  # decay exp(-ln2/100) per frame: half-life 100 frames
    assert torch.allclose(memory_half_lives(core), torch.tensor(100.0), rtol=1e-4)


@pytest.mark.parametrize("name", ["s4d", "mamba", "mamba2", "segmented_ssm", "hybrid"])
def test_ssm_cores_have_positive_half_lives(name):
    lives = memory_half_lives(build_core(name, d_model=32, n_layers=1))
    assert lives is not None and (lives > 0).all()
    summary = horizon_summary(lives)
    assert summary["val/memory_halflife_p50"] <= summary["val/memory_halflife_p99"]


@pytest.mark.parametrize("name", ["gru", "transformer"])
def test_cores_without_decays_have_none(name):
    assert memory_half_lives(build_core(name, d_model=32, n_layers=1)) is None
