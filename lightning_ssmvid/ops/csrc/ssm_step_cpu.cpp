// Fused CPU step (one frame) of the Mamba and Mamba-2 mixers (cores/mamba.py, cores/mamba2.py): in_proj, the causal
// depthwise conv window, the selective state update, the gate and out_proj in one call. At batch 1 a mixer's PyTorch
// step is ~40 small ops, each dominated by dispatch overhead; generation runs one per layer per frame. Float32,
// inference only; the mixers' PyTorch `_step_reference` is the reference (tests/ops/test_ssm_step.py). Shapes:
//   mamba_step:  u (B, D), conv (B, Di, K-1), ssm (B, Di, N); in_w (2Di, D), conv_w (Di, K), conv_b (Di),
//                x_proj_w (R+2N, Di), dt_w (Di, R), dt_b (Di), A_log (Di, N), D (Di), out_w (D, Di)
//   mamba2_step: u (B, D), conv (B, Cd, K-1), ssm (B, H, P, N) with Cd = Di + 2GN; in_w (Di+Cd+H, D),
//                conv_w (Cd, K), conv_b (Cd), dt_bias (H), A_log (H), D (H), norm_w (Di), out_w (D, Di)
//   -> {y (B, D), new conv (B, ., K-1), new ssm}; the inputs are not modified.
#include <torch/extension.h>
#include <cmath>
#include <vector>

namespace {

// y = W x for a row-major (rows, cols) W
inline void matvec(float* __restrict__ y, const float* __restrict__ W, const float* __restrict__ x, int64_t rows,
                   int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* w = W + r * cols;
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < cols; ++c) acc += w[c] * x[c];
    y[r] = acc;
  }
}

inline float silu(float v) { return v / (1.f + std::exp(-v)); }
inline float softplus(float v) { return v > 20.f ? v : std::log1p(std::exp(v)); }  // F.softplus's threshold

// Depthwise causal conv of one frame: out[c] = silu(bias[c] + sum_k window[c, k] w[c, k]) with window = (state[c], x[c]);
// new_state[c] = window[c, 1:]
inline void conv_step(float* __restrict__ out, float* __restrict__ new_state, const float* __restrict__ state,
                      const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                      int64_t channels, int64_t K) {
  for (int64_t c = 0; c < channels; ++c) {
    const float* s = state + c * (K - 1);
    const float* wc = w + c * K;
    float acc = bias[c] + x[c] * wc[K - 1];
    for (int64_t k = 0; k < K - 1; ++k) acc += s[k] * wc[k];
    out[c] = silu(acc);
    float* ns = new_state + c * (K - 1);
    for (int64_t k = 0; k + 1 < K - 1; ++k) ns[k] = s[k + 1];
    if (K > 1) ns[K - 2] = x[c];
  }
}

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
}

}  // namespace

std::vector<torch::Tensor> mamba_step(torch::Tensor u, torch::Tensor conv, torch::Tensor ssm, torch::Tensor in_w,
                                      torch::Tensor conv_w, torch::Tensor conv_b, torch::Tensor x_proj_w,
                                      torch::Tensor dt_w, torch::Tensor dt_b, torch::Tensor A_log, torch::Tensor D,
                                      torch::Tensor out_w) {
  for (auto* t : {&u, &conv, &ssm, &in_w, &conv_w, &conv_b, &x_proj_w, &dt_w, &dt_b, &A_log, &D, &out_w})
    check(*t, "every argument");
  const int64_t batch = u.size(0), d_model = u.size(1), d_inner = ssm.size(1), N = ssm.size(2);
  const int64_t K = conv_w.size(1), R = dt_w.size(1), P = x_proj_w.size(0);
  TORCH_CHECK(in_w.size(0) == 2 * d_inner && in_w.size(1) == d_model && P == R + 2 * N && out_w.size(1) == d_inner &&
                  conv.size(1) == d_inner && conv.size(2) == K - 1 && A_log.size(0) == d_inner && A_log.size(1) == N,
              "mamba_step: inconsistent shapes");
  auto y = torch::empty({batch, out_w.size(0)}, u.options());
  auto new_conv = torch::empty_like(conv), new_ssm = torch::empty_like(ssm);
  std::vector<float> xz(2 * d_inner), xc(d_inner), dbc(P), gated(d_inner), negA(d_inner * N);
  const float* A = A_log.data_ptr<float>();
  for (int64_t i = 0; i < d_inner * N; ++i) negA[i] = -std::exp(A[i]);
  for (int64_t b = 0; b < batch; ++b) {
    matvec(xz.data(), in_w.data_ptr<float>(), u.data_ptr<float>() + b * d_model, 2 * d_inner, d_model);
    conv_step(xc.data(), new_conv.data_ptr<float>() + b * d_inner * (K - 1),
              conv.data_ptr<float>() + b * d_inner * (K - 1), xz.data(), conv_w.data_ptr<float>(),
              conv_b.data_ptr<float>(), d_inner, K);
    matvec(dbc.data(), x_proj_w.data_ptr<float>(), xc.data(), P, d_inner);
    const float *Bv = dbc.data() + R, *Cv = dbc.data() + R + N, *dtw = dt_w.data_ptr<float>();
    const float *s_old = ssm.data_ptr<float>() + b * d_inner * N;
    float* s_new = new_ssm.data_ptr<float>() + b * d_inner * N;
    for (int64_t c = 0; c < d_inner; ++c) {
      float dt = dt_b.data_ptr<float>()[c];
      for (int64_t r = 0; r < R; ++r) dt += dtw[c * R + r] * dbc[r];
      const float delta = softplus(dt), dx = delta * xc[c];
      float acc = 0.f;
      for (int64_t n = 0; n < N; ++n) {
        const float s = std::exp(delta * negA[c * N + n]) * s_old[c * N + n] + dx * Bv[n];
        s_new[c * N + n] = s;
        acc += s * Cv[n];
      }
      gated[c] = (acc + D.data_ptr<float>()[c] * xc[c]) * silu(xz[d_inner + c]);
    }
    matvec(y.data_ptr<float>() + b * out_w.size(0), out_w.data_ptr<float>(), gated.data(), out_w.size(0), d_inner);
  }
  return {y, new_conv, new_ssm};
}

