// CPU query-tiled attention for runs of prefill queries (part of siri::cpu::paged_attention).
//
// A prefill's queries come in runs: consecutive queries on one block-table row, each seeing
// one more token than the one before (its causal prefix). A tile of a run's queries attends
// to the keys together, so each K/V tile is read once per query tile instead of once per
// query: O(T x L / tile) reads instead of O(T x L) for a T-token prefill over L tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "siri/paged_attention.h"

namespace siri::cpu {

// Queries [first, first + count): one block-table row, kv_lens[first + i] = kv_lens[first] + i.
struct QueryRun {
  int64_t first;
  int64_t count;
};

// The runs of at least two queries in params' (host) kv_lens / query_seq, in query order;
// none when params.query_seq is null (one query per row) or params.query_tiled is false (the
// op's argument, so one process can time both paths). The other queries are left to the
// per-query kernel.
std::vector<QueryRun> runs_to_tile(const PagedAttentionParams& params);

// Attends every query of `runs` (into params.out, or into the split partials for queries
// whose kv_len spans several of params.chunk_tokens; merging them is the caller's).
void attend_query_runs(const PagedAttentionParams& params, const std::vector<QueryRun>& runs);

}  // namespace siri::cpu
