"""siri.ops.sample_tokens: exact distribution (chi-square against the float64 reference),
greedy, reproducibility, logprobs, stop bookkeeping, errors and op registration, on every
backend. Statistical tests use fixed seeds, so they are deterministic."""
import math

import pytest
import torch

import siri
from siri.ops import sample_tokens, sample_tokens_reference, sampling_probs_reference

DRAWS = 200_000


def make_args(logits, *, temperature=1.0, top_k=0, top_p=1.0, seeds=0, positions=0, lengths=0,
              max_lengths=1 << 20, finished=False, eos_ids=(), pad_id=0):
    """Keyword arguments of sample_tokens; scalars are broadcast to [B]."""
    batch, device = logits.shape[0], logits.device

    def per_row(value, dtype):
        if isinstance(value, torch.Tensor):
            return value.to(device=device, dtype=dtype)
        return torch.full((batch,), value, dtype=dtype, device=device)

    return dict(logits=logits, temperature=per_row(temperature, torch.float32),
                top_k=per_row(top_k, torch.int32), top_p=per_row(top_p, torch.float32),
                seeds=per_row(seeds, torch.int64), positions=per_row(positions, torch.int64),
                lengths=per_row(lengths, torch.int32), max_lengths=per_row(max_lengths, torch.int32),
                finished=per_row(finished, torch.bool),
                eos_ids=torch.tensor(eos_ids, dtype=torch.int32, device=device), pad_id=pad_id)


def chi2_pvalue(counts, probs):
    """Goodness-of-fit p-value of counts against probs; bins expected below 5 are pooled."""
    expected = probs * counts.sum()
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = obs.numel() - 1
    if dof == 0:  # a single possible outcome cannot deviate
        return 1.0
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


def draw_counts(row, device, draws=DRAWS, seed=0, **params):
    """Histogram of `draws` samples of one logits row: one call, one row per draw, each with
    its own (seed, position)."""
    gen = torch.Generator().manual_seed(seed)
    logits = row.to(device).expand(draws, row.numel())  # row stride 0: no copy
    args = make_args(logits, seeds=torch.randint(0, 2**62, (draws,), generator=gen),
                     positions=torch.randint(0, 2**40, (draws,), generator=gen), **params)
    tokens = sample_tokens(**args).tokens.cpu()
    return torch.bincount(tokens, minlength=row.numel()).double()


def reference_probs(row, temperature=1.0, top_k=0, top_p=1.0):
    return sampling_probs_reference(row[None].float().cpu(), torch.tensor([temperature]),
                                    torch.tensor([top_k]), torch.tensor([top_p]))[0]


@pytest.mark.parametrize("temperature, top_k, top_p, dtype", [
    (0.6, 0, 1.0, torch.float32),
    (1.0, 0, 1.0, torch.float32),
    (1.7, 0, 1.0, torch.float32),
    (1.0, 10, 1.0, torch.float32),
    (0.8, 0, 0.8, torch.float32),
    (1.2, 20, 0.7, torch.float32),
    (1.0, 0, 0.9, torch.bfloat16),
])
def test_distribution_chi_square(device, temperature, top_k, top_p, dtype):
    gen = torch.Generator().manual_seed(int(temperature * 100) + top_k + int(top_p * 1000))
    row = (torch.randn(50, generator=gen) * 2).to(dtype)
    params = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    counts = draw_counts(row, device, seed=7, **params)
    probs = reference_probs(row, **params)
    assert counts[probs == 0].sum() == 0, "drew a token outside the top-k/top-p set"
    if top_k or top_p < 1:
        assert (probs > 0).sum() < row.numel(), "the filter should remove tokens in this case"
    assert chi2_pvalue(counts, probs) > 1e-3


def test_distribution_spans_chunks_and_masked_tokens(device):
    """A longer row (several CPU chunks, V not a multiple of 4) with -inf masked tokens."""
    gen = torch.Generator().manual_seed(3)
    row = torch.randn(2003, generator=gen) * 3
    row[torch.randperm(2003, generator=gen)[:500]] = -float("inf")
    params = dict(temperature=0.9, top_k=40, top_p=0.9)
    counts = draw_counts(row, device, draws=20_000, seed=11, **params)
    probs = reference_probs(row, **params)
    assert counts[probs == 0].sum() == 0
    assert chi2_pvalue(counts, probs) > 1e-3


