// CPU selective log-softmax: parallel over rows; each row is processed in L1-sized chunks
// (load + scale + max, then exp-sum over the same cached chunk), so memory is read once.
#include "cpu/logprobs.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace siri::cpu {
namespace {

constexpr int64_t kChunk = 2048;  // elements: 8 KiB of fp32, stays in L1 between passes

// Rows per parallel task: enough elements that scheduling is not the cost.
int64_t row_grain(int64_t vocab) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(vocab, 1)); }

template <typename T>
LogitsSoftmaxState<acc_t<T>> row_softmax_state(const T* x, int64_t vocab, acc_t<T> inv_temp,
                                               bool with_entropy) {
  using A = acc_t<T>;
  A buf[kChunk];
  LogitsSoftmaxState<A> state = LogitsSoftmaxState<A>::empty();
  for (int64_t begin = 0; begin < vocab; begin += kChunk) {
    const int64_t n = std::min(kChunk, vocab - begin);
    A chunk_max = -INFINITY;
#pragma omp simd reduction(max : chunk_max)
    for (int64_t j = 0; j < n; ++j) {
      buf[j] = load_acc(x, begin + j);
      chunk_max = std::max(chunk_max, buf[j]);
    }
    if (chunk_max == -INFINITY) continue;  // an all -inf chunk adds nothing
    A sum = 0, weighted = 0;
    if (with_entropy) {
#pragma omp simd reduction(+ : sum, weighted)
      for (int64_t j = 0; j < n; ++j) {
        const A d = std::max((buf[j] - chunk_max) * inv_temp, min_log_weight<A>());
        const A e = exp_approx(d);
        sum += e;
        weighted += e * d;
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) sum += exp_approx((buf[j] - chunk_max) * inv_temp);
    }
    state.merge(LogitsSoftmaxState<A>{chunk_max, sum, weighted}, inv_temp);
  }
  return state;
}

template <typename T>
void row_grad(const T* x, T* grad, int64_t vocab, int64_t target, const acc_t<T>* stats,
              acc_t<T> scale, acc_t<T> inv_temp) {
  using A = acc_t<T>;
  const A a = scale * inv_temp;
  if (a == A(0)) {
    for (int64_t j = 0; j < vocab; ++j) store_acc(grad, j, A(0));
    return;
  }
  const A row_max = stats[0], log_norm = stats[1];
  const bool target_in_vocab = target >= 0 && target < vocab;  // else: no target term (unchecked input)
  // Read the target logit first: grad may alias x.
  const A p_target = target_in_vocab ? exp_approx(log_softmax_at(load_acc(x, target), row_max, log_norm, inv_temp))
                                     : A(0);
#pragma omp simd
  for (int64_t j = 0; j < vocab; ++j) {
    store_acc(grad, j, -a * exp_approx(log_softmax_at(load_acc(x, j), row_max, log_norm, inv_temp)));
  }
  if (target_in_vocab) store_acc(grad, target, a * (A(1) - p_target));
}

}  // namespace

template <typename T>
void token_logprobs(const LogprobParams<T>& p) {
  at::parallel_for(0, p.rows, row_grain(p.vocab), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      if (row_is_skipped(p, row)) {
        write_skipped_row(p, row);
        continue;
      }
      const T* x = p.logits + p.layout.offset(row);
      write_row_outputs(p, row, x, row_softmax_state(x, p.vocab, p.inv_temperature, p.entropy != nullptr));
    }
  });
}

template <typename T>
void logits_grad(const LogitsGradParams<T>& p) {
  at::parallel_for(0, p.rows, row_grain(p.vocab), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      row_grad(p.logits + p.layout.offset(row), p.grad + p.grad_layout.offset(row), p.vocab,
               p.targets[row], p.softmax_stats + 2 * row, p.row_scale[row], p.inv_temperature);
    }
  });
}

#define SIRI_INSTANTIATE(T)                                           \
  template void token_logprobs<T>(const LogprobParams<T>&);           \
  template void logits_grad<T>(const LogitsGradParams<T>&);
SIRI_INSTANTIATE(float)
SIRI_INSTANTIATE(double)
SIRI_INSTANTIATE(bf16_t)
#undef SIRI_INSTANTIATE

}  // namespace siri::cpu
