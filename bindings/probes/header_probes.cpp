// Probes of the log-prob, sampler and vector-traversal math (siri/logprobs.h, siri/sampling.h,
// siri/vector_split.h), run on the host the way the GPU kernels run it. Test-only: part of the
// module _siri_probes (module.cpp), not of siri._C.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "probes.h"
#include "siri/logprobs.h"
#include "siri/numeric.h"
#include "siri/sampling.h"
#include "siri/vector_split.h"

namespace py = pybind11;

namespace {

// The decode-time softmax state as a GPU thread group builds it: add() element by element
// within each run of `chunk` values (one thread's share), then merge() the runs in order.
py::tuple softmax_state(const std::vector<float>& values, float inv_temp, int64_t chunk) {
  if (chunk < 1) throw py::value_error("chunk must be >= 1");
  auto total = siri::LogitsSoftmaxState<float>::empty();
  for (size_t lo = 0; lo < values.size(); lo += static_cast<size_t>(chunk)) {
    auto part = siri::LogitsSoftmaxState<float>::empty();
    for (size_t i = lo; i < values.size() && i < lo + static_cast<size_t>(chunk); ++i) part.add(values[i], inv_temp);
    total.merge(part, inv_temp);
  }
  return py::make_tuple(total.max, total.log_norm(), total.entropy());
}

// The CUDA sampler's greedy pick: `threads` threads each scan a strided share of the row
// (i = t, t + threads, ...), then their (value, index) bests are combined.
int64_t greedy_argmax(const std::vector<float>& values, int64_t threads) {
  if (threads < 1) throw py::value_error("threads must be >= 1");
  float best = -INFINITY;
  int64_t winner = -1;
  for (int64_t t = 0; t < threads; ++t) {
    float max = -INFINITY;
    int64_t argmax = -1;
    for (int64_t i = t; i < static_cast<int64_t>(values.size()); i += threads) {
      const float v = siri::argmax_key(values[i]);
      if (siri::argmax_better(v, i, max, argmax)) {
        max = v;
        argmax = i;
      }
    }
    if (siri::argmax_better(max, argmax, best, winner)) {
      best = max;
      winner = argmax;
    }
  }
  return winner;
}

// ---- rows at a chosen alignment -------------------------------------------------------------

// A row of `values` stored as `dtype` ("float32", "bfloat16" or "float64") `offset` elements
// after a 16-byte boundary, as row r of a [rows, V] tensor with odd V lies. bfloat16 is stored
// as raw bits (uint16_t, what the sampler reads) rounded to nearest even.
struct AlignedRow {
  std::vector<unsigned char> storage;
  unsigned char* row;
  int64_t elem_bytes;

  AlignedRow(const std::vector<double>& values, const std::string& dtype, int64_t offset) {
    if (dtype == "float32") elem_bytes = 4;
    else if (dtype == "bfloat16") elem_bytes = 2;
    else if (dtype == "float64") elem_bytes = 8;
    else throw py::value_error("dtype must be float32, bfloat16 or float64, got " + dtype);
    if (offset < 0 || offset * elem_bytes >= siri::kVectorBytes) {
      throw py::value_error("offset must be in [0, 16 / element size)");
    }
    storage.resize(values.size() * elem_bytes + 2 * siri::kVectorBytes);
    const uintptr_t start = reinterpret_cast<uintptr_t>(storage.data());
    row = storage.data() + ((siri::kVectorBytes - start % siri::kVectorBytes) % siri::kVectorBytes) +
          offset * elem_bytes;
    for (size_t i = 0; i < values.size(); ++i) {
      if (elem_bytes == 4) {
        const float v = static_cast<float>(values[i]);
        memcpy(row + 4 * i, &v, 4);
      } else if (elem_bytes == 2) {
        const siri::bf16_t v = siri::float_to_bf16(static_cast<float>(values[i]));
        memcpy(row + 2 * i, &v, 2);
      } else {
        memcpy(row + 8 * i, &values[i], 8);
      }
    }
  }

