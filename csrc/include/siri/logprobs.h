// Selective log-softmax over the vocabulary, the math shared by CPU and CUDA kernels.
//
// For row i with logits x (length V) and temperature T, with m_i = max_j x_ij:
//   log_norm_i = log sum_j exp((x_ij - m_i) / T)          (online max and sum-exp)
//   logp_i     = (x_i[target_i] - m_i) / T - log_norm_i
//   entropy_i  = -sum_j softmax(x_i / T)_j log softmax(x_i / T)_j   (optional)
// and the gradient of any loss L(logp) with respect to the logits:
//   dL/dx_ij = g_i / T * (1[j == target_i] - softmax(x_i / T)_j),   g_i = dL/dlogp_i
// The log-softmax is never materialised; the backward recomputes softmax from the two
// floats per row (m_i, log_norm_i) the forward saves. Differences are taken in raw logit
// units before scaling, so logits as large as 1e4 lose no precision to cancellation.
#pragma once

#include "siri/numeric.h"
#include "siri/vector_split.h"

namespace siri {

// Row r of a [rows, V] view whose rows may be strided in two levels, so a [B, T, V] tensor
// sliced as logits[:, :-1] is read in place: offset(r) = (r / inner) * outer_stride +
// (r % inner) * inner_stride. For a 2-D tensor: inner = rows, outer_stride = 0.
struct RowLayout {
  int64_t inner;
  int64_t outer_stride;
  int64_t inner_stride;

  SIRI_HOST_DEVICE int64_t offset(int64_t row) const {
    return (row / inner) * outer_stride + (row % inner) * inner_stride;
  }
};

template <typename T>
struct LogprobParams {
  const T* logits;           // rows x V, laid out by `layout`; last dim contiguous
  RowLayout layout;
  int64_t rows;
  int64_t vocab;
  const int64_t* targets;    // [rows]
  const bool* mask;          // [rows] or nullptr; masked-out rows are skipped (outputs 0)
  acc_t<T> inv_temperature;
  acc_t<T>* logp;            // [rows]
  acc_t<T>* softmax_stats;   // [rows, 2]: (max logit m_i, log_norm_i)
  acc_t<T>* entropy;         // [rows] or nullptr
};

template <typename T>
struct LogitsGradParams {
  const T* logits;           // as in LogprobParams
  RowLayout layout;
  T* grad;                   // may alias logits (in-place backward)
  RowLayout grad_layout;
  int64_t rows;
  int64_t vocab;
  const int64_t* targets;    // [rows]
  const acc_t<T>* softmax_stats;  // [rows, 2], from the forward
  const acc_t<T>* row_scale; // [rows], g_i = dL/dlogp_i; 0 means the row's gradient is 0
  acc_t<T> inv_temperature;
};

// Softmax arguments below this (relative to the max) contribute nothing in fp32/fp64
// sums; clamping keeps 0 * (-inf) out of the entropy term.
template <typename A> SIRI_HOST_DEVICE A min_log_weight() { return A(-745); }
template <> SIRI_HOST_DEVICE float min_log_weight<float>() { return -104.0f; }

// A log-weight d = (x - max) / T <= 0 raised to min_log_weight: exp(d) is 0 (or a denormal)
// below it, so e^d * d is unchanged, but d * count can no longer overflow to -inf.
template <typename A> SIRI_HOST_DEVICE A clamp_log_weight(A d) { return d > min_log_weight<A>() ? d : min_log_weight<A>(); }

// load_acc as a functor, for the row traversals of siri/vector_split.h.
struct AccLoad {
  template <typename T>
  SIRI_HOST_DEVICE acc_t<T> operator()(const T* row, int64_t i) const { return load_acc(row, i); }
};

// Running state of part of a row: max raw logit, sum of exp(d) and sum of exp(d) * d with
// d = (x - max) / T. The last gives the entropy; -inf logits add nothing to either sum.
template <typename A>
struct LogitsSoftmaxState {
  A max;
  A sum;
  A weighted;

  SIRI_HOST_DEVICE static LogitsSoftmaxState empty() { return {-INFINITY, A(0), A(0)}; }

  // Merge another partial state (of disjoint elements) into this one. kEntropy = false leaves
  // `weighted` meaningless (the GPU forward when no entropy is asked for).
  template <bool kEntropy = true>
  SIRI_HOST_DEVICE void merge(const LogitsSoftmaxState& o, A inv_temp) {
    if (o.sum == A(0)) return;
    if (sum == A(0)) { *this = o; return; }
    const A m = max > o.max ? max : o.max;
    const A da = (max - m) * inv_temp, db = (o.max - m) * inv_temp;  // both <= 0
    const A ea = exp_approx(da), eb = exp_approx(db);
    // The log-weights are clamped like add()'s: for a max near -FLT_MAX, da * sum overflows
    // to -inf while ea is 0, and 0 * -inf would make the entropy NaN.
    if constexpr (kEntropy) {
      weighted = ea * (weighted + clamp_log_weight(da) * sum) + eb * (o.weighted + clamp_log_weight(db) * o.sum);
    }
    sum = ea * sum + eb * o.sum;
    max = m;
  }

