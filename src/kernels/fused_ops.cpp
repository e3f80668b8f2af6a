#include "deepseek_train/kernels/fused_ops.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "deepseek_train/core/error.h"
#include "deepseek_train/kernels/cpu_gemm.h"
#include "kernels/cpu_elementwise.h"

namespace dst {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Function;
using torch::autograd::variable_list;

float* data(const at::Tensor& t) { return t.data_ptr<float>(); }

// Rows of a [..., cols] tensor: the product of the leading sizes (right for cols == 0 too).
int64_t leading_rows(const at::Tensor& t) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return rows;
}

// Rows of the causal score matrix computed together: the scores of a block of 64 queries cover
// the keys up to the block's end, so about half of the full seq x seq product is skipped.
constexpr int64_t kAttentionBlock = 64;

// ---------------------------------------------------------------------------------------------
// fp32 values of a float or bfloat16 tensor, contiguous (a widened copy for bf16).
at::Tensor fp32_contiguous(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat ? t.contiguous() : t.to(at::kFloat).contiguous();
}

// What a Function saves for its backward: the operand as given when it is narrower than fp32 (the
// backward widens it again), else its fp32 contiguous values.
at::Tensor saved_operand(const at::Tensor& given, const at::Tensor& fp32) {
  return given.scalar_type() == at::kFloat ? fp32 : given;
}

// fp32 GEMMs whatever the operands' dtype (float or bfloat16): results in the operands' dtype.
struct LinearFunction : Function<LinearFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight) {
    const at::Tensor input = fp32_contiguous(x), w = fp32_contiguous(weight);
    const int64_t in = w.size(1), out = w.size(0), rows = leading_rows(input);
    std::vector<int64_t> sizes = x.sizes().vec();
    sizes.back() = out;
    at::Tensor y = at::empty(sizes, input.options());
    kernels::sgemm(false, true, rows, out, in, 1.0f, data(input), in, data(w), in, 0.0f, data(y),
                   out);
    // The operands as given (bf16 stays bf16 in memory until the backward widens it again).
    ctx->save_for_backward({x, weight});
    return y.to(x.scalar_type());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor input = fp32_contiguous(saved[0]), w = fp32_contiguous(saved[1]);
    const at::Tensor dy = fp32_contiguous(grads[0]);
    const int64_t in = w.size(1), out = w.size(0), rows = leading_rows(input);
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      dx = at::empty(input.sizes(), input.options());
      kernels::sgemm(false, false, rows, in, out, 1.0f, data(dy), out, data(w), in, 0.0f, data(dx),
                     in);
      dx = dx.to(saved[0].scalar_type());
    }
    if (ctx->needs_input_grad(1)) {
      dw = at::empty(w.sizes(), w.options());
      kernels::sgemm(true, false, out, in, rows, 1.0f, data(dy), out, data(input), in, 0.0f,
                     data(dw), in);
      dw = dw.to(saved[1].scalar_type());
    }
    return {dx, dw};
  }
};

// ---------------------------------------------------------------------------------------------
struct RmsNormFunction : Function<RmsNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    const at::Tensor input = fp32_contiguous(x), w = fp32_contiguous(weight);
    const int64_t dim = input.size(-1), rows = leading_rows(input);
    at::Tensor y = at::empty_like(input);
    at::Tensor rstd = at::empty({rows}, input.options());
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      kernels::rms_norm_forward(data(input) + begin * dim, data(w), data(y) + begin * dim,
                                data(rstd) + begin, end - begin, dim, static_cast<float>(eps));
    });
    ctx->save_for_backward({saved_operand(x, input), saved_operand(weight, w), rstd});
    return y.to(x.scalar_type());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor input = fp32_contiguous(saved[0]), w = fp32_contiguous(saved[1]);
    const at::Tensor& rstd = saved[2];
    const at::Tensor dy = fp32_contiguous(grads[0]);
    const int64_t dim = input.size(-1), rows = leading_rows(input);
    at::Tensor dx = ctx->needs_input_grad(0) ? at::empty_like(input) : at::Tensor();
    at::Tensor dw;
    // Weight gradient: one partial sum per thread, added in thread order (deterministic for a
    // given thread count).
    at::Tensor partial;
    if (ctx->needs_input_grad(1)) partial = at::zeros({at::get_num_threads(), dim}, w.options());
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      float* dw_accum = partial.defined() ? data(partial) + at::get_thread_num() * dim : nullptr;
      kernels::rms_norm_backward(
          data(dy) + begin * dim, data(input) + begin * dim, data(w), data(rstd) + begin,
          dx.defined() ? data(dx) + begin * dim : nullptr, dw_accum, end - begin, dim);
    });
    if (partial.defined()) dw = partial.sum(0).to(saved[1].scalar_type());
    if (dx.defined()) dx = dx.to(saved[0].scalar_type());
    return {dx, dw, at::Tensor()};
  }
};

