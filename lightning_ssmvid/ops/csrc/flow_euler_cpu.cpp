// Fused CPU Euler sampler of the flow head (heads/flow.py): all `steps` Euler steps of dx/dt = v(x, t) for each row,
// with the AdaLN MLP's per-step modulations computed ahead in PyTorch. At batch 1 a frame's sampling is ~30 small
// PyTorch ops per step, each dominated by dispatch overhead; here it is one call. Float32, inference only. Shapes:
//   x0: (N, L) start noise (temperature applied)      w_in: (W, L)  b_in: (W), or per row (N, W)
//   w1, w2: (depth, W, W)  b1, b2: (depth, W)         block_mod: (steps, depth, N, 3W)  (shift | scale | gate)
//   w_out: (L, W)  b_out: (L)                         out_mod: (steps, N, 2W)           (shift | scale)
//   copy: (N, L), or empty    -> x1: (N, L) = x0 + sum_i v(x_i, t_i) / steps, where v is the MLP's output, or
//   with a copy (x-prediction) v = (copy + output - x_i) / (1 - t_i)
// The LayerNorms have no affine parameters and eps 1e-5 (nn.LayerNorm's default), as in the PyTorch head.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

namespace {

constexpr float kEps = 1e-5f;

// y = W x + b for a row-major (rows, cols) W
inline void matvec(float* __restrict__ y, const float* __restrict__ W, const float* __restrict__ b,
                   const float* __restrict__ x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* w = W + r * cols;
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < cols; ++c) acc += w[c] * x[c];
    y[r] = acc + b[r];
  }
}

// out = LayerNorm(x) * (1 + scale) + shift
inline void modulated_norm(float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ shift,
                           const float* __restrict__ scale, int64_t W) {
  float mean = 0.f;
  for (int64_t i = 0; i < W; ++i) mean += x[i];
  mean /= float(W);
  float var = 0.f;
  for (int64_t i = 0; i < W; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.f / std::sqrt(var / float(W) + kEps);
#pragma omp simd
  for (int64_t i = 0; i < W; ++i) out[i] = (x[i] - mean) * inv * (1.f + scale[i]) + shift[i];
}

inline float silu(float v) { return v / (1.f + std::exp(-v)); }

}  // namespace

torch::Tensor flow_euler(torch::Tensor x0, torch::Tensor w_in, torch::Tensor b_in, torch::Tensor w1,
                         torch::Tensor b1, torch::Tensor w2, torch::Tensor b2, torch::Tensor block_mod,
                         torch::Tensor w_out, torch::Tensor b_out, torch::Tensor out_mod, torch::Tensor copy) {
  for (const auto& t : {x0, w_in, b_in, w1, b1, w2, b2, block_mod, w_out, b_out, out_mod, copy}) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
                "flow_euler: every input must be a contiguous float32 CPU tensor");
  }
  const int64_t N = x0.size(0), L = x0.size(1), W = w_in.size(0), depth = w1.size(0), steps = out_mod.size(0);
  TORCH_CHECK(x0.dim() == 2 && w_in.dim() == 2 && w_in.size(1) == L && (b_in.numel() == W || b_in.numel() == N * W) &&
              w1.dim() == 3 &&
              w1.size(1) == W && w1.size(2) == W && w2.sizes() == w1.sizes() && b1.dim() == 2 && b1.size(0) == depth &&
              b1.size(1) == W && b2.sizes() == b1.sizes() && w_out.dim() == 2 && w_out.size(0) == L &&
              w_out.size(1) == W && b_out.numel() == L && block_mod.dim() == 4 && out_mod.dim() == 3,
              "flow_euler: weight shapes do not match (x0 (N, L), w_in (W, L), w1/w2 (depth, W, W), w_out (L, W))");
  TORCH_CHECK(block_mod.size(0) == steps && block_mod.size(1) == depth && block_mod.size(2) == N &&
              block_mod.size(3) == 3 * W && out_mod.size(1) == N && out_mod.size(2) == 2 * W,
              "flow_euler: modulation shapes do not match the weights");
  const bool skip = copy.numel() > 0;  // copy_skip: the MLP gives x1_hat - copy, not the velocity
  TORCH_CHECK(!skip || copy.sizes() == x0.sizes(), "flow_euler: copy must be (N, L) like x0, or empty");
  const int64_t bias_stride = b_in.numel() == W ? 0 : W;  // input_skip: the first layer's bias differs per row
  auto x1 = x0.clone();
  float* xs = x1.data_ptr<float>();
  const float *Win = w_in.data_ptr<float>(), *Bin = b_in.data_ptr<float>(), *W1 = w1.data_ptr<float>(),
              *B1 = b1.data_ptr<float>(), *W2 = w2.data_ptr<float>(), *B2 = b2.data_ptr<float>(),
              *Wout = w_out.data_ptr<float>(), *Bout = b_out.data_ptr<float>(), *BM = block_mod.data_ptr<float>(),
              *OM = out_mod.data_ptr<float>(), *C = skip ? copy.data_ptr<float>() : nullptr;
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> h(W), normed(W), hidden(W), mlp(W), v(L);
    for (int64_t n = begin; n < end; ++n) {
      float* x = xs + n * L;
      for (int64_t i = 0; i < steps; ++i) {
        matvec(h.data(), Win, Bin + n * bias_stride, x, W, L);
        for (int64_t k = 0; k < depth; ++k) {
          const float* mod = BM + ((i * depth + k) * N + n) * 3 * W;  // shift | scale | gate
          modulated_norm(normed.data(), h.data(), mod, mod + W, W);
          matvec(hidden.data(), W1 + k * W * W, B1 + k * W, normed.data(), W, W);
          for (int64_t j = 0; j < W; ++j) hidden[j] = silu(hidden[j]);
          matvec(mlp.data(), W2 + k * W * W, B2 + k * W, hidden.data(), W, W);
          const float* gate = mod + 2 * W;
#pragma omp simd
          for (int64_t j = 0; j < W; ++j) h[j] += gate[j] * mlp[j];
        }
        const float* mod = OM + (i * N + n) * 2 * W;  // shift | scale
        modulated_norm(normed.data(), h.data(), mod, mod + W, W);
        matvec(v.data(), Wout, Bout, normed.data(), L, W);
        if (skip) {  // v = (copy + out - x) / (1 - t_i), times dt = 1 / steps: over (steps - i)
          const float* c = C + n * L;
#pragma omp simd
          for (int64_t j = 0; j < L; ++j) x[j] += (c[j] + v[j] - x[j]) / float(steps - i);
        } else {
#pragma omp simd
          for (int64_t j = 0; j < L; ++j) x[j] += v[j] / float(steps);  // as the PyTorch head: x + v / steps
        }
      }
    }
  });
  return x1;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("flow_euler", &flow_euler, "Euler sampling of the flow head's AdaLN MLP (CPU, float32)");
}
