// Reading a row of elements with 16-byte vector loads when the row may start at any element
// address. Rows of a [rows, V] tensor with V odd (GPT-2's 50257) start at every alignment, so a
// kernel that vectorised only 16-byte-aligned rows would read most rows element by element.
// Instead each row is split into a scalar head up to the first 16-byte boundary, whole vectors,
// and a scalar tail.
//
// The traversals below are what the CUDA sampling and log-prob kernels run (thread = threadIdx.x);
// they are __host__ __device__ so that tests can run them on the host for every alignment.
#pragma once

#include <string.h>

#include "siri/common.h"

#if defined(__CUDA_ARCH__)
#define SIRI_UNROLL _Pragma("unroll")
#else
#define SIRI_UNROLL
#endif

namespace siri {

constexpr int64_t kVectorBytes = 16;

// Element ranges of a row [0, size): head [0, head), vectors [head, body_end) (a whole number
// of 16-byte vectors, the first 16-byte aligned), tail [body_end, size).
struct VectorSplit {
  int64_t head;
  int64_t body_end;
  int64_t size;
};

// Half-open range of element indices.
struct IndexRange {
  int64_t begin;
  int64_t end;
};

// Everything scalar: for data whose elements cannot reach a 16-byte boundary.
SIRI_HOST_DEVICE VectorSplit scalar_split(int64_t size) { return {size, size, size}; }

// The split of `size` elements of `elem_bytes` bytes (a divisor of 16) starting at `address`.
// An address that is not a multiple of the element size never reaches a boundary: all scalar.
SIRI_HOST_DEVICE VectorSplit split_for_vectors(uintptr_t address, int64_t size, int64_t elem_bytes) {
  const uint64_t bytes = static_cast<uint64_t>(elem_bytes);
  if (address % bytes != 0) return scalar_split(size);
  const int64_t to_boundary =
      static_cast<int64_t>((static_cast<uint64_t>(kVectorBytes) - address % kVectorBytes) % kVectorBytes / bytes);
  const int64_t head = to_boundary < size ? to_boundary : size;
  const int64_t width = kVectorBytes / elem_bytes;
  return {head, head + (size - head) / width * width, size};
}

template <typename T>
SIRI_HOST_DEVICE VectorSplit split_for_vectors(const T* row, int64_t size) {
  return split_for_vectors(reinterpret_cast<uintptr_t>(row), size, static_cast<int64_t>(sizeof(T)));
}

// Whether element j of array a and element j of array b lie at the same offset from a 16-byte
// boundary, so that one split serves a vector load from a and a vector store to b.
SIRI_HOST_DEVICE bool same_vector_phase(const void* a, const void* b) {
  return (reinterpret_cast<uintptr_t>(a) - reinterpret_cast<uintptr_t>(b)) % kVectorBytes == 0;
}

// Thread `thread`'s contiguous share of a row split by `s`, for an in-order walk by `threads`
// threads: the vectors are dealt out in runs of ceil(vectors / threads), thread 0's share also
// holds the head and the last thread's the tail. Shares are in index order and cover the row.
SIRI_HOST_DEVICE IndexRange contiguous_share(const VectorSplit& s, int64_t width, int64_t thread, int64_t threads) {
  const int64_t vectors = (s.body_end - s.head) / width;
  const int64_t run = (vectors + threads - 1) / threads * width;
  const int64_t lo = s.head + thread * run, hi = lo + run;
  return {thread == 0 ? 0 : (lo < s.body_end ? lo : s.body_end),
          thread == threads - 1 ? s.size : (hi < s.body_end ? hi : s.body_end)};
}

// 16 bytes of elements. Host: memcpy; device: one 16-byte load, `p` must be 16-byte aligned.
template <typename T>
struct Vector16 {
  static constexpr int kSize = static_cast<int>(kVectorBytes / sizeof(T));
  T elems[kSize];
};

template <typename T>
SIRI_HOST_DEVICE Vector16<T> load_vector16(const T* p) {
#if defined(__CUDA_ARCH__)
  union {
    uint4 raw;
    Vector16<T> v;
  } u;
  u.raw = *reinterpret_cast<const uint4*>(p);
  return u.v;
#else
  Vector16<T> v;
  memcpy(&v, p, sizeof v);
  return v;
#endif
}

// Visits the elements of row[0, size) owned by `thread` of `threads`, block-strided: head and
// tail elements one per thread as element(j, load(row, j)), the 16-byte vectors one per thread
// as vector(j, values) with values[k] = load(row, j + k), k < Vector16<T>::kSize, read by one
// load. load(p, k) converts element k of p.
template <typename T, typename Load, typename Element, typename Vector>
SIRI_HOST_DEVICE void for_each_strided(const T* row, int64_t size, int64_t thread, int64_t threads, Load load,
                                       Element&& element, Vector&& vector) {
  using Value = decltype(load(row, 0));
  constexpr int kWidth = Vector16<T>::kSize;
  const VectorSplit s = split_for_vectors(row, size);
  for (int64_t j = thread; j < s.head; j += threads) element(j, load(row, j));
  for (int64_t j = s.head + thread * kWidth; j < s.body_end; j += threads * kWidth) {
    const Vector16<T> v = load_vector16(row + j);
    Value values[kWidth];
    SIRI_UNROLL
    for (int k = 0; k < kWidth; ++k) values[k] = load(v.elems, k);
    vector(j, values);
  }
  for (int64_t j = s.body_end + thread; j < size; j += threads) element(j, load(row, j));
}

// The same, every element as fn(j, load(row, j)).
template <typename T, typename Load, typename Fn>
SIRI_HOST_DEVICE void for_each_strided(const T* row, int64_t size, int64_t thread, int64_t threads, Load load, Fn&& fn) {
  using Value = decltype(load(row, 0));
  constexpr int kWidth = Vector16<T>::kSize;
  for_each_strided(row, size, thread, threads, load, fn, [&](int64_t j, const Value (&values)[kWidth]) {
    SIRI_UNROLL
    for (int k = 0; k < kWidth; ++k) fn(j + k, values[k]);
  });
}

// Calls fn(j, load(row, j)) for j = r.begin, ..., r.end - 1 in increasing order (one thread),
// reading the 16-byte-aligned middle of the range through vectors.
template <typename T, typename Load, typename Fn>
SIRI_HOST_DEVICE void for_each_in_order(const T* row, IndexRange r, Load load, Fn&& fn) {
  constexpr int kWidth = Vector16<T>::kSize;
  const T* base = row + r.begin;
  const VectorSplit s = split_for_vectors(base, r.end - r.begin);
  for (int64_t j = 0; j < s.head; ++j) fn(r.begin + j, load(base, j));
  for (int64_t j = s.head; j < s.body_end; j += kWidth) {
    const Vector16<T> v = load_vector16(base + j);
    SIRI_UNROLL
    for (int k = 0; k < kWidth; ++k) fn(r.begin + j + k, load(v.elems, k));
  }
  for (int64_t j = s.body_end; j < s.size; ++j) fn(r.begin + j, load(base, j));
}

}  // namespace siri
