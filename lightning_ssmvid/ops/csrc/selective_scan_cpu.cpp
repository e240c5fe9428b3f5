// Fused CPU selective scan (Mamba-1), forward and backward: one pass over time per (batch, channel) with the
// N-dim state held in cache, so no (B, D, L, N) tensor is ever written. Shapes:
//   u, delta: (B, D, L)   A: (D, N)   Bt, Ct: (B, G, L, N) (time-major; channel d uses group d / (D / G))
//   h0: (B, D, N)   ->   y: (B, D, L) = sum_n C_t[n] x_t[n],   hL: (B, D, N)
//   x_t = exp(delta_t A) * x_{t-1} + delta_t u_t B_t       (delta already softplus-ed; D skip and gate outside)
// exp of log-decays below -60 is an exact zero (no subnormals; matches ops/decay.py).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr double kExpClamp = -60.0;
constexpr int64_t kBlock = 128;  // time steps per backward block (its states fit in L1)

template <typename T>
inline T exp_clamped(T v) { return v < T(kExpClamp) ? T(0) : std::exp(v); }

template <typename T>
struct Scan {  // raw views of the inputs; `dim / groups` channels share one B, C row
  const T *u, *delta, *A, *B, *C, *h0;
  int64_t batch, dim, len, N, groups;
  int64_t bc_offset(int64_t b, int64_t d) const { return (b * groups + d / (dim / groups)) * len * N; }
};

// x_out <- exp(dl A) x_in + du B over the N state dims (kN > 0: N known at compile time, so the loop vectorises
// fully). x_out may be x_in (no __restrict__ on them: in place is elementwise, which `omp simd` allows).
template <typename T, int64_t kN>
inline void step(T* x_out, const T* x_in, const T* __restrict__ A, const T* __restrict__ B, T dl, T du, int64_t N) {
  const int64_t n_end = kN > 0 ? kN : N;
#pragma omp simd
  for (int64_t n = 0; n < n_end; ++n) x_out[n] = exp_clamped(dl * A[n]) * x_in[n] + du * B[n];
}

template <typename T, int64_t kN>
void forward_rows(const Scan<T>& s, T* y, T* hL, int64_t begin, int64_t end) {
  const int64_t N = kN > 0 ? kN : s.N;
  std::vector<T> x(N);
  for (int64_t bd = begin; bd < end; ++bd) {
    const int64_t b = bd / s.dim, d = bd % s.dim, off = s.bc_offset(b, d);
    const T *A = s.A + d * N, *ut = s.u + bd * s.len, *dt = s.delta + bd * s.len;
    T* xv = x.data();
    std::copy_n(s.h0 + bd * N, N, xv);
    for (int64_t t = 0; t < s.len; ++t) {
      const T dl = dt[t];
      step<T, kN>(xv, xv, A, s.B + off + t * N, dl, dl * ut[t], N);
      const T* __restrict__ C = s.C + off + t * N;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t n = 0; n < N; ++n) acc += xv[n] * C[n];
      y[bd * s.len + t] = acc;
    }
    std::copy_n(xv, N, hL + bd * N);
  }
}