// ---------------------------------------------------------------------------------------------
constexpr int64_t kElementGrain = 1 << 15;

struct SwigluFunction : Function<SwigluFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    const at::Tensor g = fp32_contiguous(gate), u = fp32_contiguous(up);
    at::Tensor out = at::empty_like(g);
    at::parallel_for(0, g.numel(), kElementGrain, [&](int64_t begin, int64_t end) {
      kernels::swiglu_forward(data(g) + begin, data(u) + begin, data(out) + begin, end - begin);
    });
    ctx->save_for_backward({saved_operand(gate, g), saved_operand(up, u)});
    return out.to(gate.scalar_type());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor g = fp32_contiguous(saved[0]), u = fp32_contiguous(saved[1]);
    const at::Tensor dout = fp32_contiguous(grads[0]);
    at::Tensor dgate = ctx->needs_input_grad(0) ? at::empty_like(g) : at::Tensor();
    at::Tensor dup = ctx->needs_input_grad(1) ? at::empty_like(u) : at::Tensor();
    at::parallel_for(0, g.numel(), kElementGrain, [&](int64_t begin, int64_t end) {
      kernels::swiglu_backward(data(dout) + begin, data(g) + begin, data(u) + begin,
                               dgate.defined() ? data(dgate) + begin : nullptr,
                               dup.defined() ? data(dup) + begin : nullptr, end - begin);
    });
    if (dgate.defined()) dgate = dgate.to(saved[0].scalar_type());
    if (dup.defined()) dup = dup.to(saved[1].scalar_type());
    return {dgate, dup};
  }
};

// ---------------------------------------------------------------------------------------------
// The rotary cosine and sine tables [seq, head_dim/2] of positions 0..seq-1.
std::pair<at::Tensor, at::Tensor> rotary_tables(int64_t seq, int64_t head_dim, double theta) {
  const at::Tensor angles = rotary_angles(0, seq, head_dim, theta, at::kCPU);
  return {angles.cos().contiguous(), angles.sin().contiguous()};
}

struct AttentionShape {
  int64_t batch, seq, heads, kv_heads, head_dim;
  int64_t q_stride() const { return heads * head_dim; }  // floats between positions of q/out
  int64_t kv_stride() const { return kv_heads * head_dim; }
  int64_t group() const { return heads / kv_heads; }
};

