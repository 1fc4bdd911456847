// The schema of every siri op, in one place. Implementations register per backend in
// bindings/<op>.cpp (CPU) and bindings/cuda/<op>_cuda.cpp (CUDA); fake kernels, autograd
// rules and docstrings live in siri/ops/<op>.py.
#include <torch/library.h>

TORCH_LIBRARY(siri, m) {
  m.def("group_advantages(Tensor rewards, int group_size, float eps, bool scale_by_std) -> Tensor");
  // Selective log-softmax -> (logp, softmax_stats [.., 2] = (row max, log normaliser), entropy),
  // and the gradient of a loss of logp with respect to the logits (out of place / in place).
  // check_targets=False skips the target range check, their one device-to-host read; an
  // out-of-range target then gives logp NaN and no gradient term (never an invalid read).
  m.def("token_logprobs(Tensor logits, Tensor targets, Tensor? mask, float temperature, "
        "bool return_entropy, bool check_targets=True) -> (Tensor, Tensor, Tensor)");
  m.def("logits_grad(Tensor logits, Tensor targets, Tensor softmax_stats, Tensor row_scale, float temperature, "
        "bool check_targets=True) -> Tensor");
  m.def("logits_grad_(Tensor(a!) logits, Tensor targets, Tensor softmax_stats, Tensor row_scale, "
        "float temperature, bool check_targets=True) -> ()");
  // Per-token GRPO/DAPO loss, its derivative w.r.t. logp, and the clip state.
  m.def("grpo_token_loss(Tensor logp, Tensor old_logprobs, Tensor advantages, Tensor mask, "
        "Tensor? ref_logprobs, float clip_low, float clip_high, float clip_c, float kl_coef) "
        "-> (Tensor, Tensor, Tensor)");
  // Returns new tensors (nothing is mutated): tokens int64, logprobs fp32, finished bool,
  // lengths int32, finish_reason int8, each [B]. check_values=False skips the per-row value
  // checks, the op's only device-to-host read (for callers that validated them on the host).
  m.def("sample_tokens(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor seeds, "
        "Tensor positions, Tensor lengths, Tensor max_lengths, Tensor finished, Tensor eos_ids, "
        "int pad_id, bool check_values=True) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Kernel choices (the defaults are the fast paths; False forces the other, for tests and
  // benchmarks): query_tiled: runs of prefill queries attend a tile of queries at a time;
  // cpu_bf16_dot: bf16 caches use the CPU's bf16 dot products where the build has them.
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table, "
        "Tensor seq_lens, float? scale=None, bool cpu_bf16_dot=True) -> Tensor");
  m.def("paged_prefill_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table, "
        "Tensor seq_lens, Tensor cu_seqlens, float? scale=None, bool query_tiled=True, "
        "bool cpu_bf16_dot=True) -> Tensor");
  m.def("append_kv(Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping) -> ()");
  // The engine's sync-free attention: the split plan comes from host facts (longest and total
  // kv_len), and block ids / kv_lens are trusted on CUDA (the engine checks them on the host;
  // the kernels still never read past a block-table row or use more than max_splits splits).
  // chunk_tokens ([1] int32): the split length read at run time (CUDA graphs), with buffers
  // sized for max_kv_len as the capacity.
  m.def("paged_attention_run(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table, Tensor kv_lens, "
        "Tensor? query_seq, int max_kv_len, int total_kv_len, float? scale=None, Tensor? chunk_tokens=None, "
        "bool query_tiled=True, bool cpu_bf16_dot=True) -> Tensor");
  // Rotary embedding of q and k (HF rotate-half) with the rotated k and v written to the cache.
  m.def("rotary_append_kv(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, Tensor(a!) k_cache, "
        "Tensor(b!) v_cache, Tensor slot_mapping) -> Tensor");
}
