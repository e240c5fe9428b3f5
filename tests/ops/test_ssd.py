"""Chunked SSD scan == sequential reference (values, final state and gradients)."""

import pytest
import torch
import torch.nn.functional as F

from lightning_ssmvid.ops import segsum, ssd_scan, ssd_scan_ref, ssd_scan_torch

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def inputs(dtype, length, batch=2, heads=4, p=3, groups=2, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    return dict(x=r(batch, length, heads, p), dt=F.softplus(r(batch, length, heads)), A=-torch.exp(r(heads)),
                B=r(batch, length, groups, n), C=r(batch, length, groups, n))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("length", [1, 8, 13, 50])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("D_shape", [None, (4,), (4, 3)])
def test_chunked_equals_reference(dtype, length, with_state, D_shape):
    kw = inputs(dtype, length)
    D = None if D_shape is None else torch.randn(D_shape).to(dtype)
    s0 = torch.randn(2, 4, 3, 5).to(dtype) if with_state else None
    y, final = ssd_scan_torch(**kw, chunk_size=8, D=D, initial_states=s0)
    y_ref, final_ref = ssd_scan_ref(**kw, D=D, initial_states=s0)
    tol = TOL[dtype]
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(final, final_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("with_state", [False, True])
def test_gradients_equal_reference(with_state):
    kw = inputs(torch.float64, 21)
    kw["D"] = torch.randn(4, dtype=torch.float64)
    if with_state:
        kw["initial_states"] = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items()}
    grads = []
    for fn in (lambda **a: ssd_scan_torch(**a, chunk_size=8), ssd_scan_ref):
        for v in leaves.values():
            v.grad = None
        y, final = fn(**leaves)
        (y.sin().sum() + final.square().sum()).backward()
        grads.append({k: v.grad.clone() for k, v in leaves.items()})
    for k in leaves:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-10, atol=1e-10)


def test_dispatch_and_no_final_state():
    kw = inputs(torch.float64, 30)
    y = ssd_scan(**kw, chunk_size=16, return_final_states=False)
    torch.testing.assert_close(y, ssd_scan_ref(**kw, return_final_states=False), rtol=1e-10, atol=1e-10)


def test_segsum():
    x = torch.randn(6, dtype=torch.float64)
    out = segsum(x)
    for i in range(6):
        for j in range(6):
            expected = x[j + 1:i + 1].sum() if i >= j else -float("inf")
            assert torch.isclose(out[i, j], torch.as_tensor(expected, dtype=torch.float64)) or (
                i < j and out[i, j] == -float("inf"))