struct CausalAttentionFunction : Function<CausalAttentionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, int64_t heads, int64_t kv_heads, double theta,
                            int64_t max_kept_probability_bytes) {
    DST_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && heads > 0 && kv_heads > 0 &&
                  heads % kv_heads == 0 && q.size(2) % heads == 0,
              InternalError, "fused_causal_attention: bad shapes");
    const AttentionShape s{q.size(0), q.size(1), heads, kv_heads, q.size(2) / heads};
    DST_CHECK(k.size(0) == s.batch && k.size(1) == s.seq && k.size(2) == s.kv_stride() &&
                  v.sizes() == k.sizes() && s.head_dim % 2 == 0,
              InternalError,
              "fused_causal_attention: q " << q.sizes() << ", k " << k.sizes() << ", v "
                                           << v.sizes() << " with " << heads << " heads, "
                                           << kv_heads << " kv heads");
    // Named tensors, not a structured binding: lambdas below capture them.
    const std::pair<at::Tensor, at::Tensor> tables = rotary_tables(s.seq, s.head_dim, theta);
    const at::Tensor& cos = tables.first;
    const at::Tensor& sin = tables.second;
    // Fresh fp32 copies: the rotary embedding is applied to them in place.
    const auto fp32_copy = [](const at::Tensor& t) {
      return t.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true, at::MemoryFormat::Contiguous);
    };
    at::Tensor qr = fp32_copy(q), kr = fp32_copy(k);
    const at::Tensor vc = fp32_contiguous(v);
    at::parallel_for(0, s.batch * (s.heads + s.kv_heads), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / (s.heads + s.kv_heads), h = i % (s.heads + s.kv_heads);
        float* rows = h < s.heads
                          ? data(qr) + b * s.seq * s.q_stride() + h * s.head_dim
                          : data(kr) + b * s.seq * s.kv_stride() + (h - s.heads) * s.head_dim;
        kernels::rotary_rows(rows, h < s.heads ? s.q_stride() : s.kv_stride(), data(cos), data(sin),
                             s.seq, s.head_dim, false);
      }
    });
    // The backward needs the probabilities. While they are small (max_kept_probability_bytes)
    // they are kept; above that only the log-sum-exp of every score row is, and the backward
    // recomputes them (one more Q K^T product): activations then grow with seq, not seq^2, as in
    // FlashAttention.
    const bool keep =
        attention_keeps_probabilities(s.batch, s.heads, s.seq, max_kept_probability_bytes);
    at::Tensor lse = at::empty({s.batch, s.heads, s.seq}, qr.options());
    at::Tensor probs;  // undefined unless kept
    if (keep) probs = at::empty({s.batch, s.heads, s.seq, s.seq}, qr.options());
    at::Tensor out = at::empty({s.batch, s.seq, s.q_stride()}, qr.options());
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
      // The probabilities of one block of query rows when they are not kept.
      std::unique_ptr<float[]> block(keep ? nullptr : new float[kAttentionBlock * s.seq]);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / s.heads, h = i % s.heads, g = h / s.group();
        const float* q_h = data(qr) + b * s.seq * s.q_stride() + h * s.head_dim;
        const float* k_g = data(kr) + b * s.seq * s.kv_stride() + g * s.head_dim;
        const float* v_g = data(vc) + b * s.seq * s.kv_stride() + g * s.head_dim;
        float* lse_h = data(lse) + i * s.seq;
        float* o_h = data(out) + b * s.seq * s.q_stride() + h * s.head_dim;
        for (int64_t i0 = 0; i0 < s.seq; i0 += kAttentionBlock) {
          const int64_t i1 = std::min(i0 + kAttentionBlock, s.seq), m = i1 - i0;
          float* p = keep ? data(probs) + (i * s.seq + i0) * s.seq : block.get();
          kernels::sgemm(false, true, m, i1, s.head_dim, scale, q_h + i0 * s.q_stride(),
                         s.q_stride(), k_g, s.kv_stride(), 0.0f, p, s.seq);
          for (int64_t r = i0; r < i1; ++r)
            lse_h[r] = kernels::masked_softmax_row(p + (r - i0) * s.seq, r + 1, i1);
          kernels::sgemm(false, false, m, s.head_dim, i1, 1.0f, p, s.seq, v_g, s.kv_stride(), 0.0f,
                         o_h + i0 * s.q_stride(), s.q_stride());
        }
      }
    });
    // Narrower inputs keep narrow copies of the rotated q and k (and v as given) for the backward.
    const at::ScalarType type = q.scalar_type();
    ctx->save_for_backward({type == at::kFloat ? qr : qr.to(type),
                            type == at::kFloat ? kr : kr.to(type), saved_operand(v, vc), lse, cos,
                            sin, probs});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["kv_heads"] = kv_heads;
    return out.to(type);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor qr = fp32_contiguous(saved[0]), kr = fp32_contiguous(saved[1]);
    const at::Tensor vc = fp32_contiguous(saved[2]), &lse = saved[3];
    const at::Tensor &cos = saved[4], &sin = saved[5], &probs = saved[6];
    const bool kept = probs.defined();
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const AttentionShape s{qr.size(0), qr.size(1), heads, ctx->saved_data["kv_heads"].toInt(),
                           qr.size(2) / heads};
    const at::Tensor dout = fp32_contiguous(grads[0]);
    at::Tensor dq = at::empty_like(qr), dk = at::empty_like(kr), dv = at::empty_like(vc);
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    at::parallel_for(0, s.batch * s.kv_heads, 1, [&](int64_t begin, int64_t end) {
      // Probabilities (unless kept) and score gradients of one head (only their lower-triangular
      // blocks are written): transient, one head per thread at a time.
      std::unique_ptr<float[]> probabilities(kept ? nullptr : new float[s.seq * s.seq]);
      std::unique_ptr<float[]> ds(new float[s.seq * s.seq]);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / s.kv_heads, g = i % s.kv_heads;
        const float* k_g = data(kr) + b * s.seq * s.kv_stride() + g * s.head_dim;
        const float* v_g = data(vc) + b * s.seq * s.kv_stride() + g * s.head_dim;
        float* dk_g = data(dk) + b * s.seq * s.kv_stride() + g * s.head_dim;
        float* dv_g = data(dv) + b * s.seq * s.kv_stride() + g * s.head_dim;
        for (int64_t member = 0; member < s.group(); ++member) {
          const int64_t h = g * s.group() + member;
          const float* q_h = data(qr) + b * s.seq * s.q_stride() + h * s.head_dim;
          float* p = kept ? data(probs) + (b * s.heads + h) * s.seq * s.seq : probabilities.get();
          const float* lse_h = data(lse) + (b * s.heads + h) * s.seq;
          const float* do_h = data(dout) + b * s.seq * s.q_stride() + h * s.head_dim;
          float* dq_h = data(dq) + b * s.seq * s.q_stride() + h * s.head_dim;
          for (int64_t i0 = 0; i0 < s.seq; i0 += kAttentionBlock) {
            const int64_t i1 = std::min(i0 + kAttentionBlock, s.seq), m = i1 - i0;
            if (!kept) {  // P = exp(scale Q K^T - lse), as the forward computed it
              kernels::sgemm(false, true, m, i1, s.head_dim, scale, q_h + i0 * s.q_stride(),
                             s.q_stride(), k_g, s.kv_stride(), 0.0f, p + i0 * s.seq, s.seq);
              for (int64_t r = i0; r < i1; ++r)
                kernels::softmax_from_lse_row(p + r * s.seq, lse_h[r], r + 1, i1);
            }
            // dP = dO V^T, then dS = P * (dP - rowsum(P * dP)), then dQ = scale dS K.
            kernels::sgemm(false, true, m, i1, s.head_dim, 1.0f, do_h + i0 * s.q_stride(),
                           s.q_stride(), v_g, s.kv_stride(), 0.0f, ds.get() + i0 * s.seq, s.seq);
            for (int64_t r = i0; r < i1; ++r)
              kernels::masked_softmax_backward_row(p + r * s.seq, ds.get() + r * s.seq, r + 1, i1);
            kernels::sgemm(false, false, m, s.head_dim, i1, scale, ds.get() + i0 * s.seq, s.seq,
                           k_g, s.kv_stride(), 0.0f, dq_h + i0 * s.q_stride(), s.q_stride());
          }
          // Per key block j: dK_j (+)= scale dS[j0:, j]^T Q[j0:], dV_j (+)= P[j0:, j]^T dO[j0:]
          // (rows above the block are masked out); the group's heads add up.
          const float beta = member == 0 ? 0.0f : 1.0f;
          for (int64_t j0 = 0; j0 < s.seq; j0 += kAttentionBlock) {
            const int64_t j1 = std::min(j0 + kAttentionBlock, s.seq), rows = s.seq - j0;
            kernels::sgemm(true, false, j1 - j0, s.head_dim, rows, scale,
                           ds.get() + j0 * s.seq + j0, s.seq, q_h + j0 * s.q_stride(), s.q_stride(),
                           beta, dk_g + j0 * s.kv_stride(), s.kv_stride());
            kernels::sgemm(true, false, j1 - j0, s.head_dim, rows, 1.0f, p + j0 * s.seq + j0, s.seq,
                           do_h + j0 * s.q_stride(), s.q_stride(), beta, dv_g + j0 * s.kv_stride(),
                           s.kv_stride());
          }
          kernels::rotary_rows(dq_h, s.q_stride(), data(cos), data(sin), s.seq, s.head_dim, true);
        }
        kernels::rotary_rows(dk_g, s.kv_stride(), data(cos), data(sin), s.seq, s.head_dim, true);
      }
    });
    const at::ScalarType type = saved[0].scalar_type();
    return {dq.to(type),  dk.to(type), dv.to(saved[2].scalar_type()), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

// ---------------------------------------------------------------------------------------------
struct CrossEntropySumFunction : Function<CrossEntropySumFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& labels, int64_t ignore_index) {
    const at::Tensor x = fp32_contiguous(logits);
    const at::Tensor y = labels.to(at::kCPU, at::kLong).contiguous();
    const int64_t vocab = x.size(-1), rows = leading_rows(x);
    DST_CHECK(y.numel() == rows, InternalError,
              "fused_cross_entropy_sum: " << rows << " rows of logits, " << y.numel() << " labels");
    const int64_t* label = y.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r)
      DST_CHECK(label[r] == ignore_index || (label[r] >= 0 && label[r] < vocab), DataError,
                "label " << label[r] << " at position " << r << " is outside the vocabulary of "
                         << vocab);
    at::Tensor lse = at::empty({rows}, x.options());
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        data(lse)[r] =
            label[r] == ignore_index ? 0.0f : kernels::log_sum_exp_row(data(x) + r * vocab, vocab);
    });
    // Summed in row order in double: the same result for every thread count.
    double total = 0.0;
    for (int64_t r = 0; r < rows; ++r)
      if (label[r] != ignore_index) total += data(lse)[r] - data(x)[r * vocab + label[r]];
    ctx->save_for_backward({saved_operand(logits, x), y, lse});
    ctx->saved_data["ignore_index"] = ignore_index;
    return at::scalar_tensor(total, x.options());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor x = fp32_contiguous(saved[0]);
    const at::Tensor &y = saved[1], &lse = saved[2];
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const int64_t vocab = x.size(-1), rows = leading_rows(x);
    const float scale = grads[0].item<float>();
    const int64_t* label = y.data_ptr<int64_t>();
    at::Tensor dx = at::empty_like(x);
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float* row = data(dx) + r * vocab;
        if (label[r] == ignore_index)
          std::fill(row, row + vocab, 0.0f);
        else
          kernels::cross_entropy_backward_row(data(x) + r * vocab, data(lse)[r], label[r], scale,
                                              row, vocab);
      }
    });
    return {dx.to(saved[0].scalar_type()), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool fused_ops_apply(const at::Tensor& tensor) {
  return tensor.defined() && tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat;
}

bool cpu_has_bf16_matmul() {
  static const bool has = [] {
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line)) {
      if (line.rfind("flags", 0) != 0) continue;
      return line.find(" avx512_bf16") != std::string::npos ||
             line.find(" amx_bf16") != std::string::npos;
    }
    return false;
  }();
  return has;
}

