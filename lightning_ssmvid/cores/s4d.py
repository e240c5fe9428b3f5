"""S4D core: residual stack of LTI diagonal SSMs (Gu et al. 2022), trained by FFT convolution, stepped recurrently.

Per channel h (H = d_model) and complex mode n (N = d_state // 2, conjugate pairs implied by 2 Re):

    x_t = Abar x_{t-1} + Bbar u_t,   y_t = 2 Re(C x_t) + D u_t,   Abar = exp(dt A),  Bbar = (Abar - 1) / A * B

(zero-order hold; dt = exp(log_dt) per channel, B = 1). ``init="lin"``: A_n = -1/2 + i pi n (S4D-Lin);
``init="legs"``: A = the eigenvalues of the normal part of HiPPO-LegS (S4D-LegS). The mixer output is
``GLU(W gelu(y))``.

The kernel K_l = 2 Re(sum_n C_n Bbar_n Abar_n^l) is a Vandermonde product computed in factored form
``Abar^(i b + j) = Abar^(i b) Abar^j`` with b ~ sqrt(L): two small (N x sqrt(L)) power tables and one batched
matmul, never an (N, L) Python loop nor an (H, N, L) tensor. A carried state x0 adds ``2 Re(C Abar^(t+1) x0)``
(the same product) and the final state ``Abar^L x0 + Bbar sum_s Abar^(L-1-s) u_s`` is the transposed product
applied to the reversed input (closed form, no loop).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssmvid.cores import register_core
from lightning_ssmvid.cores.base import Mixer, ResidualCore, State, no_weight_decay
from lightning_ssmvid.ops.fft_conv import causal_conv


def legs_eigenvalues(n_modes: int) -> Tensor:
    """The N eigenvalues with positive imaginary part of the normal part of HiPPO-LegS (size 2N), float64."""
    size = 2 * n_modes
    r = torch.sqrt(2 * torch.arange(size, dtype=torch.float64) + 1)
    # HiPPO-LegS + P P^T (P_n = sqrt(n + 1/2)) = -1/2 I + K with K skew-symmetric: K_nk = -r_n r_k / 2 (n > k).
    K = -0.5 * (r[:, None] * r[None, :])
    K = K.tril(-1) - K.tril(-1).t()
    imag = -torch.linalg.eigvalsh(1j * K.to(torch.complex128))  # eig(K) = -i * eig(iK)
    imag = imag.sort().values[n_modes:]  # the positive half
    return torch.complex(torch.full_like(imag, -0.5), imag)


def power_tables(log_z: Tensor, length: int) -> tuple[Tensor, Tensor, int]:
    """log_z (H, N) complex -> z^j (H, N, b) for j < b and z^(i b) (H, N, nb) for i < nb, with b nb >= L."""
    b = max(1, math.ceil(math.sqrt(length)))
    nb = max(1, -(-length // b))
    real = log_z.real.dtype
    lo = torch.exp(log_z[..., None] * torch.arange(b, device=log_z.device, dtype=real))
    hi = torch.exp(log_z[..., None] * (b * torch.arange(nb, device=log_z.device, dtype=real)))
    return lo, hi, b


def vandermonde(coef: Tensor, tables: tuple[Tensor, Tensor, int], length: int) -> Tensor:
    """sum_n coef[..., h, n] z[h, n]^l for l < L: coef (..., H, N) complex -> (..., H, L) complex."""
    lo, hi, b = tables
    left = (coef[..., None] * hi).transpose(-1, -2)  # (..., H, nb, N)
    out = left @ lo  # (..., H, nb, b)
    return out.flatten(-2)[..., :length]


def vandermonde_t(w: Tensor, tables: tuple[Tensor, Tensor, int]) -> Tensor:
    """sum_l w[..., h, l] z[h, n]^l: w (..., H, L) real -> (..., H, N) complex."""
    lo, hi, b = tables
    nb = hi.shape[-1]
    w = F.pad(w, (0, nb * b - w.shape[-1])).unflatten(-1, (nb, b)).to(lo.dtype)  # (..., H, nb, b)
    partial = w @ lo.transpose(-1, -2)  # (..., H, nb, N)
    return (partial * hi.transpose(-1, -2)).sum(-2)


def _as_complex(x: Tensor) -> Tensor:
    return torch.complex(x[..., 0], x[..., 1])


def _as_real(x: Tensor) -> Tensor:
    return torch.stack([x.real, x.imag], dim=-1)


class S4DMixer(Mixer):
    def __init__(self, d_model: int, d_state: int = 64, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 0.1):
        super().__init__()
        self.d_model, self.n_modes = d_model, max(1, d_state // 2)
        H, N = d_model, self.n_modes
        if init == "lin":
            n = torch.arange(N, dtype=torch.float64)
            A = torch.complex(torch.full_like(n, -0.5), math.pi * n)
        elif init == "legs":
            A = legs_eigenvalues(N)
        else:
            raise ValueError(f"unknown S4D init {init!r}; valid: lin, legs")
        self.log_A_real = nn.Parameter(torch.log(-A.real).float().repeat(H, 1))
        self.A_imag = nn.Parameter(A.imag.float().repeat(H, 1))
        self.log_dt = nn.Parameter(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.C = nn.Parameter(torch.randn(H, N, 2) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(H))
        no_weight_decay(self.log_A_real, self.A_imag, self.log_dt, self.D)
        self.out_proj = nn.Linear(H, 2 * H)

    def log_decay(self) -> Tensor:
        """|exp(dt A)| = exp(-dt exp(log_A_real)) per (channel, mode)."""
        return -torch.exp(self.log_dt)[:, None] * torch.exp(self.log_A_real)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        return {"x": torch.zeros(batch_size, self.d_model, self.n_modes, 2, device=device, dtype=dtype)}

    def discretize(self) -> tuple[Tensor, Tensor, Tensor]:
        """-> log Abar = dt A, Bbar, C (all (H, N) complex)."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        dtA = torch.exp(self.log_dt)[:, None] * A
        Bbar = torch.expm1(dtA) / A
        return dtA, Bbar, _as_complex(self.C)

    def kernel(self, length: int) -> Tensor:
        """The convolution kernel K (H, L)."""
        dtA, Bbar, C = self.discretize()
        return 2 * vandermonde(C * Bbar, power_tables(dtA, length), length).real

    def _output(self, y: Tensor) -> Tensor:
        return F.glu(self.out_proj(F.gelu(y)), dim=-1)

    def forward(self, u: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        length = u.shape[1]
        dtA, Bbar, C = self.discretize()
        tables = power_tables(dtA, length)
        uT = u.transpose(1, 2)  # (B, H, L)
        K = 2 * vandermonde(C * Bbar, tables, length).real
        y = causal_conv(uT, K.to(u.dtype)) + uT * self.D[:, None]
        x_last = Bbar * vandermonde_t(uT.flip(-1), tables)  # (B, H, N)
        if state is not None:
            x0 = _as_complex(state["x"].to(u.dtype))
            Abar = torch.exp(dtA)
            y = y + 2 * vandermonde(C * Abar * x0, tables, length).real
            x_last = x_last + torch.exp(dtA * length) * x0
        return self._output(y.transpose(1, 2)), {"x": _as_real(x_last)}

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        dtA, Bbar, C = self.discretize()
        x = torch.exp(dtA) * _as_complex(state["x"].to(u_t.dtype)) + Bbar * u_t[..., None]
        y = 2 * (C * x).sum(-1).real + self.D * u_t
        return self._output(y), {"x": _as_real(x)}


@register_core("s4d")
class S4DCore(ResidualCore):
    """State per layer ``i``: ``"i.x"`` (B, d_model, d_state // 2, 2), the complex modes as (real, imag)."""

    def __init__(self, d_model: int, n_layers: int = 2, d_state: int = 64, init: str = "lin",
                 mlp_ratio: float = 0.0):
        super().__init__(d_model, n_layers, lambda i: S4DMixer(d_model, d_state, init), mlp_ratio=mlp_ratio)