def test_ties_at_the_cuts(device):
    """Top-k keeps every token tied with the k-th logit; top-p cuts a tie group keeping the
    lowest indices."""
    row = torch.tensor([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.5, 2.0])
    probs_k = reference_probs(row, top_k=3)
    assert (probs_k > 0).tolist() == [False, True, True, True, True, True, False, True]
    counts = draw_counts(row, device, draws=50_000, seed=5, top_k=3)
    assert counts[probs_k == 0].sum() == 0 and chi2_pvalue(counts, probs_k) > 1e-3

    p = torch.softmax(row.double(), 0)
    top_p = float(2 * p[1] + 1.5 * p[2])  # both 3.0s, then half-way into the 2.0s
    probs_p = reference_probs(row, top_p=top_p)
    assert (probs_p > 0).tolist() == [False, True, True, True, True, False, False, False]
    counts = draw_counts(row, device, draws=50_000, seed=6, top_p=top_p)
    assert counts[probs_p == 0].sum() == 0 and chi2_pvalue(counts, probs_p) > 1e-3


def test_random_filters_on_tied_logits_keep_the_reference_set(device):
    """Integer logits (many ties) with random top-k/top-p: the tokens drawn are exactly the
    reference's kept set, with the reference's frequencies."""
    gen = torch.Generator().manual_seed(21)
    for _ in range(30):
        vocab = int(torch.randint(2, 16, (), generator=gen))
        row = torch.randint(0, 4, (vocab,), generator=gen).float()
        params = dict(temperature=float(torch.rand((), generator=gen)) + 0.5,
                      top_k=int(torch.randint(0, vocab + 1, (), generator=gen)),
                      top_p=float(torch.rand((), generator=gen)) * 0.9 + 0.1)
        probs = reference_probs(row, **params)
        counts = draw_counts(row, device, draws=8000, seed=int(torch.randint(0, 2**31, (), generator=gen)),
                             **params)
        assert torch.equal(counts > 0, probs > 0), (row.tolist(), params)
        assert chi2_pvalue(counts, probs) > 1e-4, (row.tolist(), params)


def sample_odd_rows(logits, device, gen, **overrides):
    """sample_tokens on `logits` (moved to `device`) with random per-row temperature, top-k,
    top-p, seeds and positions; the same arguments for every device."""
    batch = logits.shape[0]
    params = dict(temperature=torch.rand(batch, generator=gen) + 0.5,
                  top_k=torch.randint(0, 3, (batch,), generator=gen) * 20,
                  top_p=torch.tensor([1.0, 0.9, 0.5])[torch.randint(0, 3, (batch,), generator=gen)],
                  seeds=torch.randint(0, 2**62, (batch,), generator=gen),
                  positions=torch.randint(0, 2**40, (batch,), generator=gen))
    params.update(overrides)
    return sample_tokens(**make_args(logits.to(device), **params)), params


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [7, 50257])
@pytest.mark.parametrize("layout", ["contiguous", "offset_view"])
def test_odd_vocabulary_rows_at_every_alignment(device, dtype, vocab, layout):
    """Rows of an odd vocabulary start at every offset from a 16-byte boundary (the CUDA kernel
    peels a scalar head before its 16-byte loads, and reads the race's Philox groups through
    vectors only where they line up); logits rounded to integers tie a lot, so top-p cuts fall
    inside tie groups. Every draw is in the reference's kept set; on CUDA every draw and
    logprob is the CPU kernel's."""
    gen = torch.Generator().manual_seed(vocab)
    batch = 24  # 8 bf16 row alignments (4 for fp32), three times
    full = (torch.randn(batch, vocab + 1, generator=gen) * 2).round().to(dtype)
    logits = full[:, :vocab].contiguous() if layout == "contiguous" else full[:, 1:]
    out, params = sample_odd_rows(logits, device, gen)
    probs = sampling_probs_reference(logits.float(), params["temperature"], params["top_k"], params["top_p"])
    assert (probs.gather(1, out.tokens.cpu()[:, None]) > 0).all()
    if device.type == "cuda":
        cpu, _ = sample_odd_rows(logits, torch.device("cpu"), gen, **params)
        assert torch.equal(out.tokens.cpu(), cpu.tokens)
        torch.testing.assert_close(out.logprobs.cpu(), cpu.logprobs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [7, 4099, 50257])
