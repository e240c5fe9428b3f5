"""The core interface contract, checked for every registered core (a new core is tested by existing here)."""

import io

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from lightning_ssmvid.cores import available_cores, base, build_core, detach_state
from tests.helpers import step_rollout

CORES = available_cores()
D = 16


def make(name: str, dtype=torch.float64):
    torch.manual_seed(0)
    return build_core(name, d_model=D, n_layers=2).to(dtype).eval()


@pytest.mark.parametrize("name", CORES)
@pytest.mark.parametrize("length", [1, 13, 37])
def test_parallel_equals_step_rollout(name, length):
    core = make(name)
    u = torch.randn(2, length, D, dtype=torch.float64)
    y, final = core(u)
    stepped, state = step_rollout(core, u)
    torch.testing.assert_close(stepped, y, rtol=1e-10, atol=1e-10)
    for key in final:
        torch.testing.assert_close(state[key], final[key], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", CORES)
@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "inference"])  # inference: fused CPU steps
def test_parallel_equals_step_rollout_fp32(name, grad):
    core = make(name, torch.float32)
    u = torch.randn(2, 29, D)
    y, _ = core(u)
    with torch.set_grad_enabled(grad):
        stepped = step_rollout(core, u)[0]
    torch.testing.assert_close(stepped, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CORES)
def test_pieces_with_carried_state_equal_whole(name):
    core = make(name)
    u = torch.randn(3, 41, D, dtype=torch.float64)
    y, _ = core(u)
    pieces, state = [], None
    for part in (u[:, :7], u[:, 7:30], u[:, 30:]):
        y_part, state = core(part, state)
        pieces.append(y_part)
    torch.testing.assert_close(torch.cat(pieces, 1), y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", CORES)
def test_causal(name):
    core = make(name)
    u = torch.randn(2, 24, D, dtype=torch.float64)
    y, _ = core(u)
    changed = u.clone()
    changed[:, 11:] = torch.randn_like(changed[:, 11:])
    y_changed, _ = core(changed)
    torch.testing.assert_close(y_changed[:, :11], y[:, :11], rtol=0, atol=0)
    assert not torch.allclose(y_changed[:, 11:], y[:, 11:])


@pytest.mark.parametrize("name", CORES)
def test_state_is_batch_first_detachable_and_checkpointable(name):
    core = make(name, torch.float32).train()
    u = torch.randn(3, 9, D, requires_grad=True)
    y, state = core(u)
    y.square().mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in core.parameters())
    assert u.grad is not None and torch.isfinite(u.grad).all()
    assert state and all(value.shape[0] == 3 for value in state.values())
    detached = detach_state(state)
    assert not any(value.requires_grad for value in detached.values())
    buffer = io.BytesIO()
    torch.save(detached, buffer)
    buffer.seek(0)
    restored = torch.load(buffer)
    core.eval()
    with torch.no_grad():
        a, _ = core(u[:, :4].detach(), restored)
        b, _ = core(u[:, :4].detach(), detached)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", CORES)
def test_exposes_d_model_and_n_layers(name):
    core = build_core(name, d_model=D, n_layers=3)
    assert core.d_model == D


def test_unknown_core_lists_valid_names():
    with pytest.raises(ValueError, match="valid cores: .*gru"):
        build_core("nope", d_model=D)


@pytest.mark.parametrize("name", CORES)
def test_activation_checkpointing_gives_the_same_outputs_and_gradients(name, monkeypatch):
    calls = []
    monkeypatch.setattr(base, "checkpoint", lambda *args, **kwargs: calls.append(1) or checkpoint(*args, **kwargs))
    grads = []
    for recompute in (False, True):
        core = make(name).train()
        core.checkpoint_layers = recompute
        u = torch.randn(2, 19, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        y, state = core(u)
        (y.square().sum() + sum(v.sum() for v in state.values())).backward()
        grads.append([u.grad, *(p.grad for p in core.parameters())])
    assert len(calls) == 2, "each of the 2 layers runs under activation checkpointing"
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(recomputed, plain, rtol=1e-10, atol=1e-10)


def test_memoryless_core_output_depends_on_the_current_frame_only():
    core = build_core("memoryless", d_model=D, inner="lstm", n_layers=2).double().eval()
    inner = build_core("lstm", d_model=D, n_layers=2).double()
    assert sum(p.numel() for p in core.parameters()) == sum(p.numel() for p in inner.parameters())
    u = torch.randn(2, 10, D, dtype=torch.float64)
    y, _ = core(u)
    changed = u.clone()
    changed[:, :5] = torch.randn_like(changed[:, :5])  # a different past
    torch.testing.assert_close(core(changed)[0][:, 5:], y[:, 5:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="memory"):
        build_core("memoryless", d_model=D, inner="memoryless")