  // Calls fn(typed row pointer): const float*, const uint16_t* (bf16 bits) or const double*.
  template <typename Fn>
  auto visit(Fn&& fn) const {
    if (elem_bytes == 4) return fn(reinterpret_cast<const float*>(row));
    if (elem_bytes == 2) return fn(reinterpret_cast<const uint16_t*>(row));
    return fn(reinterpret_cast<const double*>(row));
  }
};

// The sampler's loads for float32 / bf16 bits, the log-prob loads for float64.
struct ProbeLoad {
  SIRI_HOST_DEVICE float operator()(const float* p, int64_t i) const { return siri::load_logit(p, i); }
  SIRI_HOST_DEVICE float operator()(const uint16_t* p, int64_t i) const { return siri::load_logit(p, i); }
  SIRI_HOST_DEVICE double operator()(const double* p, int64_t i) const { return siri::load_acc(p, i); }
};

py::tuple vector_split(uint64_t address, int64_t size, int64_t elem_bytes) {
  if (elem_bytes < 1 || siri::kVectorBytes % elem_bytes != 0) throw py::value_error("elem_bytes must divide 16");
  const siri::VectorSplit s = siri::split_for_vectors(static_cast<uintptr_t>(address), size, elem_bytes);
  return py::make_tuple(s.head, s.body_end, s.size);
}

bool same_vector_phase(uint64_t a, uint64_t b) {
  return siri::same_vector_phase(reinterpret_cast<const void*>(static_cast<uintptr_t>(a)),
                                 reinterpret_cast<const void*>(static_cast<uintptr_t>(b)));
}

// for_each_strided as `threads` threads run it: (thread, index, value, through a vector, vector
// address 16-byte aligned) per visit, from the element/vector form; and (thread, index, value)
// from the element-only form.
py::tuple strided_visits(const std::vector<double>& values, const std::string& dtype, int64_t offset, int64_t threads) {
  if (threads < 1) throw py::value_error("threads must be >= 1");
  const AlignedRow data(values, dtype, offset);
  py::list split_visits, element_visits;
  const int64_t size = static_cast<int64_t>(values.size());
  data.visit([&](const auto* row) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(row)>>;
    constexpr int kWidth = siri::Vector16<T>::kSize;
    using Value = decltype(ProbeLoad()(row, 0));
    for (int64_t t = 0; t < threads; ++t) {
      siri::for_each_strided(
          row, size, t, threads, ProbeLoad(),
          [&](int64_t j, Value v) { split_visits.append(py::make_tuple(t, j, v, false, false)); },
          [&](int64_t j, const Value (&v)[kWidth]) {
            const bool aligned = reinterpret_cast<uintptr_t>(row + j) % siri::kVectorBytes == 0;
            for (int k = 0; k < kWidth; ++k) split_visits.append(py::make_tuple(t, j + k, v[k], true, aligned));
          });
      siri::for_each_strided(row, size, t, threads, ProbeLoad(),
                             [&](int64_t j, Value v) { element_visits.append(py::make_tuple(t, j, v)); });
    }
    return 0;
  });
  return py::make_tuple(split_visits, element_visits);
}

// The contiguous_share of each of `threads` threads over a row stored as `dtype` at `offset`,
// and the (index, value) pairs for_each_in_order visits in each share.
py::tuple contiguous_shares(const std::vector<double>& values, const std::string& dtype, int64_t offset, int64_t threads) {
  if (threads < 1) throw py::value_error("threads must be >= 1");
  const AlignedRow data(values, dtype, offset);
  py::list shares, visits;
  data.visit([&](const auto* row) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(row)>>;
    const int64_t size = static_cast<int64_t>(values.size());
    const siri::VectorSplit s = siri::split_for_vectors(row, size);
    for (int64_t t = 0; t < threads; ++t) {
      const siri::IndexRange r = siri::contiguous_share(s, siri::Vector16<T>::kSize, t, threads);
      shares.append(py::make_tuple(r.begin, r.end));
      py::list order;
      siri::for_each_in_order(row, r, ProbeLoad(), [&](int64_t j, auto v) { order.append(py::make_tuple(j, v)); });
      visits.append(order);
    }
    return 0;
  });
  return py::make_tuple(shares, visits);
}

