"""siri.ops.token_logprobs (selective log-softmax) and its gradient vs float64 references."""
import pytest
import torch

from siri.ops import token_logprobs, token_logprobs_reference

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-5, torch.float64: 1e-10}


def _logits(shape, dtype, gen, scale=3.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("vocab", [1, 7, 33, 2048, 2049, 5000])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_matches_reference(device, gen, dtype, vocab, temperature):
    logits = _logits((13, vocab), dtype, gen)
    targets = torch.randint(0, vocab, (13,), generator=gen)
    logp, entropy = token_logprobs(logits.to(device), targets.to(device), temperature=temperature,
                                   return_entropy=True)
    ref_logp, ref_entropy = token_logprobs_reference(logits, targets, temperature)
    expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert logp.dtype == expected_dtype and entropy.dtype == expected_dtype
    tol = TOL[dtype] * max(1.0, ref_logp.abs().max().item())
    torch.testing.assert_close(logp.cpu().double(), ref_logp, atol=tol, rtol=0)
    torch.testing.assert_close(entropy.cpu().double(), ref_entropy, atol=TOL[dtype] * 10, rtol=0)


def test_full_qwen_vocabulary(device, gen):
    vocab = 151936
    logits = _logits((3, vocab), torch.float32, gen)
    targets = torch.randint(0, vocab, (3,), generator=gen)
    logp = token_logprobs(logits.to(device), targets.to(device))
    ref, _ = token_logprobs_reference(logits, targets)
    torch.testing.assert_close(logp.cpu().double(), ref, atol=2e-5, rtol=0)


def test_extreme_and_infinite_logits(device, gen):
    logits = _logits((6, 300), torch.float32, gen)
    logits[0, :] = 1e4
    logits[1, ::2] = -1e4
    logits[2, 5] = 1e4
    logits[3, 10:] = float("-inf")
    logits[4, :] = -1e4
    targets = torch.tensor([3, 1, 5, 2, 0, 299])
    logp, entropy = token_logprobs(logits.to(device), targets.to(device), return_entropy=True)
    ref_logp, ref_entropy = token_logprobs_reference(logits, targets)
    assert torch.isfinite(logp).all() and torch.isfinite(entropy).all()
    torch.testing.assert_close(logp.cpu().double(), ref_logp, atol=1e-4, rtol=0)
    torch.testing.assert_close(entropy.cpu().double(), ref_entropy, atol=1e-4, rtol=0)


def test_three_d_and_row_strided_views_are_read_in_place(device, gen):
    logits = _logits((2, 9, 50), torch.float32, gen).to(device)
    targets = torch.randint(0, 50, (2, 9), generator=gen).to(device)
    shifted = logits[:, :-1]  # the usual next-token shift: not contiguous as [B*T, V]
    assert not shifted.is_contiguous()
    logp = token_logprobs(shifted, targets[:, 1:])
    ref, _ = token_logprobs_reference(shifted.cpu(), targets[:, 1:].cpu())
    assert logp.shape == (2, 8)
    torch.testing.assert_close(logp.cpu().double(), ref, atol=1e-5, rtol=0)


def test_masked_rows_are_skipped_and_may_hold_any_target(device, gen):
    logits = _logits((8, 40), torch.float32, gen)
    targets = torch.randint(0, 40, (8,), generator=gen)
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    targets[~mask] = -100  # HF ignore_index on padding
    logp, entropy = token_logprobs(logits.to(device), targets.to(device), return_entropy=True,
                                   mask=mask.to(device))
    ref, _ = token_logprobs_reference(logits, targets)
    assert torch.all(logp.cpu()[~mask] == 0) and torch.all(entropy.cpu()[~mask] == 0)
    torch.testing.assert_close(logp.cpu().double()[mask], ref[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_matches_reference(device, gen, dtype):
    logits = _logits((11, 777), dtype, gen)
    targets = torch.randint(0, 777, (11,), generator=gen)
    weights = torch.randn(11, generator=gen, dtype=torch.float64)
    x = logits.clone().to(device).requires_grad_()
    (token_logprobs(x, targets.to(device), temperature=0.8).double() * weights.to(device)).sum().backward()
    xr = logits.detach().double().requires_grad_()
    (token_logprobs_reference(xr, targets, 0.8)[0] * weights).sum().backward()
    atol = 1e-5 if dtype == torch.float32 else 2e-2 * xr.grad.abs().max().item()
    torch.testing.assert_close(x.grad.cpu().double(), xr.grad, atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [7, 50257])
@pytest.mark.parametrize("return_entropy", [False, True])
def test_odd_vocabulary_rows_at_every_alignment(device, gen, dtype, vocab, return_entropy):
    """Rows of an odd vocabulary start at every offset from a 16-byte boundary: the CUDA kernels
    peel a scalar head before their 16-byte loads (forward), and the backward vectorises where
    the logits and the gradient share an offset. The forward without entropy is its own kernel."""
    full = _logits((9, vocab + 1), dtype, gen).to(device).requires_grad_()
    logits = full[:, 1:]  # rows start at r * (V + 1) + 1 elements: every alignment
    targets = torch.randint(0, vocab, (9,), generator=gen)
    weights = torch.randn(9, generator=gen, dtype=torch.float64)
    out = token_logprobs(logits, targets.to(device), temperature=0.8, return_entropy=return_entropy)
    logp = out[0] if return_entropy else out
    (logp.double() * weights.to(device)).sum().backward()

    reference = full.detach().cpu().double()[:, 1:].requires_grad_()
    ref_logp, ref_entropy = token_logprobs_reference(reference, targets, 0.8)
    (ref_logp * weights).sum().backward()
    tol = TOL[dtype] * max(1.0, ref_logp.abs().max().item())
    torch.testing.assert_close(logp.detach().cpu().double(), ref_logp.detach(), atol=tol, rtol=0)
    if return_entropy:
        torch.testing.assert_close(out[1].cpu().double(), ref_entropy.detach(), atol=TOL[dtype] * 10, rtol=0)
    grad = full.grad.cpu().double()
    assert torch.all(grad[:, 0] == 0)
    atol = 1e-5 if dtype == torch.float32 else 2e-2 * reference.grad.abs().max().item()
    torch.testing.assert_close(grad[:, 1:], reference.grad, atol=atol, rtol=0)

    # in place (logits and gradient share every offset) and into a fresh tensor: the same values
    _, stats, _ = torch.ops.siri.token_logprobs(logits.detach(), targets.to(device), None, 0.8, False)
    scale = weights.to(device=device, dtype=stats.dtype)
    fresh = torch.ops.siri.logits_grad(logits.detach(), targets.to(device), stats, scale, 0.8)
    in_place = logits.detach().clone()
    torch.ops.siri.logits_grad_(in_place, targets.to(device), stats, scale, 0.8)
    torch.testing.assert_close(in_place, fresh)


def test_gradcheck_float64(device, gen):
    logits = _logits((4, 6), torch.float64, gen).to(device).requires_grad_()
    targets = torch.randint(0, 6, (4,), generator=gen).to(device)
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, targets, temperature=0.9), (logits,))


def test_opcheck(device, gen):
    logits = _logits((5, 37), torch.float32, gen).to(device)
    targets = torch.randint(0, 37, (5,), generator=gen).to(device)
    mask = torch.tensor([True, False, True, True, True], device=device)
    torch.library.opcheck(torch.ops.siri.token_logprobs.default, (logits, targets, mask, 0.7, True))
    torch.library.opcheck(torch.ops.siri.token_logprobs.default,
                          (logits.requires_grad_(), targets, None, 1.0, False))
    _, stats, _ = torch.ops.siri.token_logprobs(logits.detach(), targets, None, 1.0, False)
    scale = torch.randn(5, generator=gen).to(device)
    torch.library.opcheck(torch.ops.siri.logits_grad.default, (logits.detach(), targets, stats, scale, 1.0))
    torch.library.opcheck(torch.ops.siri.logits_grad_.default,
                          (logits.detach().clone(), targets, stats, scale, 1.0))


@pytest.mark.parametrize("call, error, match", [
    (lambda: token_logprobs(torch.zeros(3, 5), torch.tensor([0, 5, 1])), ValueError, "targets must lie in"),
    (lambda: token_logprobs(torch.zeros(3, 5), torch.tensor([0, -1, 1])), ValueError, "targets must lie in"),
    (lambda: token_logprobs(torch.zeros(3, 5), torch.zeros(3, dtype=torch.int32)), TypeError, "targets must have dtype Long"),
    (lambda: token_logprobs(torch.zeros(3, 5, dtype=torch.float16), torch.zeros(3, dtype=torch.long)), TypeError, "logits must be float32"),
    (lambda: token_logprobs(torch.zeros(3, 5), torch.zeros(4, dtype=torch.long)), ValueError, "targets must have shape"),
    (lambda: token_logprobs(torch.zeros(5, 3).t(), torch.zeros(3, dtype=torch.long)), ValueError, "contiguous in its last"),
    (lambda: token_logprobs(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), temperature=0.0), ValueError, "temperature must be"),
    (lambda: token_logprobs(torch.zeros(5), torch.zeros((), dtype=torch.long)), ValueError, r"must be \[N, V\]"),
    (lambda: token_logprobs(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), mask=torch.ones(3)), TypeError, "mask must have dtype Bool"),
])
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_unchecked_targets_change_nothing_for_valid_targets(device, gen):
    """check_targets=False (the trainer's path, no device-to-host read) gives the same logp
    and gradient when the targets are valid."""
    logits = torch.randn(37, 1000, generator=gen).to(device).requires_grad_()
    targets = torch.randint(0, 1000, (37,), generator=gen).to(device)
    weights = torch.randn(37, generator=gen).to(device)
    results = []
    for check in (True, False):
        logits.grad = None
        logp = token_logprobs(logits, targets, 0.7, check_targets=check)
        (logp * weights).sum().backward()
        results.append((logp.detach(), logits.grad.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_unchecked_out_of_range_targets_are_nan_and_never_read(device, gen):
    logits = torch.randn(4, 50, generator=gen, dtype=torch.float64).to(device)
    targets = torch.tensor([3, -1, 50, 1 << 40], device=device)
    logp, stats, _ = torch.ops.siri.token_logprobs(logits, targets, None, 1.0, False, False)
    assert torch.isfinite(logp[0]) and torch.isnan(logp[1:]).all()
    # backward: a row without a valid target gets the softmax term only (no write at the target)
    grad = torch.ops.siri.logits_grad(logits, targets, stats, torch.ones(4, dtype=torch.float64, device=device),
                                      1.0, False)
    softmax = torch.softmax(logits, -1)
    expected = -softmax
    expected[0, 3] += 1
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="targets must lie in"):
        token_logprobs(logits, targets)