bool fused_linear_applies(const at::Tensor& x, const at::Tensor& weight) {
  if (fused_ops_apply(x) && fused_ops_apply(weight)) return true;
  const auto bf16_cpu = [](const at::Tensor& t) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kBFloat16;
  };
  return bf16_cpu(x) && bf16_cpu(weight) && !cpu_has_bf16_matmul();
}

at::Tensor fused_linear(const at::Tensor& x, const at::Tensor& weight) {
  DST_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1), InternalError,
            "fused_linear: input " << x.sizes() << " and weight " << weight.sizes());
  return LinearFunction::apply(x, weight);
}

at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  DST_CHECK(weight.dim() == 1 && x.dim() >= 1 && x.size(-1) == weight.size(0), InternalError,
            "fused_rms_norm: input " << x.sizes() << " and weight " << weight.sizes());
  return RmsNormFunction::apply(x, weight, eps);
}

at::Tensor fused_swiglu(const at::Tensor& gate, const at::Tensor& up) {
  DST_CHECK(gate.sizes() == up.sizes(), InternalError,
            "fused_swiglu: gate " << gate.sizes() << " and up " << up.sizes());
  return SwigluFunction::apply(gate, up);
}

at::Tensor fused_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  int64_t heads, int64_t kv_heads, double rope_theta,
                                  int64_t max_kept_probability_bytes) {
  return CausalAttentionFunction::apply(q, k, v, heads, kv_heads, rope_theta,
                                        max_kept_probability_bytes);
}

namespace {
at::Tensor inverse_frequencies(int64_t head_dim, double theta, at::Device device) {
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  return 1.0 / at::pow(theta, at::arange(0, head_dim, 2, opts) / static_cast<double>(head_dim));
}
}  // namespace

at::Tensor rotary_angles(int64_t first_position, int64_t seq, int64_t head_dim, double theta,
                         at::Device device) {
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  return at::outer(at::arange(first_position, first_position + seq, opts),
                   inverse_frequencies(head_dim, theta, device));
}

at::Tensor rotary_angles_at(const at::Tensor& positions, int64_t head_dim, double theta) {
  return positions.unsqueeze(-1) * inverse_frequencies(head_dim, theta, positions.device());
}

at::Tensor fused_cross_entropy_sum(const at::Tensor& logits, const at::Tensor& labels,
                                   int64_t ignore_index) {
  return CrossEntropySumFunction::apply(logits, labels, ignore_index);
}

}  // namespace dst