// Adjoint of the scan for channels [begin, end) of one batch row b. A forward pass keeps the state entering every
// block of kBlock steps; then, block by block backward in time, each channel recomputes its states inside the block
// (L1-sized) and runs the adjoint recurrence, carrying dL/dx across blocks. Blocking keeps one block's B, C rows and
// their gradient rows in cache while all channels of the range pass over them.
template <typename T, int64_t kN>
void backward_rows(const Scan<T>& s, const T* gy, const T* ghL, T* gu, T* gdelta, T* gh0, T* gA, T* gB, T* gC,
                   int64_t begin, int64_t end) {
  const int64_t N = kN > 0 ? kN : s.N, len = s.len, b = begin / s.dim, nd = end - begin;
  const int64_t n_blocks = (len + kBlock - 1) / kBlock;
  std::vector<T> starts(nd * n_blocks * N), gx(nd * N), x(N), xs((kBlock + 1) * N);
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t bd = begin + i, d = bd % s.dim, off = s.bc_offset(b, d);
    const T *A = s.A + d * N, *ut = s.u + bd * len, *dt = s.delta + bd * len;
    T* block_starts = starts.data() + i * n_blocks * N;
    std::copy_n(s.h0 + bd * N, N, x.data());
    for (int64_t t = 0; t < len; ++t) {
      if (t % kBlock == 0) std::copy_n(x.data(), N, block_starts + (t / kBlock) * N);
      step<T, kN>(x.data(), x.data(), A, s.B + off + t * N, dt[t], dt[t] * ut[t], N);
    }
    std::copy_n(ghL + bd * N, N, gx.data() + i * N);
  }
  for (int64_t blk = n_blocks - 1; blk >= 0; --blk) {
    const int64_t t0 = blk * kBlock, t1 = std::min(len, t0 + kBlock);
    for (int64_t i = 0; i < nd; ++i) {
      const int64_t bd = begin + i, d = bd % s.dim, off = s.bc_offset(b, d);
      const T* __restrict__ A = s.A + d * N;
      const T *ut = s.u + bd * len, *dt = s.delta + bd * len, *gyt = gy + bd * len;
      std::copy_n(starts.data() + (i * n_blocks + blk) * N, N, xs.data());
      for (int64_t t = t0; t < t1; ++t) {  // xs[k + 1]: the state after step t0 + k
        step<T, kN>(xs.data() + (t - t0 + 1) * N, xs.data() + (t - t0) * N, A, s.B + off + t * N, dt[t],
                    dt[t] * ut[t], N);
      }
      T* __restrict__ gxp = gx.data() + i * N;
      T* __restrict__ gAd = gA + d * N;
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const T dl = dt[t], uu = ut[t], du = dl * uu, g_y = gyt[t];
        const T* __restrict__ Bp = s.B + off + t * N;
        const T* __restrict__ Cp = s.C + off + t * N;
        const T* __restrict__ xp = xs.data() + (t - t0) * N;
        const T* __restrict__ xn = xs.data() + (t - t0 + 1) * N;
        T* __restrict__ gBp = gB + off + t * N;
        T* __restrict__ gCp = gC + off + t * N;
        T g_dl = 0, g_du = 0;
#pragma omp simd reduction(+ : g_dl, g_du)
        for (int64_t n = 0; n < N; ++n) {
          const T gxn = gxp[n] + g_y * Cp[n];  // dL/dx_t
          gCp[n] += g_y * xn[n];
          const T a = exp_clamped(dl * A[n]);
          const T ga_a = gxn * xp[n] * a;  // dL/d(log-decay)
          g_dl += ga_a * A[n];
          gAd[n] += ga_a * dl;
          g_du += gxn * Bp[n];
          gBp[n] += gxn * du;
          gxp[n] = a * gxn;  // dL/dx_{t-1}
        }
        gdelta[bd * len + t] = g_dl + g_du * uu;
        gu[bd * len + t] = g_du * dl;
      }
    }
  }
  for (int64_t i = 0; i < nd; ++i) std::copy_n(gx.data() + i * N, N, gh0 + (begin + i) * N);
}

template <typename T>
Scan<T> view(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A, const torch::Tensor& Bt,
             const torch::Tensor& Ct, const torch::Tensor& h0) {
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "u, delta: (B, D, L)");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1), "A: (D, N)");
  TORCH_CHECK(Bt.dim() == 4 && Bt.sizes() == Ct.sizes() && Bt.size(0) == u.size(0) && Bt.size(2) == u.size(2) &&
              Bt.size(3) == A.size(1) && u.size(1) % Bt.size(1) == 0, "B, C: (B, G, L, N)");
  TORCH_CHECK(h0.dim() == 3 && h0.size(0) == u.size(0) && h0.size(1) == u.size(1) && h0.size(2) == A.size(1),
              "h0: (B, D, N)");
  for (const auto* t : {&u, &delta, &A, &Bt, &Ct, &h0}) {
    TORCH_CHECK(t->is_contiguous() && !t->is_cuda() && t->scalar_type() == u.scalar_type(),
                "contiguous CPU tensors of one dtype");
  }
  return {u.data_ptr<T>(), delta.data_ptr<T>(), A.data_ptr<T>(), Bt.data_ptr<T>(), Ct.data_ptr<T>(),
          h0.data_ptr<T>(), u.size(0), u.size(1), u.size(2), A.size(1), Bt.size(1)};
}

}  // namespace

