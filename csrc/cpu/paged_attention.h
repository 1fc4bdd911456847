// CPU kernel entry points of siri::paged_decode_attention / paged_prefill_attention (both
// run paged_attention over their queries) and siri::append_kv. Arguments are validated by the
// binding; partial_o / partial_lse must be allocated when params.max_splits > 1.
#pragma once

#include "siri/paged_attention.h"

namespace siri::cpu {

void paged_attention(const PagedAttentionParams& params);

void append_kv(const AppendKVParams& params);

}  // namespace siri::cpu