def test_top_p_cut_inside_one_big_tie_group_keeps_the_lowest_indices(device, dtype, vocab):
    """All logits equal: top-p keeps the first ceil(p * V) indices, found by the tie scan (the
    CUDA kernel's parallel per-thread counts and prefix sum)."""
    batch = 400
    logits = torch.zeros(batch, vocab, dtype=dtype)
    top_p = torch.tensor([0.3, 0.77])[torch.arange(batch) % 2]
    gen = torch.Generator().manual_seed(vocab)
    out, params = sample_odd_rows(logits, device, gen, top_k=torch.zeros(batch, dtype=torch.int32), top_p=top_p,
                                  temperature=torch.ones(batch))
    kept = torch.ceil(top_p.double() * vocab).long()  # (j - 1) / V < p for the j-th index kept
    tokens = out.tokens.cpu()
    assert (tokens < kept).all()
    if vocab > 7:  # the draws reach the end of the kept range: it is not cut short
        for p in (0.3, 0.77):
            assert tokens[top_p == p].max() >= 0.9 * math.ceil(p * vocab)
    if device.type == "cuda":
        cpu, _ = sample_odd_rows(logits, torch.device("cpu"), gen, **params)
        assert torch.equal(tokens, cpu.tokens)


def hf_top_p_mask(scores, top_p):
    """Hugging Face's TopPLogitsWarper keep-mask (ascending sort, cumsum, drop <= 1 - p)."""
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -1:] = False
    return ~remove.scatter(-1, sorted_indices, remove)


def test_reference_matches_hugging_face_top_k_top_p():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 200, generator=gen, dtype=torch.float64) * 2
    for top_k, top_p in [(0, 0.9), (25, 1.0), (25, 0.6)]:
        scores = logits / 0.5
        if top_k:
            scores = scores.masked_fill(scores < torch.topk(scores, top_k).values[..., -1:], -float("inf"))
        if top_p < 1:
            scores = scores.masked_fill(~hf_top_p_mask(scores, top_p), -float("inf"))
        ours = sampling_probs_reference(logits, torch.full((64,), 0.5), torch.full((64,), top_k),
                                        torch.full((64,), top_p))
        hf = torch.softmax(scores, dim=-1)
        assert torch.equal(ours > 0, hf > 0)
        torch.testing.assert_close(ours, hf, atol=1e-12, rtol=0)


def test_greedy_is_argmax_with_lowest_index_on_ties(device, gen):
    logits = torch.randn(300, 97, generator=gen)
    logits[0, [5, 40]] = 100.0  # tie for the maximum: the lower index wins
    args = make_args(logits.to(device), temperature=0.0, top_k=3, top_p=0.5)
    out = sample_tokens(**args)
    assert torch.equal(out.tokens.cpu(), torch.argmax(logits, dim=1))
    assert out.tokens[0] == 5
    expected = torch.log_softmax(logits.double(), 1).gather(1, out.tokens.cpu()[:, None]).squeeze(1)
    torch.testing.assert_close(out.logprobs.cpu().double(), expected, atol=1e-5, rtol=0)


def test_tiny_temperature_is_the_argmax_limit(device, gen):
    logits = torch.randn(50, 40, generator=gen)
    for temperature in (1e-40, 1e-30):  # 1e-40 is denormal: 1 / T overflows to inf
        out = sample_tokens(**make_args(logits.to(device), temperature=temperature, top_p=0.9,
                                        seeds=torch.arange(50)))
        assert torch.equal(out.tokens.cpu(), torch.argmax(logits, dim=1))
        assert torch.equal(out.logprobs.cpu(), torch.zeros(50))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (5, 1.0), (0, 0.7), (50, 0.95)])
def test_logprobs_are_unfiltered_log_softmax(device, gen, dtype, top_k, top_p):
    logits = (torch.randn(128, 3001, generator=gen) * 4).to(dtype)
    temperature = torch.rand(128, generator=gen) * 1.5 + 0.3
    args = make_args(logits.to(device), temperature=temperature, top_k=top_k, top_p=top_p,
                     seeds=torch.arange(128), positions=3)
    out = sample_tokens(**args)
    expected = torch.log_softmax(logits.double() / temperature.double()[:, None], 1)
    expected = expected.gather(1, out.tokens.cpu()[:, None]).squeeze(1)
    torch.testing.assert_close(out.logprobs.cpu().double(), expected,
                               atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=0)