// The CUDA sampler's top-p tie scan (nth_index_with_key in csrc/cuda/sampling.cu) run by
// `threads` threads: per-share counts, their exclusive prefix sum, the walk of the one share
// holding the n-th match. The key is order_key(key_value); vocab - 1 if there are fewer than n.
int64_t nth_index_with_key(const std::vector<double>& values, const std::string& dtype, int64_t offset,
                           double key_value, uint32_t n, int64_t threads) {
  if (threads < 1) throw py::value_error("threads must be >= 1");
  if (dtype == "float64") throw py::value_error("the sampler reads float32 or bfloat16");
  const AlignedRow data(values, dtype, offset);
  const int64_t vocab = static_cast<int64_t>(values.size());
  return data.visit([&](const auto* row) -> int64_t {
    if constexpr (std::is_same_v<std::remove_cv_t<std::remove_pointer_t<decltype(row)>>, double>) {
      return -1;
    } else {
      using T = std::remove_cv_t<std::remove_pointer_t<decltype(row)>>;
      const float key_float = static_cast<float>(key_value);
      const uint32_t key = siri::order_key(std::is_same_v<T, float> ? key_float
                                                                    : siri::bf16_to_float(siri::float_to_bf16(key_float)));
      const siri::VectorSplit s = siri::split_for_vectors(row, vocab);
      uint32_t before = 0;
      int64_t found = vocab - 1;
      for (int64_t t = 0; t < threads; ++t) {
        const siri::IndexRange share = siri::contiguous_share(s, siri::Vector16<T>::kSize, t, threads);
        const uint32_t here = siri::count_key_in(row, share, key);
        if (before < n && n <= before + here) found = siri::nth_key_in(row, share, key, n - before);
        before += here;
      }
      return found;
    }
  });
}

// The Philox groups the CUDA race visits: (thread, group, its 4 logits) per visit.
py::list noise_groups(const std::vector<double>& values, const std::string& dtype, int64_t offset, int64_t threads) {
  if (threads < 1) throw py::value_error("threads must be >= 1");
  if (dtype == "float64") throw py::value_error("the sampler reads float32 or bfloat16");
  const AlignedRow data(values, dtype, offset);
  py::list visits;
  data.visit([&](const auto* row) {
    if constexpr (!std::is_same_v<std::remove_cv_t<std::remove_pointer_t<decltype(row)>>, double>) {
      for (int64_t t = 0; t < threads; ++t) {
        siri::for_each_noise_group(row, static_cast<int64_t>(values.size()), t, threads,
                                   [&](int64_t g, const float (&v)[4]) {
                                     visits.append(py::make_tuple(t, g, py::make_tuple(v[0], v[1], v[2], v[3])));
                                   });
      }
    }
    return 0;
  });
  return visits;
}

// A warp's sum of fixed-point masses as the level-0 histogram aggregates it: low and high
// parts each summed in uint32 arithmetic (wrapping like __reduce_add_sync), then joined.
uint64_t warp_mass_sum(const std::vector<uint64_t>& masses) {
  uint32_t low = 0, high = 0;
  for (const uint64_t m : masses) {
    low += siri::mass_low_part(m);
    high += siri::mass_high_part(m);
  }
  return siri::join_mass_parts(low, high);
}

// exp_approx_nonpositive against exp_approx on every `stride`-th float bit pattern of
// [0x80000000, 0xFFFFFFFF] (-0 down to -inf, then NaNs) plus every pattern within `dense` of
// -87.3 and of -0: (checked, first mismatching bit pattern or -1).
py::tuple exp_nonpositive_mismatch(uint32_t stride, uint32_t dense) {
  if (stride == 0) throw py::value_error("stride must be >= 1");
  int64_t checked = 0, first_bad = -1;
  const auto check = [&](uint32_t bits) {
    float x;
    memcpy(&x, &bits, sizeof x);
    const float a = siri::exp_approx(x), b = siri::exp_approx_nonpositive(x);
    uint32_t ba, bb;
    memcpy(&ba, &a, sizeof ba);
    memcpy(&bb, &b, sizeof bb);
    const bool both_nan = a != a && b != b;
    if (ba != bb && !both_nan && first_bad < 0) first_bad = bits;
    ++checked;
  };
  for (uint64_t bits = 0x80000000u; bits <= 0xFFFFFFFFu; bits += stride) check(static_cast<uint32_t>(bits));
  float boundary = -87.3f;
  uint32_t boundary_bits;
  memcpy(&boundary_bits, &boundary, sizeof boundary_bits);
  for (uint32_t d = 0; d <= dense; ++d) {
    check(boundary_bits + d);
    check(boundary_bits - d);
    check(0x80000000u + d);
  }
  check(0x00000000u);  // +0
  return py::make_tuple(checked, first_bad);
}

