import pytest
import torch

from lightning_ssmvid.ops import causal_conv, direct_conv, fft_conv


@pytest.mark.parametrize("length", [1, 5, 64, 65, 300])
def test_fft_equals_direct_and_naive(length):
    torch.manual_seed(0)
    u = torch.randn(2, 3, length, dtype=torch.float64)
    k = torch.randn(3, length, dtype=torch.float64)
    naive = torch.zeros_like(u)
    for t in range(length):
        naive[..., t] = (k[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1)
    torch.testing.assert_close(fft_conv(u, k), naive, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(direct_conv(u, k), naive, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(causal_conv(u, k), naive, rtol=1e-10, atol=1e-10)