def test_reproducible_and_independent_of_the_batch(device, gen):
    vocab = 1500
    logits = torch.randn(40, vocab, generator=gen)
    seeds = torch.randint(0, 2**62, (40,), generator=gen)
    positions = torch.randint(0, 2**40, (40,), generator=gen)
    temperature = torch.rand(40, generator=gen) + 0.5
    top_k = torch.randint(0, 100, (40,), generator=gen)
    top_p = torch.rand(40, generator=gen) * 0.5 + 0.5

    def run(index, rows=None):
        rows = logits[index] if rows is None else rows
        return sample_tokens(**make_args(rows.to(device), temperature=temperature[index],
                                         top_k=top_k[index], top_p=top_p[index],
                                         seeds=seeds[index], positions=positions[index])).tokens.cpu()

    everything = torch.arange(40)
    first = run(everything)
    assert torch.equal(run(everything), first)
    # The same rows in another order, inside a batch padded with unrelated rows.
    perm = torch.randperm(40, generator=gen)
    mixed = torch.cat([perm[:20], everything[:7], perm[20:]])
    assert torch.equal(run(mixed), first[mixed])
    # A strided view (the last position of [B, S, V] logits) draws the same tokens.
    padded = torch.randn(40, 3, vocab, generator=gen)
    padded[:, -1] = logits
    assert torch.equal(run(everything, rows=padded.to(device)[:, -1, :]), first)
    if device.type == "cuda":  # the CPU kernel draws the same numbers
        cpu = sample_tokens(**make_args(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                        seeds=seeds, positions=positions)).tokens
        assert torch.equal(cpu, first)


def test_filters_reuse_the_same_noise(device, gen):
    """The draw is an argmax over per-token noise: when the unfiltered winner survives the
    filter it is still the winner, and a filter that keeps everything changes nothing."""
    logits = (torch.randn(500, 300, generator=gen) * 2).to(device)
    common = dict(temperature=0.9, seeds=torch.randint(0, 2**62, (500,), generator=gen), positions=5)
    plain = sample_tokens(**make_args(logits, **common)).tokens.cpu()
    assert torch.equal(sample_tokens(**make_args(logits, top_k=300, **common)).tokens.cpu(), plain)
    assert torch.equal(sample_tokens(**make_args(logits, top_k=1000, **common)).tokens.cpu(), plain)
    filtered = sample_tokens(**make_args(logits, top_k=30, top_p=0.8, **common)).tokens.cpu()
    probs = sampling_probs_reference(logits.cpu(), torch.full((500,), 0.9), torch.full((500,), 30),
                                     torch.full((500,), 0.8))
    survived = probs.gather(1, plain[:, None]).squeeze(1) > 0
    assert 0 < survived.sum() < 500
    assert torch.equal(filtered[survived], plain[survived])
    assert (probs.gather(1, filtered[:, None]) > 0).all()


def test_rows_without_a_finite_maximum(device):
    logits = torch.full((3, 6), -float("inf"))
    logits[1, 4] = float("inf")
    logits[2, 2] = float("nan")
    out = sample_tokens(**make_args(logits.to(device), temperature=1.0))
    assert out.tokens.tolist() == [0, 4, 0]  # all -inf / NaN: index 0; +inf: its index
    assert torch.isnan(out.logprobs).all()


def test_nan_logits_count_as_masked(device):
    nan = float("nan")
    row = torch.tensor([nan, 1.0, 2.0, 3.0, nan, -float("inf")])
    masked = torch.where(torch.isnan(row), -float("inf"), row)
    for params in (dict(top_k=2), dict(top_p=0.8), dict(top_k=5, top_p=0.99)):
        counts = draw_counts(row, device, draws=20_000, seed=8, **params)
        probs = reference_probs(masked, **params)
        assert counts[probs == 0].sum() == 0, params
        assert chi2_pvalue(counts, probs) > 1e-3, params


def test_position_and_seed_change_the_noise(device):
    logits = torch.zeros(1000, 64, device=device)  # uniform: every token equally likely
    base = sample_tokens(**make_args(logits, seeds=1, positions=torch.arange(1000))).tokens
    next_position = sample_tokens(**make_args(logits, seeds=1, positions=torch.arange(1, 1001))).tokens
    other_seed = sample_tokens(**make_args(logits, seeds=2, positions=torch.arange(1000))).tokens
    assert torch.equal(next_position[:-1], base[1:])  # the noise is a function of the position
    assert (other_seed != base).float().mean() > 0.9
    assert base.unique().numel() == 64