std::vector<torch::Tensor> scan_forward(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bt,
                                        torch::Tensor Ct, torch::Tensor h0) {
  auto y = torch::empty_like(u);
  auto hL = torch::empty_like(h0);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "scan_forward", [&] {
    const auto s = view<scalar_t>(u, delta, A, Bt, Ct, h0);
    scalar_t *py = y.data_ptr<scalar_t>(), *phL = hL.data_ptr<scalar_t>();
    at::parallel_for(0, s.batch * s.dim, 1, [&](int64_t begin, int64_t end) {
      if (s.N == 16) forward_rows<scalar_t, 16>(s, py, phL, begin, end);
      else forward_rows<scalar_t, 0>(s, py, phL, begin, end);
    });
  });
  return {y, hL};
}

// Gradients of (y, hL) -> (u, delta, A, Bt, Ct, h0). B, C and A are shared over channels (A also over the batch):
// each thread accumulates them privately; the per-thread sums are added at the end.
std::vector<torch::Tensor> scan_backward(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bt,
                                         torch::Tensor Ct, torch::Tensor h0, torch::Tensor gy, torch::Tensor ghL) {
  TORCH_CHECK(gy.sizes() == u.sizes() && ghL.sizes() == h0.sizes() && gy.is_contiguous() && ghL.is_contiguous() &&
              gy.scalar_type() == u.scalar_type() && ghL.scalar_type() == u.scalar_type(),
              "gradients shaped like y, hL");
  const int64_t threads = at::get_num_threads();
  auto gu = torch::empty_like(u);
  auto gdelta = torch::empty_like(delta);
  auto gh0 = torch::empty_like(h0);
  auto gA = torch::zeros({threads, A.size(0), A.size(1)}, u.options());
  auto gB = torch::zeros({threads, Bt.size(0), Bt.size(1), Bt.size(2), Bt.size(3)}, u.options());
  auto gC = torch::zeros_like(gB);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "scan_backward", [&] {
    const auto s = view<scalar_t>(u, delta, A, Bt, Ct, h0);
    const scalar_t *pgy = gy.data_ptr<scalar_t>(), *pghL = ghL.data_ptr<scalar_t>();
    scalar_t *pgu = gu.data_ptr<scalar_t>(), *pgd = gdelta.data_ptr<scalar_t>(), *pgh0 = gh0.data_ptr<scalar_t>();
    at::parallel_for(0, s.batch * s.dim, 1, [&](int64_t begin, int64_t end) {
      const int64_t tid = at::get_thread_num();
      scalar_t* gA_own = gA.data_ptr<scalar_t>() + tid * A.numel();
      scalar_t* gB_own = gB.data_ptr<scalar_t>() + tid * Bt.numel();
      scalar_t* gC_own = gC.data_ptr<scalar_t>() + tid * Bt.numel();
      while (begin < end) {  // one batch row's channel range at a time
        const int64_t row_end = std::min(end, (begin / s.dim + 1) * s.dim);
        if (s.N == 16) {
          backward_rows<scalar_t, 16>(s, pgy, pghL, pgu, pgd, pgh0, gA_own, gB_own, gC_own, begin, row_end);
        } else {
          backward_rows<scalar_t, 0>(s, pgy, pghL, pgu, pgd, pgh0, gA_own, gB_own, gC_own, begin, row_end);
        }
        begin = row_end;
      }
    });
  });
  return {gu, gdelta, gA.sum(0), gB.sum(0), gC.sum(0), gh0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "fused selective scan forward (CPU)");
  m.def("backward", &scan_backward, "fused selective scan backward (CPU)");
}
