// GRPO / DAPO per-token policy loss and its derivative with respect to the token logprob,
// shared by CPU and CUDA. Conventions follow verl's core_algos (clamps, dual clip, k3 KL).
//
//   ratio = exp(clamp(logp - old, -20, 20))
//   pg    = max(-A * ratio, -A * clamp(ratio, 1 - clip_low, 1 + clip_high))
//   if clip_c > 0 and A < 0:  pg = min(pg, -A * clip_c)                      (dual clip)
//   if kl_coef > 0:           pg += kl_coef * clamp(exp(k) - k - 1, -10, 10),
//                             k = clamp(ref - logp, -20, 20)                  (k3 estimator)
// Masked-out tokens give 0. Derivatives follow torch's conventions for clamp (gradient
// passes at the bounds) and max/min (the branch that wins).
// NaN propagates: a NaN logp (NaN logits, or an out-of-range target with check_targets=False),
// old logprob, advantage or ref logprob gives a NaN loss and a NaN derivative for its token, as
// torch.clamp / torch.maximum do, so the trainer's non-finite check sees it. (fmin/fmax return
// the other operand for NaN: a clamp written with them turned NaN into -20, a finite loss and
// a zero gradient.)
#pragma once

#include "siri/common.h"

namespace siri {

enum ClipState : int8_t { kNotClipped = 0, kClippedLow = 1, kClippedHigh = 2, kDualClipped = 3 };

template <typename A>
struct GrpoLossParams {
  const A* logp;           // [n]
  const A* old_logprobs;   // [n]
  const A* advantages;     // [n]
  const bool* mask;        // [n]
  const A* ref_logprobs;   // [n] or nullptr (then kl_coef must be 0)
  int64_t n;
  A clip_low;
  A clip_high;
  A clip_c;                // <= 0: dual clip off
  A kl_coef;
  A* loss;                 // [n] per-token loss (0 where masked)
  A* dloss_dlogp;          // [n]
  int8_t* clip_state;      // [n] ClipState
};

// min(max(x, lo), hi) for x in range or outside it; NaN stays NaN.
template <typename A>
SIRI_HOST_DEVICE A clamp_nan(A x, A lo, A hi) { return x < lo ? lo : x > hi ? hi : x; }

// Whether the gradient passes a clamp to [lo, hi]: x is not outside it (true for NaN, so the
// NaN reaches the derivative instead of being replaced by 0).
template <typename A>
SIRI_HOST_DEVICE bool not_outside(A x, A lo, A hi) { return !(x < lo || x > hi); }

template <typename A>
SIRI_HOST_DEVICE void grpo_token_loss(const GrpoLossParams<A>& p, int64_t i) {
  if (!p.mask[i]) {
    p.loss[i] = 0;
    p.dloss_dlogp[i] = 0;
    p.clip_state[i] = kNotClipped;
    return;
  }
  const A logp = p.logp[i];
  const A adv = p.advantages[i];
  const A log_ratio = logp - p.old_logprobs[i];
  const A ratio = exp(clamp_nan(log_ratio, A(-20), A(20)));
  const A dratio = not_outside(log_ratio, A(-20), A(20)) ? ratio : A(0);  // d ratio / d logp
  const A lo = A(1) - p.clip_low, hi = A(1) + p.clip_high;

  A loss = -adv * ratio;
  A grad = -adv * dratio;
  int8_t state = kNotClipped;
  if ((adv < 0 && ratio < lo) || (adv > 0 && ratio > hi)) {  // the clipped branch wins
    loss = -adv * (ratio < lo ? lo : hi);
    grad = 0;
    state = adv < 0 ? kClippedLow : kClippedHigh;
  }
  if (p.clip_c > 0 && adv < 0 && loss > -adv * p.clip_c) {
    loss = -adv * p.clip_c;
    grad = 0;
    state = kDualClipped;
  }
  if (p.kl_coef > 0) {
    const A k = p.ref_logprobs[i] - logp;
    const A kc = clamp_nan(k, A(-20), A(20));
    const A ek = exp(kc);
    const A k3 = ek - kc - A(1);
    loss += p.kl_coef * clamp_nan(k3, A(-10), A(10));
    if (not_outside(k, A(-20), A(20)) && not_outside(k3, A(-10), A(10))) grad += p.kl_coef * (A(1) - ek);
  }
  p.loss[i] = loss;
  p.dloss_dlogp[i] = grad;
  p.clip_state[i] = state;
}

}  // namespace siri