def test_stop_semantics(device):
    vocab, eos, eos2, pad = 16, 2, 7, 0
    # Greedy rows whose argmax is the listed token.
    wanted = [5, eos, 5, eos, 5, eos2, 9, 5]
    lengths = [3, 3, 9, 9, 5, 0, 0, 3]
    caps = [10, 10, 10, 10, 10, 10, 1, 4]
    finished = [False, False, False, False, True, False, False, False]
    logits = torch.zeros(len(wanted), vocab)
    logits[torch.arange(len(wanted)), torch.tensor(wanted)] = 5.0
    args = make_args(logits.to(device), temperature=0.0, lengths=torch.tensor(lengths),
                     max_lengths=torch.tensor(caps), finished=torch.tensor(finished),
                     eos_ids=(eos, eos2), pad_id=pad)
    out = sample_tokens(**args)
    # running; EOS; cap (length); EOS exactly at the cap is a stop; already finished;
    # second eos id; cap 1; reaching the cap of 4 from 3.
    assert out.tokens.tolist() == [5, eos, 5, eos, pad, eos2, 9, 5]
    assert out.lengths.tolist() == [4, 4, 10, 10, 5, 1, 1, 4]
    assert out.finished.tolist() == [False, True, True, True, True, True, True, True]
    assert out.finish_reason.tolist() == [0, 1, 2, 1, 0, 1, 2, 2]
    assert out.logprobs[4] == 0
    assert out.tokens.dtype == torch.int64 and out.logprobs.dtype == torch.float32
    assert out.lengths.dtype == torch.int32 and out.finish_reason.dtype == torch.int8
    assert out.finished.dtype == torch.bool
    # Inputs are not modified.
    assert args["lengths"].tolist() == lengths and args["finished"].tolist() == finished


def test_bookkeeping_matches_reference_for_random_rows(device, gen):
    batch, vocab = 2000, 12
    logits = torch.randn(batch, vocab, generator=gen)
    args = make_args(logits.to(device), temperature=1.0, top_p=0.9,
                     seeds=torch.randint(0, 2**62, (batch,), generator=gen), positions=9,
                     lengths=torch.randint(0, 20, (batch,), generator=gen),
                     max_lengths=torch.randint(1, 22, (batch,), generator=gen),
                     finished=torch.rand(batch, generator=gen) < 0.2, eos_ids=(1, 4), pad_id=11)
    out = sample_tokens(**args)
    reference_args = {k: v for k, v in args.items() if k not in ("logits", "seeds", "positions")}
    ref = sample_tokens_reference(logits, tokens=out.tokens, **reference_args)
    for name in ("tokens", "finished", "lengths", "finish_reason"):
        assert torch.equal(getattr(out, name).cpu(), getattr(ref, name).cpu()), name
    torch.testing.assert_close(out.logprobs.cpu(), ref.logprobs.cpu(), atol=1e-5, rtol=0)
    assert set(out.finish_reason.unique().tolist()) == {0, 1, 2}


def test_unchecked_values_give_the_same_draws(device, gen):
    """check_values=False (the engine's sync-free path) changes nothing but the checks."""
    batch, vocab = 64, 300
    args = make_args(torch.randn(batch, vocab, generator=gen).to(device), temperature=0.7, top_k=50, top_p=0.9,
                     seeds=torch.randint(0, 2**62, (batch,), generator=gen), positions=3,
                     lengths=torch.randint(0, 9, (batch,), generator=gen), max_lengths=8, eos_ids=(1, 2))
    checked, unchecked = sample_tokens(**args), sample_tokens(**args, check_values=False)
    for a, b in zip(checked, unchecked):
        assert torch.equal(a, b)


def test_no_eos_ids_and_empty_batch(device):
    out = sample_tokens(**make_args(torch.zeros(3, 5, device=device), lengths=1, max_lengths=3))
    assert out.finish_reason.tolist() == [0, 0, 0] and out.lengths.tolist() == [2, 2, 2]
    empty = sample_tokens(**make_args(torch.zeros(0, 5, device=device)))
    assert all(t.shape == (0,) for t in empty)


def test_philox_known_answers():
    """Random123's published known-answer vectors for Philox4x32-10."""
    import _siri_probes

    philox = _siri_probes.philox4x32_10
    assert philox(0, 0, 0, 0, 0, 0) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert philox(*[0xFFFFFFFF] * 6) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    assert philox(0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0) == (
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)


