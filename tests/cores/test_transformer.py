"""Transformer core: windowed attention (bounded cache, forgets what is older than the window), rotary, KV cache."""

import pytest
import torch

from lightning_ssmvid.cores import build_core, reset_state_slots
from tests.helpers import step_rollout as rollout

D = 16


def make(**kw):
    torch.manual_seed(0)
    return build_core("transformer", d_model=D, n_layers=2, **kw).double().eval()


@pytest.mark.parametrize("window, block", [(5, 4), (8, 64), (3, 7)])
def test_windowed_parallel_step_pieces_agree(window, block):
    core = make(window=window, block_size=block)
    u = torch.randn(2, 41, D, dtype=torch.float64)
    y, final = core(u)
    y_steps, state = rollout(core, u)
    torch.testing.assert_close(y_steps, y, rtol=1e-10, atol=1e-10)
    pieces, st = [], None
    for part in (u[:, :3], u[:, 3:20], u[:, 20:21], u[:, 21:]):
        y_part, st = core(part, st)
        pieces.append(y_part)
    torch.testing.assert_close(torch.cat(pieces, 1), y, rtol=1e-10, atol=1e-10)
    for key in final:
        torch.testing.assert_close(st[key], final[key])
        torch.testing.assert_close(state[key], final[key])


def test_window_cache_is_bounded_and_full_cache_grows():
    core = make(window=6)
    _, state = core(torch.randn(2, 50, D, dtype=torch.float64))
    assert state["0.k"].shape[2] == 6 and state["1.v"].shape[2] == 6
    _, state = rollout(core, torch.randn(2, 30, D, dtype=torch.float64))
    assert state["0.k"].shape[2] == 6
    full = make()
    _, state = full(torch.randn(2, 50, D, dtype=torch.float64))
    assert state["0.k"].shape[2] == 50 and state["0.pos"].tolist() == [50, 50]


def test_windowed_output_ignores_inputs_older_than_the_window():
    window, n_layers = 4, 2
    core = make(window=window)
    u = torch.randn(1, 40, D, dtype=torch.float64)
    y, _ = core(u)
    changed = u.clone()
    changed[:, :10] = torch.randn_like(changed[:, :10])
    y_changed, _ = core(changed)
    # Receptive field of a stack: n_layers * (window - 1) frames back.
    first_free = 10 + n_layers * (window - 1)
    torch.testing.assert_close(y_changed[:, first_free:], y[:, first_free:], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y_changed[:, 10:first_free], y[:, 10:first_free])


def test_full_attention_sees_the_distant_past():
    core = make()
    u = torch.randn(1, 40, D, dtype=torch.float64)
    changed = u.clone()
    changed[:, 0] = torch.randn_like(changed[:, 0])
    assert (core(changed)[0][:, -1] - core(u)[0][:, -1]).abs().max() > 1e-6


def test_runs_past_training_length_and_resets_slots():
    core = make(window=8).float()
    state = core.initial_state(2)
    _, state = core(torch.randn(2, 300, D), state)
    y, state = core(torch.randn(2, 5, D), state)
    assert torch.isfinite(y).all() and state["0.pos"].tolist() == [305, 305]
    fresh = core.initial_state(2)
    reset = reset_state_slots(state, fresh, torch.tensor([True, False]))
    assert reset["0.pos"].tolist() == [0, 305]
    u = torch.randn(2, 3, D)
    y_reset, _ = core(u, reset)
    y_fresh, _ = core(u[:1])
    torch.testing.assert_close(y_reset[:1], y_fresh, rtol=1e-5, atol=1e-5)
