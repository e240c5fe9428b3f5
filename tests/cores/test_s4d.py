"""S4D: Vandermonde kernel == naive recurrence; closed-form carried state; both inits."""

import pytest
import torch

from lightning_ssmvid.cores import build_core
from lightning_ssmvid.cores.s4d import S4DMixer, legs_eigenvalues, power_tables, vandermonde, vandermonde_t


@pytest.mark.parametrize("init", ["lin", "legs"])
@pytest.mark.parametrize("length", [1, 10, 97])
def test_kernel_equals_naive_recurrence(init, length):
    torch.manual_seed(0)
    mixer = S4DMixer(6, d_state=8, init=init).double()
    K = mixer.kernel(length)
    dtA, Bbar, C = mixer.discretize()
    Abar = torch.exp(dtA)
    x = torch.zeros_like(Abar)
    naive = []
    for t in range(length):  # impulse response of x_t = Abar x_{t-1} + Bbar u_t, y_t = 2 Re(C x_t)
        x = Abar * x + (Bbar if t == 0 else 0)
        naive.append(2 * (C * x).sum(-1).real)
    torch.testing.assert_close(K, torch.stack(naive, -1), rtol=1e-10, atol=1e-10)


def test_vandermonde_transpose():
    torch.manual_seed(0)
    log_z = torch.complex(-torch.rand(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64))
    length = 23
    tables = power_tables(log_z, length)
    V = torch.exp(log_z[..., None] * torch.arange(length, dtype=torch.float64))  # (H, N, L)
    coef = torch.randn(2, 3, 4, dtype=torch.complex128)
    torch.testing.assert_close(vandermonde(coef, tables, length), torch.einsum("bhn,hnl->bhl", coef, V))
    w = torch.randn(2, 3, length, dtype=torch.float64)
    torch.testing.assert_close(vandermonde_t(w, tables), torch.einsum("bhl,hnl->bhn", w.to(V.dtype), V))


def test_legs_eigenvalues():
    ev = legs_eigenvalues(8)
    assert torch.allclose(ev.real, torch.full_like(ev.real, -0.5))
    assert (ev.imag > 0).all() and ev.shape == (8,)


def test_carried_state_long_sequence_fft_path():
    torch.manual_seed(0)
    core = build_core("s4d", d_model=8, n_layers=2, init="legs").double().eval()
    u = torch.randn(2, 300, 8, dtype=torch.float64)  # pieces longer than the direct-conv threshold use FFT
    y, final = core(u)
    y1, st = core(u[:, :130])
    y2, st = core(u[:, 130:], st)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-10, atol=1e-10)
    for key in final:
        torch.testing.assert_close(st[key], final[key], rtol=1e-10, atol=1e-10)
