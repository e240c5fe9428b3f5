"""Segmented SSM: the boundary cell (made non-trivial) keeps parallel == step == pieces; without it == inner SSM."""

import pytest
import torch

from lightning_ssmvid.cores import build_core
from tests.helpers import step_rollout as rollout

D = 16


def make(seed=0, perturb=True, **kw):
    torch.manual_seed(seed)
    core = build_core("segmented_ssm", d_model=D, n_layers=2, **kw).double().eval()
    if perturb:  # the rows projection is zero-initialised (identity); make the boundary transform act
        with torch.no_grad():
            for mixer in core.mixers:
                if mixer.use_cell:
                    mixer.to_rows.weight.normal_(0, 0.3)
    return core


def pair(perturb):
    """The same inner weights with and without the boundary cell."""
    cell_core = make(segment_length=8, use_cell=True, perturb=perturb)
    plain_core = make(segment_length=8, use_cell=False, perturb=False)
    missing, unexpected = plain_core.load_state_dict(cell_core.state_dict(), strict=False)
    assert not missing and all(".cell." in k or ".to_" in k for k in unexpected)
    return cell_core, plain_core


@pytest.mark.parametrize("inner", ["mamba2", "s4d"])
@pytest.mark.parametrize("use_cell", [True, False])
def test_parallel_step_and_mid_segment_pieces_agree(inner, use_cell):
    core = make(segment_length=8, inner=inner, use_cell=use_cell)
    u = torch.randn(2, 45, D, dtype=torch.float64)
    y, final = core(u)
    y_steps, state = rollout(core, u)
    torch.testing.assert_close(y_steps, y, rtol=1e-10, atol=1e-10)
    pieces, st = [], None
    for part in (u[:, :5], u[:, 5:8], u[:, 8:27], u[:, 27:28], u[:, 28:]):  # cuts inside and on boundaries
        y_part, st = core(part, st)
        pieces.append(y_part)
    torch.testing.assert_close(torch.cat(pieces, 1), y, rtol=1e-10, atol=1e-10)
    for key in final:
        torch.testing.assert_close(st[key], final[key], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(state[key], final[key], rtol=1e-10, atol=1e-10)
    assert final["0.seg_pos"].tolist() == [45 % 8] * 2


def test_cell_changes_outputs_only_after_the_first_boundary():
    u = torch.randn(2, 30, D, dtype=torch.float64)
    cell_core, plain_core = pair(perturb=True)
    with_cell, _ = cell_core(u)
    without, _ = plain_core(u)
    torch.testing.assert_close(with_cell[:, :8], without[:, :8], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(with_cell[:, 8:], without[:, 8:])


def test_zero_initialised_cell_is_identity():
    u = torch.randn(2, 30, D, dtype=torch.float64)
    cell_core, plain_core = pair(perturb=False)
    a, _ = cell_core(u)
    b, _ = plain_core(u)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_without_cell_equals_the_inner_core():
    u = torch.randn(2, 30, D, dtype=torch.float64)
    seg, _ = make(perturb=False, use_cell=False, inner_kwargs={"chunk_size": 64})(u)
    torch.manual_seed(0)
    plain = build_core("mamba2", d_model=D, n_layers=2).double().eval()
    torch.testing.assert_close(seg, plain(u)[0], rtol=1e-12, atol=1e-12)


def test_slots_at_different_segment_positions():
    core = make(segment_length=8)
    u = torch.randn(2, 20, D, dtype=torch.float64)
    _, state = core(u[:, :5])
    state = {k: v.clone() for k, v in state.items()}
    fresh = core.initial_state(2, dtype=torch.float64)
    state = {k: torch.cat([fresh[k][:1], v[1:]]) for k, v in state.items()}  # slot 0 reset: seg_pos 0 vs 5
    y, _ = core(u[:, 5:], state)
    y0, _ = core(u[:1, 5:])
    torch.testing.assert_close(y[:1], y0, rtol=1e-10, atol=1e-10)
    _, ref_state = core(u[1:, :5])
    y1, _ = core(u[1:, 5:], ref_state)
    torch.testing.assert_close(y[1:], y1, rtol=1e-10, atol=1e-10)


def test_gradient_reaches_the_cell():
    core = make(segment_length=8).float().train()
    y, _ = core(torch.randn(2, 24, D))
    y.square().mean().backward()
    mixer = core.mixers[0]
    assert mixer.cell.weight_ih.grad is not None and mixer.cell.weight_ih.grad.abs().sum() > 0
