"""Chunked selective scan == sequential reference (values, last state and gradients)."""

import pytest
import torch

from lightning_ssmvid.ops import selective_scan, selective_scan_ref, selective_scan_torch
from lightning_ssmvid.ops.selective_scan import exp_clamped
from tests.helpers import inputs

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("length", [1, 7, 33, 100])
@pytest.mark.parametrize("bc", ["variable", "grouped", "invariant"])
@pytest.mark.parametrize("with_state", [False, True])
def test_fast_equals_reference(dtype, length, bc, with_state):
    kw = inputs(dtype, length, bc)
    x0 = torch.randn(2, 6, 4).to(dtype) if with_state else None
    for chunk in (None, 8):  # auto chunk and a length that is not a divisor
        y, last = selective_scan_torch(**kw, delta_softplus=True, initial_state=x0, return_last_state=True,
                                       chunk_size=chunk)
        y_ref, last_ref = selective_scan_ref(**kw, delta_softplus=True, initial_state=x0, return_last_state=True)
        tol = TOL[dtype]
        torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
        torch.testing.assert_close(last, last_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("with_state", [False, True])
def test_gradients_equal_reference(with_state):
    kw = inputs(torch.float64, 45, "grouped")
    if with_state:
        kw["initial_state"] = torch.randn(2, 6, 4, dtype=torch.float64)
    leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items()}
    grads = []
    for fn in (lambda **a: selective_scan_torch(**a, chunk_size=8), selective_scan_ref,
               lambda **a: selective_scan_torch(**a, block_len=16)):  # blocks under activation checkpointing
        for v in leaves.values():
            v.grad = None
        y, last = fn(**leaves, delta_softplus=True, return_last_state=True)
        (y.sin().sum() + last.square().sum()).backward()
        grads.append({k: v.grad.clone() for k, v in leaves.items()})
    for k in leaves:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grads[2][k], grads[1][k], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bc", ["variable", "grouped", "invariant"])
def test_blocked_long_sequence_equals_reference(bc):
    kw = inputs(torch.float64, 100, bc)
    x0 = torch.randn(2, 6, 4, dtype=torch.float64)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            y, last = selective_scan_torch(**kw, initial_state=x0.requires_grad_(grad), return_last_state=True,
                                           block_len=32)
        y_ref, last_ref = selective_scan_ref(**kw, initial_state=x0, return_last_state=True)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(last, last_ref, rtol=1e-10, atol=1e-10)


def test_dispatch_without_flags_matches_reference():
    kw = inputs(torch.float64, 20)
    torch.testing.assert_close(selective_scan(**kw), selective_scan_ref(**kw), rtol=1e-10, atol=1e-10)


def test_strong_decay_is_exactly_zero_not_subnormal():
    x = torch.tensor([-1e4, -200.0, -float("inf"), -1.0], requires_grad=True)
    y = exp_clamped(x)
    assert y[:3].eq(0).all() and y[3] == torch.exp(torch.tensor(-1.0))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    # A large-delta scan stays finite and equal to the reference.
    kw = inputs(torch.float32, 64)
    kw["delta"] = kw["delta"] + 30.0
    torch.testing.assert_close(selective_scan_torch(**kw), selective_scan_ref(**kw), rtol=1e-5, atol=1e-5)
