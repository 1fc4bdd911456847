// Validation and launch of siri::grpo_token_loss, shared by the CPU and CUDA registrations.
#pragma once

#include <tuple>

#include "checks.h"
#include "siri/grpo_loss.h"

namespace siri::bind {

template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> grpo_token_loss_impl(
    const at::Tensor& logp, const at::Tensor& old_logprobs, const at::Tensor& advantages,
    const at::Tensor& mask, const std::optional<at::Tensor>& ref_logprobs, double clip_low, double clip_high,
    double clip_c, double kl_coef, Launch&& launch) {
  TORCH_CHECK_TYPE(logp.scalar_type() == at::kFloat || logp.scalar_type() == at::kDouble,
                   "logp must be float32 or float64, got ", logp.scalar_type());
  const auto check_like_logp = [&](const at::Tensor& t, const char* name, at::ScalarType dtype) {
    check_dtype(t, name, dtype);
    check_same_device(t, name, logp, "logp");
    TORCH_CHECK_VALUE(t.sizes() == logp.sizes(), name, " must have the shape of logp ", logp.sizes(),
                      ", got ", t.sizes());
  };
  check_like_logp(old_logprobs, "old_logprobs", logp.scalar_type());
  check_like_logp(advantages, "advantages", logp.scalar_type());
  check_like_logp(mask, "mask", at::kBool);
  TORCH_CHECK_VALUE(clip_low >= 0 && clip_low < 1, "clip_low must be in [0, 1), got ", clip_low);
  TORCH_CHECK_VALUE(clip_high >= 0 && std::isfinite(clip_high), "clip_high must be finite and >= 0, got ",
                    clip_high);
  TORCH_CHECK_VALUE(clip_c <= 0 || clip_c > 1, "clip_c (dual clip) must be > 1, or <= 0 for off; got ", clip_c);
  TORCH_CHECK_VALUE(kl_coef >= 0 && std::isfinite(kl_coef), "kl_coef must be finite and >= 0, got ", kl_coef);
  at::Tensor ref;
  if (kl_coef > 0) {
    TORCH_CHECK_VALUE(ref_logprobs.has_value(), "kl_coef > 0 needs ref_logprobs");
    check_like_logp(*ref_logprobs, "ref_logprobs", logp.scalar_type());
    ref = ref_logprobs->contiguous();
  }
  const at::Tensor lp = logp.contiguous(), old = old_logprobs.contiguous(), adv = advantages.contiguous(),
                   m = mask.contiguous();
  at::Tensor loss = at::empty_like(lp), dlogp = at::empty_like(lp);
  at::Tensor state = at::empty(lp.sizes(), lp.options().dtype(at::kChar));
  const auto run = [&](auto zero) {
    using A = decltype(zero);
    GrpoLossParams<A> p{lp.data_ptr<A>(), old.data_ptr<A>(), adv.data_ptr<A>(), m.data_ptr<bool>(),
                        ref.defined() ? ref.data_ptr<A>() : nullptr, lp.numel(), static_cast<A>(clip_low),
                        static_cast<A>(clip_high), static_cast<A>(clip_c), static_cast<A>(kl_coef),
                        loss.data_ptr<A>(), dlogp.data_ptr<A>(), state.data_ptr<int8_t>()};
    if (p.n > 0) launch(p);
  };
  if (lp.scalar_type() == at::kDouble) run(0.0); else run(0.0f);
  return {loss, dlogp, state};
}

}  // namespace siri::bind