std::vector<torch::Tensor> mamba2_step(torch::Tensor u, torch::Tensor conv, torch::Tensor ssm, torch::Tensor in_w,
                                       torch::Tensor conv_w, torch::Tensor conv_b, torch::Tensor dt_bias,
                                       torch::Tensor A_log, torch::Tensor D, torch::Tensor norm_w, double eps,
                                       torch::Tensor out_w, int64_t ngroups) {
  for (auto* t : {&u, &conv, &ssm, &in_w, &conv_w, &conv_b, &dt_bias, &A_log, &D, &norm_w, &out_w})
    check(*t, "every argument");
  const int64_t batch = u.size(0), d_model = u.size(1), H = ssm.size(1), P = ssm.size(2), N = ssm.size(3);
  const int64_t d_inner = H * P, conv_dim = conv.size(1), K = conv_w.size(1), rows = in_w.size(0);
  TORCH_CHECK(ngroups >= 1 && H % ngroups == 0 && conv_dim == d_inner + 2 * ngroups * N &&
                  rows == d_inner + conv_dim + H && in_w.size(1) == d_model && out_w.size(1) == d_inner &&
                  conv.size(2) == K - 1 && norm_w.size(0) == d_inner,
              "mamba2_step: inconsistent shapes");
  auto y = torch::empty({batch, out_w.size(0)}, u.options());
  auto new_conv = torch::empty_like(conv), new_ssm = torch::empty_like(ssm);
  std::vector<float> proj(rows), xBC(conv_dim), gated(d_inner);
  const int64_t heads_per_group = H / ngroups;
  for (int64_t b = 0; b < batch; ++b) {
    matvec(proj.data(), in_w.data_ptr<float>(), u.data_ptr<float>() + b * d_model, rows, d_model);
    const float *z = proj.data(), *dt_raw = proj.data() + d_inner + conv_dim;
    conv_step(xBC.data(), new_conv.data_ptr<float>() + b * conv_dim * (K - 1),
              conv.data_ptr<float>() + b * conv_dim * (K - 1), proj.data() + d_inner, conv_w.data_ptr<float>(),
              conv_b.data_ptr<float>(), conv_dim, K);
    const float* x = xBC.data();
    const float* s_old = ssm.data_ptr<float>() + b * H * P * N;
    float* s_new = new_ssm.data_ptr<float>() + b * H * P * N;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / heads_per_group;
      const float *Bv = xBC.data() + d_inner + g * N, *Cv = xBC.data() + d_inner + ngroups * N + g * N;
      const float dt = softplus(dt_raw[h] + dt_bias.data_ptr<float>()[h]);
      const float dA = std::exp(-dt * std::exp(A_log.data_ptr<float>()[h])), Dh = D.data_ptr<float>()[h];
      for (int64_t p = 0; p < P; ++p) {
        const float xv = x[h * P + p], dx = dt * xv;
        const int64_t off = (h * P + p) * N;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          const float s = dA * s_old[off + n] + dx * Bv[n];
          s_new[off + n] = s;
          acc += s * Cv[n];
        }
        gated[h * P + p] = (acc + Dh * xv) * silu(z[h * P + p]);
      }
    }
    float ms = 0.f;  // GatedRMSNorm: rmsnorm(y * silu(z)) * weight
    for (int64_t i = 0; i < d_inner; ++i) ms += gated[i] * gated[i];
    const float inv = 1.f / std::sqrt(ms / float(d_inner) + float(eps));
    for (int64_t i = 0; i < d_inner; ++i) gated[i] *= inv * norm_w.data_ptr<float>()[i];
    matvec(y.data_ptr<float>() + b * out_w.size(0), out_w.data_ptr<float>(), gated.data(), out_w.size(0), d_inner);
  }
  return {y, new_conv, new_ssm};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("mamba_step", &mamba_step, "Fused CPU step of the Mamba mixer (float32, inference)");
  m.def("mamba2_step", &mamba2_step, "Fused CPU step of the Mamba-2 mixer (float32, inference)");
}