def bad_cases(vocab=8, batch=3):
    def with_(**changes):
        args = make_args(torch.zeros(batch, vocab), eos_ids=(1,))
        args.update(changes)
        return args

    ints = lambda *v: torch.tensor(v, dtype=torch.int32)  # noqa: E731
    return [
        (with_(temperature=torch.ones(batch + 1)), ValueError, "temperature has 4 rows but logits has 3"),
        (with_(max_lengths=ints(5, 0, 5)), ValueError, "max_lengths must be >= 1"),
        (with_(eos_ids=ints(vocab)), ValueError, "eos_ids must be token ids in"),
        (with_(eos_ids=ints(-1)), ValueError, "eos_ids must be token ids in"),
        (with_(top_k=ints(0, -1, 0)), ValueError, "top_k must be >= 0"),
        (with_(top_p=torch.tensor([1.0, 0.0, 1.0])), ValueError, "top_p must be in"),
        (with_(top_p=torch.tensor([1.0, 1.5, 1.0])), ValueError, "top_p must be in"),
        (with_(temperature=torch.tensor([1.0, -0.5, 1.0])), ValueError, "temperature must be finite"),
        (with_(temperature=torch.tensor([1.0, float("nan"), 1.0])), ValueError, "temperature must be finite"),
        (with_(temperature=torch.tensor([1.0, float("inf"), 1.0])), ValueError, "temperature must be finite"),
        (with_(pad_id=vocab), ValueError, "pad_id must be in"),
        (with_(logits=torch.zeros(batch, 2 * vocab)[:, ::2]), ValueError, "contiguous along the vocabulary"),
        (with_(logits=torch.zeros(vocab)), ValueError, "logits must be 2-D"),
        (with_(lengths=torch.zeros(batch, 1, dtype=torch.int32)), ValueError, "lengths must be 1-D"),
        (with_(temperature=torch.ones(batch, dtype=torch.float64)), TypeError, "temperature must have dtype Float"),
        (with_(seeds=torch.zeros(batch, dtype=torch.int32)), TypeError, "seeds must have dtype Long"),
        (with_(finished=torch.zeros(batch, dtype=torch.uint8)), TypeError, "finished must have dtype Bool"),
        (with_(logits=torch.zeros(batch, vocab, dtype=torch.float16)), TypeError, "logits must have dtype Float or BFloat16"),
        (with_(logits=[[0.0] * vocab] * batch), TypeError, "logits must be a torch.Tensor"),
    ]


@pytest.mark.parametrize("args, error, match", bad_cases())
def test_bad_input_raises(args, error, match):
    with pytest.raises(error, match=match):
        sample_tokens(**args)


@pytest.mark.parametrize("args, error, match", bad_cases()[1:10])
def test_unchecked_bad_values_are_memory_safe(args, error, match):
    """Without the value checks, out-of-range values give some draw, never an invalid read."""
    out = sample_tokens(**args, check_values=False)
    assert ((out.tokens >= 0) & (out.tokens < args["logits"].shape[1])).all()



@pytest.mark.skipif(not torch.cuda.is_available() or not siri.has_cuda_kernels(),
                    reason="needs a CUDA device to put arguments on two devices")
def test_mixed_devices_raise():
    args = make_args(torch.zeros(2, 8, device="cuda"))
    args["top_p"] = args["top_p"].cpu()
    with pytest.raises(ValueError, match="top_p is on cpu but logits is on cuda"):
        sample_tokens(**args)


def test_opcheck(device, gen):
    args = make_args(torch.randn(6, 33, generator=gen).to(device), temperature=0.7, top_k=5,
                     top_p=0.9, seeds=torch.arange(6), positions=4, lengths=2, max_lengths=3,
                     finished=torch.tensor([False, True] * 3), eos_ids=(3,), pad_id=1)
    positional = [args[k] for k in ("logits", "temperature", "top_k", "top_p", "seeds", "positions",
                                    "lengths", "max_lengths", "finished", "eos_ids", "pad_id")]
    torch.library.opcheck(torch.ops.siri.sample_tokens.default, tuple(positional))


def test_traces_under_torch_compile(gen):
    args = make_args(torch.randn(4, 40, generator=gen), temperature=0.8, top_p=0.9,
                     seeds=torch.arange(4), positions=2, eos_ids=(0,))

    def step(logits, **rest):
        out = sample_tokens(logits, **rest)
        return out.tokens, out.finished

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    eager = step(**args)
    for a, b in zip(compiled(**args), eager):  # counter-based noise: the same draw
        assert torch.equal(a, b)


def test_exported_at_package_level():
    assert siri.ops.sample_tokens is sample_tokens
