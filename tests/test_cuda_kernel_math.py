"""The row traversals and index math of the CUDA sampling and log-prob kernels, run on the
host through the test probes (module _siri_probes): the same __host__ __device__ code
(csrc/include/siri/vector_split.h, sampling.h, logprobs.h, numeric.h) the kernels run with
thread = threadIdx.x, checked against plain Python references for every alignment a row of an
odd vocabulary can start at."""
import math

import pytest
import torch

import _siri_probes as probes

ELEM_BYTES = {"float32": 4, "bfloat16": 2, "float64": 8}
TORCH_DTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
FLT_MAX = torch.finfo(torch.float32).max


def stored(values, dtype):
    """The values as the probe stores them (bf16: round to nearest even), as Python floats."""
    return torch.tensor(values, dtype=torch.float64).to(TORCH_DTYPE[dtype]).double().tolist()


def same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def offsets(dtype):
    """Every element offset from a 16-byte boundary a row of this dtype can start at."""
    return range(16 // ELEM_BYTES[dtype])


def max_aligned_vectors(address, size, elem_bytes):
    """Brute force: how many disjoint 16-byte-aligned vectors of whole elements fit in the row."""
    if address % elem_bytes:
        return 0
    end = address + size * elem_bytes
    return sum(1 for a in range(address - address % 16, end, 16) if a >= address and a + 16 <= end)


# ---- split_for_vectors ------------------------------------------------------------------------

@pytest.mark.parametrize("elem_bytes", [2, 4, 8])
def test_vector_split_covers_the_row_with_the_most_aligned_vectors(elem_bytes):
    width = 16 // elem_bytes
    for address in range(0, 64):
        for size in range(0, 45):
            head, body_end, total = probes.vector_split(address, size, elem_bytes)
            assert total == size and 0 <= head <= body_end <= size, (address, size)
            assert (body_end - head) % width == 0, (address, size)
            if body_end > head:
                assert (address + head * elem_bytes) % 16 == 0, (address, size)
            assert (body_end - head) // width == max_aligned_vectors(address, size, elem_bytes), (address, size)
            if address % elem_bytes == 0:  # the head stops at the first boundary, the tail is short
                assert head < width or head == size, (address, size)
                assert size - body_end < width or body_end == head, (address, size)
            else:
                assert head == size, (address, size)


def test_vector_split_of_large_addresses_and_rows():
    assert probes.vector_split(2**47 + 6, 50257, 2) == (5, 5 + (50257 - 5) // 8 * 8, 50257)
    assert probes.vector_split(2**47, 151936, 4) == (0, 151936, 151936)


def test_same_vector_phase():
    assert probes.same_vector_phase(1024 + 4, 4096 + 4)
    assert probes.same_vector_phase(1024, 1024)
    assert not probes.same_vector_phase(1024 + 4, 4096 + 8)
    assert not probes.same_vector_phase(1024, 1024 + 2)


# ---- block-strided traversal (logits passes of both kernels) ----------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("threads", [1, 3, 256])
def test_strided_traversal_reads_every_element_once_with_aligned_vectors(dtype, threads):
    g = torch.Generator().manual_seed(threads)
    width = 16 // ELEM_BYTES[dtype]
    for size in list(range(0, 40)) + [257, 1001]:
        values = (torch.randn(size, generator=g, dtype=torch.float64) * 5).tolist()
        expected = stored(values, dtype)
        for offset in offsets(dtype):
            split_visits, element_visits = probes.strided_visits(values, dtype, offset, threads)
            assert sorted(v[1] for v in split_visits) == list(range(size)), (size, offset)
            for _thread, index, value, via_vector, aligned in split_visits:
                assert same_float(value, expected[index]), (size, offset, index)
                assert aligned or not via_vector, (size, offset, index)
            vectors = sum(v[3] for v in split_visits) // width
            address = offset * ELEM_BYTES[dtype]
            assert vectors == max_aligned_vectors(address, size, ELEM_BYTES[dtype]), (size, offset)
            assert sorted(element_visits) == sorted(v[:3] for v in split_visits), (size, offset)


# ---- contiguous shares (one thread's in-order walk) --------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("threads", [1, 2, 7, 256])
def test_contiguous_shares_cover_the_row_in_order(dtype, threads):
    g = torch.Generator().manual_seed(threads)
    elem = ELEM_BYTES[dtype]
    for size in [0, 1, 5, 8, 9, 31, 64, 100, 2049, 50257 // 7]:
        values = torch.randn(size, generator=g, dtype=torch.float64).tolist()
        expected = stored(values, dtype)
        for offset in offsets(dtype):
            shares, visits = probes.contiguous_shares(values, dtype, offset, threads)
            assert len(shares) == threads and shares[0][0] == 0 and shares[-1][1] == size
            for (_, end), (begin, _) in zip(shares, shares[1:]):
                assert end == begin
            head, body_end, _ = probes.vector_split(offset * elem, size, elem)
            width = 16 // elem
            for begin, _end in shares[1:]:  # interior boundaries sit on vector boundaries
                assert head <= begin <= body_end and (begin == body_end or (begin - head) % width == 0)
            # balanced: no share holds more than its run of vectors plus the head and the tail
            run = -(-(body_end - head) // width // threads) * width
            assert max(end - begin for begin, end in shares) <= run + 2 * (width - 1), (size, offset)
            walk = [v for share in visits for v in share]
            assert [i for i, _ in walk] == list(range(size)), (size, offset)
            assert all(same_float(v, expected[i]) for i, v in walk)


# ---- the top-p tie scan -----------------------------------------------------------------------

def reference_nth(values, key_value, n):
    """Index of the n-th value equal to key_value (NaN matches NaN, -0 matches 0), else len - 1."""
    hits = [i for i, v in enumerate(values)
            if (math.isnan(key_value) and math.isnan(v)) or v == key_value]
    return hits[n - 1] if n <= len(hits) else len(values) - 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("threads", [1, 5, 256])
def test_nth_index_with_key_on_random_rows_with_many_ties(dtype, threads):
    g = torch.Generator().manual_seed(10 + threads)
    for _ in range(60):
        size = int(torch.randint(1, 3000, (), generator=g))
        row = torch.randint(-2, 3, (size,), generator=g).double() * 0.5
        row[torch.rand(size, generator=g) < 0.05] = -math.inf
        row[torch.rand(size, generator=g) < 0.02] = math.nan
        values = stored(row.tolist(), dtype)
        key_value = values[int(torch.randint(0, size, (), generator=g))]
        count = sum(1 for v in values if same_float(v, key_value))
        offset = int(torch.randint(0, 16 // ELEM_BYTES[dtype], (), generator=g))
        for n in {1, count, int(torch.randint(1, count + 1, (), generator=g))}:
            expected = reference_nth(values, key_value, n)
            assert probes.nth_index_with_key(values, dtype, offset, key_value, n, threads) == expected, (size, n)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nth_index_with_key_edge_cases(dtype):
    for offset in offsets(dtype):
        for threads in (1, 3, 256):
            def nth(values, key, n, offset=offset, threads=threads):
                return probes.nth_index_with_key(values, dtype, offset, key, n, threads)

            assert nth([2.0], 2.0, 1) == 0                                  # V = 1
            for size in (7, 8, 9, 255, 256, 257, 2051):                     # all equal
                assert [nth([1.0] * size, 1.0, n) for n in (1, 2, size)] == [0, 1, size - 1]
                assert nth([1.0] * size, 1.0, size + 1) == size - 1         # fewer: the last index
            row = [0.0] * 300
            row[299] = 3.0
            assert nth(row, 3.0, 1) == 299                                  # the match is last
            row[0] = -0.0
            assert nth(row, 0.0, 1) == 0 and nth(row, -0.0, 299) == 298     # -0 and +0 share a key


# ---- Philox groups of the race ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("threads", [1, 3, 256])
def test_noise_groups_visit_every_group_once_with_its_logits(dtype, threads):
    g = torch.Generator().manual_seed(20 + threads)
    for size in list(range(1, 41)) + [1003, 50257 // 3]:
        values = torch.randn(size, generator=g, dtype=torch.float64).tolist()
        expected = stored(values, dtype) + [-math.inf] * 3
        for offset in offsets(dtype):
            visits = probes.noise_groups(values, dtype, offset, threads)
            assert sorted(group for _, group, _ in visits) == list(range((size + 3) // 4)), (size, offset)
            for _, group, logits in visits:
                assert list(logits) == expected[4 * group: 4 * group + 4], (size, offset, group)


# ---- level-0 histogram: warp-aggregated masses -------------------------------------------------

def test_warp_mass_sum_is_exact_for_32_maximal_masses():
    top = 1 << 40  # fixed_mass(1.0), the largest mass a token can have
    assert probes.warp_mass_sum([top] * 32) == 32 * top
    assert probes.warp_mass_sum([top - 1] * 32) == 32 * (top - 1)
    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        count = int(torch.randint(1, 33, (), generator=g))
        masses = [int(m) for m in torch.randint(0, top + 1, (count,), generator=g)]
        assert probes.warp_mass_sum(masses) == sum(masses)


# ---- log-prob forward ------------------------------------------------------------------------

def test_exp_approx_nonpositive_is_exp_approx_bit_for_bit():
    checked, first_bad = probes.exp_nonpositive_mismatch(97, 200_000)
    assert checked > 20_000_000
    assert first_bad == -1, f"differs at bits {first_bad:#010x}"


def reference_softmax(values, inv_temp):
    x = torch.tensor(values, dtype=torch.float64) * inv_temp
    logp = torch.log_softmax(x, 0)
    entropy = float(-(logp.exp() * logp.nan_to_num(neginf=0.0)).sum())
    return float(torch.logsumexp(x, 0)), entropy


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("threads", [1, 4, 256])
def test_forward_softmax_state_on_rows_at_every_alignment(dtype, threads):
    """Head peeling, add_run on the vectors, and the no-entropy specialisation: log_norm and
    entropy match float64, and without entropy max and log_norm are bit-for-bit the same."""
    g = torch.Generator().manual_seed(30 + threads)
    tol = 1e-10 if dtype == "float64" else 2e-5
    for size in [1, 2, 7, 9, 33, 50, 1001]:
        for offset in offsets(dtype):
            row = torch.randn(size, generator=g, dtype=torch.float64) * 4
            masked = torch.rand(size, generator=g) < 0.3
            row[masked] = torch.where(torch.rand(int(masked.sum()), generator=g) < 0.5,
                                      torch.tensor(-math.inf, dtype=torch.float64),
                                      torch.tensor(-FLT_MAX, dtype=torch.float64))
            row[int(torch.randint(0, size, (), generator=g))] = 1.5  # at least one real logit
            values = stored(row.tolist(), dtype)
            inv_temp = float(torch.empty(()).uniform_(0.5, 2.0, generator=g))
            max_, log_norm, entropy = probes.forward_softmax_state(values, dtype, offset, inv_temp, threads, True)
            expected_log_norm, expected_entropy = reference_softmax(values, inv_temp)
            assert max_ == max(values)
            assert max_ * inv_temp + log_norm == pytest.approx(expected_log_norm, abs=tol), (size, offset)
            assert entropy == pytest.approx(expected_entropy, abs=10 * tol), (size, offset)
            assert probes.forward_softmax_state(values, dtype, offset, inv_temp, threads, False) == (max_, log_norm, None)


@pytest.mark.parametrize("entropy", [True, False])
def test_forward_softmax_state_keeps_nan_and_all_masked_rows(entropy):
    """add_run skips -inf while nothing finite has been seen, but a NaN still makes the row NaN,
    as add() does element by element."""
    for threads in (1, 2, 256):
        for size in (4, 8, 13):
            for position in range(size):
                values = [-math.inf] * size
                values[position] = math.nan
                assert math.isnan(probes.forward_softmax_state(values, "float32", 0, 1.0, threads, entropy)[1])
                values[(position + 1) % size] = 2.0
                assert math.isnan(probes.forward_softmax_state(values, "float32", 0, 1.0, threads, entropy)[1])
            # all -inf: an empty sum, as element by element
            assert probes.forward_softmax_state([-math.inf] * size, "float32", 0, 1.0, threads, entropy)[1] == -math.inf