// The CUDA log-prob forward's softmax state (csrc/cuda/logprobs.cu) with `threads` threads:
// each builds its state with for_each_strided (add() on head and tail elements, add_run() on
// vectors) over a row stored as `dtype` at `offset`; the states are merged in thread order.
// (max, log_norm, entropy or None without entropy).
py::tuple forward_softmax_state(const std::vector<double>& values, const std::string& dtype, int64_t offset,
                                double inv_temp, int64_t threads, bool entropy) {
  if (threads < 1) throw py::value_error("threads must be >= 1");
  const AlignedRow data(values, dtype, offset);
  return data.visit([&](const auto* row) -> py::tuple {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(row)>>;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    constexpr int kWidth = siri::Vector16<T>::kSize;
    const A inv = static_cast<A>(inv_temp);
    const auto run = [&](auto with_entropy) {
      constexpr bool kEntropy = decltype(with_entropy)::value;
      auto total = siri::LogitsSoftmaxState<A>::empty();
      for (int64_t t = 0; t < threads; ++t) {
        auto state = siri::LogitsSoftmaxState<A>::empty();
        siri::for_each_strided(
            row, static_cast<int64_t>(values.size()), t, threads, ProbeLoad(),
            [&](int64_t, A v) { state.template add<kEntropy>(v, inv); },
            [&](int64_t, const A (&v)[kWidth]) { state.template add_run<kEntropy>(v, inv); });
        total.template merge<kEntropy>(state, inv);
      }
      return total;
    };
    if (entropy) {
      const auto s = run(std::true_type());
      return py::make_tuple(double(s.max), double(s.log_norm()), double(s.entropy()));
    }
    const auto s = run(std::false_type());
    return py::make_tuple(double(s.max), double(s.log_norm()), py::none());
  });
}

}  // namespace

void register_header_probes(py::module_& m) {
  m.def("softmax_state", &softmax_state,
        "(max, log_norm, entropy) of softmax(values * inv_temp) built with the shared "
        "LogitsSoftmaxState's add() within runs of `chunk` values and merge() across them (fp32)",
        py::arg("values"), py::arg("inv_temp"), py::arg("chunk"));
  m.def("greedy_argmax", &greedy_argmax,
        "The CUDA sampler's greedy index of `values` with `threads` strided threads, "
        "by the shared argmax_key / argmax_better rule",
        py::arg("values"), py::arg("threads"));
  m.def("vector_split", &vector_split,
        "split_for_vectors -> (head, body_end, size) for `size` elements of `elem_bytes` "
        "bytes at `address`",
        py::arg("address"), py::arg("size"), py::arg("elem_bytes"));
  m.def("same_vector_phase", &same_vector_phase, "same_vector_phase of two addresses",
        py::arg("a"), py::arg("b"));
  m.def("strided_visits", &strided_visits,
        "for_each_strided by `threads` threads over a row stored as `dtype` `offset` elements "
        "after a 16-byte boundary -> ([(thread, index, value, via_vector, vector_aligned)], "
        "[(thread, index, value)] from the element-only form)",
        py::arg("values"), py::arg("dtype"), py::arg("offset"), py::arg("threads"));
  m.def("contiguous_shares", &contiguous_shares,
        "contiguous_share of each of `threads` threads and the (index, value) for_each_in_order "
        "visits in it -> ([(begin, end)], [[(index, value)]])",
        py::arg("values"), py::arg("dtype"), py::arg("offset"), py::arg("threads"));
  m.def("nth_index_with_key", &nth_index_with_key,
        "The CUDA sampler's parallel top-p tie scan, the index of the n-th (1-based) token "
        "whose order_key equals that of key_value (vocab - 1 if fewer)",
        py::arg("values"), py::arg("dtype"), py::arg("offset"), py::arg("key_value"), py::arg("n"),
        py::arg("threads"));
  m.def("noise_groups", &noise_groups,
        "for_each_noise_group by `threads` threads -> [(thread, group, (4 logits))]",
        py::arg("values"), py::arg("dtype"), py::arg("offset"), py::arg("threads"));
  m.def("warp_mass_sum", &warp_mass_sum,
        "A warp's mass sum from uint32 sums of mass_low_part / mass_high_part, joined",
        py::arg("masses"));
  m.def("exp_nonpositive_mismatch", &exp_nonpositive_mismatch,
        "exp_approx_nonpositive vs exp_approx bit for bit on non-positive floats -> "
        "(checked, first mismatching bit pattern or -1)",
        py::arg("stride"), py::arg("dense"));
  m.def("forward_softmax_state", &forward_softmax_state,
        "The CUDA log-prob forward's per-thread softmax states (for_each_strided, add/add_run) "
        "merged -> (max, log_norm, entropy or None)",
        py::arg("values"), py::arg("dtype"), py::arg("offset"), py::arg("inv_temp"), py::arg("threads"),
        py::arg("entropy"));
}
