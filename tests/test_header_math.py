"""The math the CUDA kernels share with the CPU (csrc/include/siri, __host__ __device__), run
on the host through the test probes (module _siri_probes) the way the GPU kernels use it:
per-thread add() plus merge() for the softmax state, strided threads plus a (value, index)
reduction for the greedy pick. Each is compared with a float64 reference and with the CPU op on the same input."""
import math

import pytest
import torch

import _siri_probes as probes
from siri.ops.logprobs import token_logprobs, token_logprobs_reference
from siri.ops.sampling import sample_tokens

FLT_MAX = torch.finfo(torch.float32).max


def reference_entropy(values):
    x = torch.tensor(values, dtype=torch.float64)
    logp = torch.log_softmax(x, 0)
    return float(-(logp.exp() * logp.nan_to_num(neginf=0.0)).sum()), float(torch.logsumexp(x, 0))


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 64])
def test_softmax_state_entropy_is_finite_after_huge_negative_logits(chunk):
    """A running max of -FLT_MAX (a masked_fill(finfo.min) row) followed by real logits: the
    rescale term delta * sum overflows to -inf while the scale is 0; the entropy must stay the
    float64 reference's, not NaN."""
    values = [-FLT_MAX, -FLT_MAX, 1.0, 2.0]
    max_, log_norm, entropy = probes.softmax_state(values, 1.0, chunk)
    expected_entropy, expected_log_norm = reference_entropy(values)
    assert max_ == 2.0
    assert math.isfinite(entropy) and entropy == pytest.approx(expected_entropy, abs=1e-5)
    assert log_norm + max_ == pytest.approx(expected_log_norm, abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_softmax_state_matches_float64_on_random_masked_rows(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        n = int(torch.randint(1, 300, (), generator=g))
        x = torch.randn(n, generator=g, dtype=torch.float64) * 4
        masked = torch.rand(n, generator=g) < 0.5
        x[masked] = torch.where(torch.rand(int(masked.sum()), generator=g) < 0.5,
                                torch.tensor(-FLT_MAX, dtype=torch.float64), torch.tensor(-math.inf, dtype=torch.float64))
        if not torch.isfinite(x).any() or (x > -FLT_MAX).sum() == 0:
            x[0] = 0.5
        values = x.float().tolist()
        inv_temp = float(torch.empty(()).uniform_(0.5, 2.0, generator=g))
        chunk = int(torch.randint(1, 40, (), generator=g))
        _, _, entropy = probes.softmax_state(values, inv_temp, chunk)
        expected, _ = reference_entropy((torch.tensor(values, dtype=torch.float64) * inv_temp).tolist())
        assert math.isfinite(entropy) and entropy == pytest.approx(expected, abs=1e-4), (values, chunk)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_logprobs_entropy_of_rows_with_a_masked_prefix(dtype):
    """The CPU kernel met the NaN when a whole 2048-element chunk was masked: rows whose first
    4096 entries are finfo.min."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4096 + 777, generator=g).to(dtype)
    logits[:, :4096] = torch.finfo(dtype).min
    targets = torch.randint(4096, logits.shape[1], (6,), generator=g)
    logp, entropy = token_logprobs(logits, targets, return_entropy=True)
    ref_logp, ref_entropy = token_logprobs_reference(logits, targets)
    assert torch.isfinite(entropy).all(), entropy
    torch.testing.assert_close(entropy.double(), ref_entropy, atol=1e-4, rtol=0)
    torch.testing.assert_close(logp.double(), ref_logp, atol=1e-4, rtol=0)


def reference_greedy(values):
    """The documented rule: NaN counts as -inf, the lowest index among the maximal values."""
    keys = [-math.inf if math.isnan(v) else v for v in values]
    return keys.index(max(keys))


def cpu_greedy(values):
    logits = torch.tensor([values], dtype=torch.float32)
    out = sample_tokens(logits, temperature=torch.zeros(1), top_k=torch.zeros(1, dtype=torch.int32),
                        top_p=torch.ones(1), seeds=torch.zeros(1, dtype=torch.int64),
                        positions=torch.zeros(1, dtype=torch.int64), lengths=torch.zeros(1, dtype=torch.int32),
                        max_lengths=torch.full((1,), 10, dtype=torch.int32), finished=torch.zeros(1, dtype=torch.bool),
                        eos_ids=torch.zeros(0, dtype=torch.int32), pad_id=0, check_values=False)
    return int(out.tokens[0])


@pytest.mark.parametrize("values", [
    [math.nan, -math.inf, -math.inf],          # the case the CUDA kernel got wrong (index 1)
    [-math.inf, math.nan, -math.inf],
    [math.nan, math.nan, math.nan],
    [-math.inf] * 5,
    [math.nan, -math.inf, 3.0, math.nan, 3.0],
    [1.0, math.nan, 2.0, 2.0],
])
@pytest.mark.parametrize("threads", [1, 2, 256])
def test_greedy_pick_rule_is_the_cpus(values, threads):
    assert probes.greedy_argmax(values, threads) == reference_greedy(values) == cpu_greedy(values)


def test_greedy_pick_rule_on_random_rows_with_nan_and_inf():
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        n = int(torch.randint(1, 600, (), generator=g))
        x = torch.randint(-3, 3, (n,), generator=g).float()      # many ties
        kind = torch.randint(0, 4, (n,), generator=g)
        x[kind == 0] = math.nan
        x[kind == 1] = -math.inf
        values = x.tolist()
        threads = int(torch.randint(1, 300, (), generator=g))
        expected = reference_greedy(values)
        assert probes.greedy_argmax(values, threads) == expected == cpu_greedy(values), (values, threads)