  // Add one raw logit x with a single exp in the common case (no new max); used by the
  // GPU kernels, where exp throughput matters. kEntropy = false skips the entropy sum.
  template <bool kEntropy = true>
  SIRI_HOST_DEVICE void add(A x, A inv_temp) {
    if (x == -INFINITY) return;
    if (x > max) {
      raise_max<kEntropy>(x, inv_temp);
      sum += A(1);  // x itself: e^0, and 0 in `weighted`
    } else {
      add_below_max<kEntropy>(x, inv_temp);
    }
  }

  // Add N raw logits (a 16-byte vector on the GPU) with one max update for all of them, so
  // the per-element work is the exp and the sums, without add()'s branches. Equal to N add()
  // calls up to rounding; a NaN still makes the state NaN.
  template <bool kEntropy = true, int N>
  SIRI_HOST_DEVICE void add_run(const A (&x)[N], A inv_temp) {
    A run_max = x[0];
    SIRI_UNROLL
    for (int k = 1; k < N; ++k) run_max = fmax(run_max, x[k]);  // one instruction; NaN is caught below
    if (run_max > max) raise_max<kEntropy>(run_max, inv_temp);
    if (max == -INFINITY) {  // nothing but -inf and NaN so far: (x - max) would be NaN for -inf
      for (int k = 0; k < N; ++k) {
        if (x[k] != x[k]) sum = weighted = x[k];
      }
      return;
    }
    SIRI_UNROLL
    for (int k = 0; k < N; ++k) add_below_max<kEntropy>(x[k], inv_temp);
  }

  // Rescale the sums to a new maximum m > max.
  template <bool kEntropy>
  SIRI_HOST_DEVICE void raise_max(A m, A inv_temp) {
    const A delta = (max - m) * inv_temp;  // < 0; -inf on the first element
    const A scale = sum == A(0) ? A(0) : exp_approx_nonpositive(delta);
    if constexpr (kEntropy) weighted = sum == A(0) ? A(0) : scale * (weighted + clamp_log_weight(delta) * sum);
    sum = scale * sum;
    max = m;
  }

  // Add x <= max, or NaN; not -inf while max is -inf ((x - max) would be NaN).
  template <bool kEntropy>
  SIRI_HOST_DEVICE void add_below_max(A x, A inv_temp) {
    const A d = (x - max) * inv_temp;
    const A e = exp_approx_nonpositive(d);
    sum += e;
    if constexpr (kEntropy) weighted += e * clamp_log_weight(d);
  }

  SIRI_HOST_DEVICE A log_norm() const { return log(sum); }
  SIRI_HOST_DEVICE A entropy() const { return log(sum) - weighted / sum; }
};

// log softmax(x / T) at logit x, from the saved (max, log_norm) of its row.
template <typename A>
SIRI_HOST_DEVICE A log_softmax_at(A x, A row_max, A log_norm, A inv_temp) {
  return (x - row_max) * inv_temp - log_norm;
}

// Writes row `row`'s outputs from its completed softmax state (x: the row's logits).
template <typename T>
SIRI_HOST_DEVICE void write_row_outputs(const LogprobParams<T>& p, int64_t row, const T* x,
                                        const LogitsSoftmaxState<acc_t<T>>& state) {
  const acc_t<T> log_norm = state.log_norm();
  p.softmax_stats[2 * row] = state.max;
  p.softmax_stats[2 * row + 1] = log_norm;
  // A target outside the vocabulary (possible only with the op's check_targets=False) gives
  // NaN and is never used as an index.
  const int64_t target = p.targets[row];
  p.logp[row] = target >= 0 && target < p.vocab
                    ? log_softmax_at(load_acc(x, target), state.max, log_norm, p.inv_temperature)
                    : acc_t<T>(NAN);
  if (p.entropy) p.entropy[row] = state.entropy();
}

// A masked-out row: every output is 0 and neither logits nor target are read.
template <typename T>
SIRI_HOST_DEVICE void write_skipped_row(const LogprobParams<T>& p, int64_t row) {
  p.logp[row] = 0;
  p.softmax_stats[2 * row] = 0;
  p.softmax_stats[2 * row + 1] = 0;
  if (p.entropy) p.entropy[row] = 0;
}

template <typename T>
SIRI_HOST_DEVICE bool row_is_skipped(const LogprobParams<T>& p, int64_t row) {
  return p.mask != nullptr && !p.mask[row];
}

}  // namespace siri
