"""Mamba / Mamba-2 / hybrid specifics: multi-head, multi-group configs and long pieces through the chunked scans."""

import pytest
import torch

from lightning_ssmvid.cores import build_core
from tests.helpers import step_rollout

D = 16


@pytest.mark.parametrize("name, kw", [
    ("mamba", {"d_state": 4}),
    ("mamba2", {"headdim": 8, "ngroups": 2, "d_state": 8, "chunk_size": 8}),
    ("hybrid", {"headdim": 8, "window": 6, "chunk_size": 8, "n_layers": 4}),
    ("hybrid", {"attn_every": 3, "window": 5, "n_layers": 3}),
])
def test_configs_parallel_step_pieces(name, kw):
    kw = {"n_layers": 2, **kw}
    torch.manual_seed(0)
    core = build_core(name, d_model=D, **kw).double().eval()
    u = torch.randn(2, 70, D, dtype=torch.float64)
    y, final = core(u)
    stepped, state = step_rollout(core, u)
    torch.testing.assert_close(stepped, y, rtol=1e-10, atol=1e-10)
    pieces, st = [], None
    for part in (u[:, :2], u[:, 2:51], u[:, 51:]):
        y_part, st = core(part, st)
        pieces.append(y_part)
    torch.testing.assert_close(torch.cat(pieces, 1), y, rtol=1e-10, atol=1e-10)


def test_hybrid_layout_and_bounded_state():
    core = build_core("hybrid", d_model=D, n_layers=4, window=6, headdim=8)
    kinds = [type(m).__name__ for m in core.mixers]
    assert kinds == ["Mamba2Mixer", "AttentionMixer", "Mamba2Mixer", "AttentionMixer"]
    _, state = core(torch.randn(1, 40, D))
    assert state["1.k"].shape[2] == 6 and state["0.ssm"].shape == (1, 4, 8, 64)


def test_mamba_init():
    core = build_core("mamba", d_model=D, n_layers=1)
    mixer = core.mixers[0]
    assert torch.allclose(-torch.exp(mixer.A_log[0]), -torch.arange(1.0, 17.0))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert (dt >= 1e-4 * 0.999).all() and (dt <= 0.1 * 1.001).all()


@pytest.mark.parametrize("name, kw", [
    ("mamba", {"d_state": 4}), ("mamba2", {"headdim": 8, "chunk_size": 8}), ("hybrid", {"window": 5}),
    ("transformer", {"window": 6}),
])
def test_blockwise_long_forward_equals_single_pass(name, kw):
    """Long inputs run block by block (mamba: under checkpointing): values, state and gradients unchanged."""
    torch.manual_seed(0)
    core = build_core(name, d_model=D, n_layers=2, **kw).double()
    u = torch.randn(2, 50, D, dtype=torch.float64, requires_grad=True)
    results = []
    for block_len in (None, 16):  # 50 frames -> blocks of 16, 16, 16, 2
        for mixer in core.mixers:
            mixer.block_len = block_len
        core.zero_grad()
        u.grad = None
        y, final = core(u)
        y.square().mean().backward()
        results.append((y.detach(), final, u.grad.clone(), [p.grad.clone() for p in core.parameters()]))
    (y, final, gu, gp), (y_b, final_b, gu_b, gp_b) = results
    torch.testing.assert_close(y_b, y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gu_b, gu, rtol=1e-10, atol=1e-10)
    for a, b in zip(gp_b, gp):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for key in final:
        torch.testing.assert_close(final_b[key], final[key], rtol=1e-10, atol=1e-10)


def test_mamba_blocks_give_parameter_grads_when_the_input_needs_none():
    from lightning_ssmvid.cores.mamba import MambaMixer

    torch.manual_seed(0)
    mixer = MambaMixer(D, d_state=4).double()
    u = torch.randn(2, 40, D, dtype=torch.float64)  # no requires_grad: the non-reentrant checkpoint path
    grads = []
    for block_len in (None, 16):
        mixer.block_len = block_len
        mixer.zero_grad()
        mixer(u)[0].square().mean().backward()
        grads.append([p.grad.clone() for p in mixer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
