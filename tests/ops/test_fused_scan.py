"""The fused C++ CPU selective scan and the carried-state composition for CUDA kernels == the sequential reference."""

import importlib
import logging

import pytest
import torch

from lightning_ssmvid.ops import dispatch, selective_scan, selective_scan_cpu, selective_scan_ref
from lightning_ssmvid.ops.selective_scan_cuda import selective_scan_with_state
from lightning_ssmvid.ops.ssd import ssd_scan, ssd_scan_ref
from tests.helpers import inputs

scan_module = importlib.import_module("lightning_ssmvid.ops.selective_scan")  # the module, not the function
pytestmark = pytest.mark.skipif(selective_scan_cpu.kernel() is None, reason="no C++ toolchain to build the kernel")


def values_and_grads(fn, kw):
    leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items()}
    y, last = fn(**leaves, delta_softplus=True, return_last_state=True)
    (y.sin().sum() + last.square().sum()).backward()
    return y.detach(), last.detach(), {k: v.grad for k, v in leaves.items()}


def assert_parity(fn, kw, dtype):
    """fp64: equal to the reference to 1e-10. fp32: no further from the fp64 reference than 4x the fp32 reference's
    own rounding error (plus 1e-6 of the scale), since the two sum in different orders."""
    fast = values_and_grads(fn, kw)
    names = ["y", "last state"] + [f"gradient of {k}" for k in kw]
    flat = lambda r: [r[0], r[1], *r[2].values()]  # noqa: E731
    if dtype == torch.float64:
        for a, b, name in zip(flat(fast), flat(values_and_grads(selective_scan_ref, kw)), names):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
        return
    exact = values_and_grads(selective_scan_ref, {k: v.double() for k, v in kw.items()})
    ref32 = values_and_grads(selective_scan_ref, kw)
    for a, r, e, name in zip(flat(fast), flat(ref32), flat(exact), names):
        own_error = (r.double() - e).abs().max().item()
        error = (a.double() - e).abs().max().item()
        assert error <= 4 * own_error + 1e-6 * e.abs().max().item(), (name, error, own_error)


# Lengths around the kernel's 128-step backward block; N = 16 is the compile-time path, N = 4 the general one.
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("length", [1, 7, 127, 129, 300])
@pytest.mark.parametrize("bc", ["variable", "grouped"])
@pytest.mark.parametrize("n", [4, 16])
@pytest.mark.parametrize("with_state", [False, True])
def test_fused_values_and_gradients_equal_reference(dtype, length, bc, n, with_state):
    kw = inputs(dtype, length, bc, n=n)
    if with_state:
        kw["initial_state"] = torch.randn(2, 6, n).to(dtype)
    assert_parity(scan_module.selective_scan_fused, kw, dtype)


def test_cpu_dispatch_takes_the_fused_kernel(monkeypatch):
    calls = []
    real = scan_module.fused_selective_scan
    monkeypatch.setattr(scan_module, "fused_selective_scan", lambda *a: calls.append(1) or real(*a))
    kw = inputs(torch.float32, 20)
    torch.testing.assert_close(selective_scan(**kw), selective_scan_ref(**kw), rtol=1e-4, atol=1e-4)
    assert calls, "CPU fp32 inputs with time-varying B, C must take the fused kernel"


def test_fallbacks_are_logged_once_with_the_reason(monkeypatch, caplog):
    monkeypatch.setenv("SSMVID_FUSED_SCAN", "0")
    monkeypatch.setattr(dispatch, "_seen", set())
    kw = inputs(torch.float64, 10)
    with caplog.at_level(logging.WARNING, logger="lightning_ssmvid.ops"):
        for _ in range(3):
            torch.testing.assert_close(selective_scan(**kw), selective_scan_ref(**kw), rtol=1e-10, atol=1e-10)
    lines = [r.getMessage() for r in caplog.records if "PyTorch path" in r.getMessage()]
    assert lines == ["selective_scan on cpu: using the PyTorch path (SSMVID_FUSED_SCAN=0)"], lines


def test_a_failed_build_falls_back_with_one_line(monkeypatch, caplog):
    import torch.utils.cpp_extension as cpp

    def broken(**_):
        raise RuntimeError("Error building extension 'x': [1/2] c++ ...\nfoo.cpp:3:1: error: expected ';'\nninja stop")

    monkeypatch.setattr(selective_scan_cpu, "_state", {})
    monkeypatch.setattr(cpp, "load", broken)
    with caplog.at_level(logging.WARNING):
        assert selective_scan_cpu.kernel() is None
    assert "could not be built (foo.cpp:3:1: error: expected ';')" in caplog.text


def ref_without_state(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    """Stands in for mamba_ssm's CUDA kernel, which takes no initial state."""
    return selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                              return_last_state=return_last_state)


@pytest.mark.parametrize("bc", ["variable", "grouped"])
@pytest.mark.parametrize("length", [1, 300, 600])  # across the correction's 256-step blocks
def test_carried_state_composition_equals_reference(bc, length):
    kw = inputs(torch.float64, length, bc)
    kw["initial_state"] = torch.randn(2, 6, 4, dtype=torch.float64)
    composed = values_and_grads(lambda **a: selective_scan_with_state(ref_without_state, **a), kw)
    ref = values_and_grads(selective_scan_ref, kw)
    for a, b in zip(composed[:2], ref[:2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for k in kw:
        torch.testing.assert_close(composed[2][k], ref[2][k], rtol=1e-10, atol=1e-10, msg=f"gradient of {k}")


def test_time_invariant_b_c_fall_back_to_the_torch_path(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "_seen", set())
    kw = inputs(torch.float64, 10, "invariant")
    with caplog.at_level(logging.WARNING, logger="lightning_ssmvid.ops"):
        torch.testing.assert_close(selective_scan(**kw), selective_scan_ref(**kw), rtol=1e-10, atol=1e-10)
    assert "(time-invariant or differently shaped B, C)" in caplog.text


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("with_state", [False, True])
def test_cuda_selective_scan_equals_reference(with_state):  # pragma: no cover - runs on a GPU (bench.gpu)
    kw = inputs(torch.float32, 300, n=16)
    if with_state:
        kw["initial_state"] = torch.randn(2, 6, 16)
    on_gpu = values_and_grads(selective_scan, {k: v.cuda() for k, v in kw.items()})
    ref = values_and_grads(selective_scan_ref, kw)
    for a, b in zip(on_gpu[:2], ref[:2]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-3)
    for k in kw:
        torch.testing.assert_close(on_gpu[2][k].cpu(), ref[2][k], rtol=1e-3, atol=1e-3, msg=f"gradient of {k}")


@cuda
@pytest.mark.parametrize("with_state", [False, True])
def test_cuda_ssd_scan_equals_reference(with_state):  # pragma: no cover - runs on a GPU (bench.gpu)
    g = torch.Generator().manual_seed(0)
    b, l, h, p, n = 2, 300, 4, 16, 32
    kw = dict(x=torch.randn(b, l, h, p, generator=g), dt=torch.rand(b, l, h, generator=g) * 0.1,
              A=-torch.rand(h, generator=g) - 0.5, B=torch.randn(b, l, 1, n, generator=g),
              C=torch.randn(b, l, 1, n, generator=g), D=torch.ones(h))
    if with_state:
        kw["initial_states"] = torch.randn(b, h, p, n, generator=g)
    y, last = ssd_scan(**{k: v.cuda() for k, v in kw.items()}, chunk_size=64)
    y_ref, last_ref = ssd_scan_ref(**kw)
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(last.cpu(), last_ref, rtol=1e-3, atol=1e-3)
