// Validation and output allocation for siri::sample_tokens, shared by CPU and CUDA.
#pragma once

#include <array>
#include <tuple>

#include "checks.h"
#include "siri/sampling.h"

namespace siri::bind {

using SampleOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The per-row inputs of sample_tokens, made contiguous (they are small).
struct SampleInputs {
  at::Tensor temperature, top_k, top_p, seeds, positions, lengths, max_lengths, finished, eos_ids;
};

// Checks every argument, allocates the outputs and returns the kernel params. Value checks
// (caps, ranges) are evaluated together, so a CUDA call synchronises once; with
// check_values false they are skipped (shapes, dtypes and devices are always checked). The
// kernels stay memory-safe without them: eos ids are only compared, never used as indices.
inline SampleParams prepare_sample_tokens(const at::Tensor& logits, SampleInputs& in, int64_t pad_id,
                                          bool check_values, SampleOutputs& out) {
  check_dim(logits, "logits", 2);
  TORCH_CHECK_TYPE(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16,
                   "logits must have dtype Float or BFloat16, got ", logits.scalar_type());
  const int64_t batch = logits.size(0), vocab = logits.size(1);
  TORCH_CHECK_VALUE(vocab >= 1 && vocab < kMaxVocab, "logits.shape[1] (the vocabulary) must be in [1, ",
                    kMaxVocab, "), got ", vocab);
  TORCH_CHECK_VALUE(logits.stride(1) == 1 || vocab == 1, "logits must be contiguous along the "
                    "vocabulary (stride(1) == 1; call .contiguous()), got strides ", logits.strides());
  TORCH_CHECK_VALUE(pad_id >= 0 && pad_id < vocab, "pad_id must be in [0, ", vocab, "), got ", pad_id);

  struct Spec { at::Tensor* t; const char* name; at::ScalarType dtype; bool per_row; };
  const std::array<Spec, 9> specs = {{
      {&in.temperature, "temperature", at::kFloat, true}, {&in.top_k, "top_k", at::kInt, true},
      {&in.top_p, "top_p", at::kFloat, true},             {&in.seeds, "seeds", at::kLong, true},
      {&in.positions, "positions", at::kLong, true},      {&in.lengths, "lengths", at::kInt, true},
      {&in.max_lengths, "max_lengths", at::kInt, true},   {&in.finished, "finished", at::kBool, true},
      {&in.eos_ids, "eos_ids", at::kInt, false}}};
  for (const Spec& s : specs) {
    check_same_device(*s.t, s.name, logits, "logits");
    check_dtype(*s.t, s.name, s.dtype);
    check_dim(*s.t, s.name, 1);
    if (s.per_row) {
      TORCH_CHECK_VALUE(s.t->size(0) == batch, s.name, " has ", s.t->size(0), " rows but logits has ",
                        batch, "; every per-row argument must have shape [B] with B = logits.shape[0]");
    }
    *s.t = s.t->contiguous();
  }

  if (check_values) {
    const at::Tensor ok = at::stack({
        (in.max_lengths >= 1).all(), (in.top_k >= 0).all(),
        ((in.top_p > 0) & (in.top_p <= 1)).all(),
        ((in.temperature >= 0) & at::isfinite(in.temperature)).all(),
        ((in.eos_ids >= 0) & (in.eos_ids < vocab)).all()}).cpu();
    const bool* good = ok.data_ptr<bool>();
    TORCH_CHECK_VALUE(good[0], "max_lengths must be >= 1 for every row (a cap of 0 tokens cannot be "
                      "generated), got min ", in.max_lengths.min().item<int>());
    TORCH_CHECK_VALUE(good[1], "top_k must be >= 0 (0 = off), got min ", in.top_k.min().item<int>());
    TORCH_CHECK_VALUE(good[2], "top_p must be in (0, 1] (1 = off) for every row");
    TORCH_CHECK_VALUE(good[3], "temperature must be finite and >= 0 (0 = greedy) for every row");
    TORCH_CHECK_VALUE(good[4], "eos_ids must be token ids in [0, ", vocab, ") (the vocabulary of logits)");
  }

  const at::TensorOptions opts = logits.options();
  out = SampleOutputs(at::empty({batch}, opts.dtype(at::kLong)), at::empty({batch}, opts.dtype(at::kFloat)),
                      at::empty({batch}, opts.dtype(at::kBool)), at::empty({batch}, opts.dtype(at::kInt)),
                      at::empty({batch}, opts.dtype(at::kChar)));
  SampleParams p;
  p.logits = logits.data_ptr();
  p.logits_bf16 = logits.scalar_type() == at::kBFloat16;
  p.row_stride = logits.stride(0);
  p.batch = batch;
  p.vocab = vocab;
  p.temperature = in.temperature.data_ptr<float>();
  p.top_k = in.top_k.data_ptr<int32_t>();
  p.top_p = in.top_p.data_ptr<float>();
  p.seeds = in.seeds.data_ptr<int64_t>();
  p.positions = in.positions.data_ptr<int64_t>();
  p.lengths = in.lengths.data_ptr<int32_t>();
  p.max_lengths = in.max_lengths.data_ptr<int32_t>();
  p.finished = in.finished.data_ptr<bool>();
  p.eos_ids = in.eos_ids.data_ptr<int32_t>();
  p.num_eos = in.eos_ids.size(0);
  p.pad_id = pad_id;
  p.tokens_out = std::get<0>(out).data_ptr<int64_t>();
  p.logprobs_out = std::get<1>(out).data_ptr<float>();
  p.finished_out = std::get<2>(out).data_ptr<bool>();
  p.lengths_out = std::get<3>(out).data_ptr<int32_t>();
  p.finish_reason_out = std::get<4>(out).data_ptr<int8_t>();
  return p;
}

}  // namespace siri::bind
