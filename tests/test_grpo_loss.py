"""siri.ops.grpo_loss (fused GRPO/DAPO loss) vs a float64 eager reference written as verl does."""
import math

import pytest
import torch

from siri.ops import grpo_loss, grpo_loss_reference, token_logprobs_reference


def make_case(n, vocab, gen, dtype=torch.float32, scale=3.0, log_ratio_spread=0.6, mask_frac=0.8):
    """Random logits and targets; old logprobs put the ratio in [e^-spread, e^spread] so
    tokens fall on both sides of both clip bounds; advantages of both signs and zeros."""
    logits = (torch.randn(n, vocab, generator=gen, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    logp, _ = token_logprobs_reference(logits, targets)
    log_ratio = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * log_ratio_spread
    old = (logp - log_ratio).float()
    adv = torch.randn(n, generator=gen)
    adv[torch.rand(n, generator=gen) < 0.1] = 0.0
    mask = torch.rand(n, generator=gen) < mask_frac
    return logits, targets, old, adv, mask


def run_both(device, logits, targets, old, adv, mask, inplace=True, **kw):
    """Loss and dlogits from siri (on `device`) and from the float64 reference."""
    leaf = logits.clone().to(device).requires_grad_()
    x = leaf * 1  # an intermediate, as LM-head logits are, so the in-place backward applies
    ref_kw = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    dev_kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    loss, stats = grpo_loss(x, targets.to(device), old.to(device), adv.to(device), mask.to(device),
                            inplace_backward=inplace, **dev_kw)
    loss.backward()
    xr = logits.double().requires_grad_()
    ref = grpo_loss_reference(xr, targets, old, adv, mask, **ref_kw)
    ref.backward()
    return loss, leaf.grad, ref, xr.grad, stats


def assert_matches(loss, grad, ref, ref_grad, dtype):
    if dtype == torch.bfloat16:
        torch.testing.assert_close(loss.double().cpu(), ref.detach(), rtol=2e-2, atol=2e-2 * abs(ref.item()) + 1e-6)
        torch.testing.assert_close(grad.double().cpu(), ref_grad, rtol=0,
                                   atol=2e-2 * ref_grad.abs().max().item() + 1e-12)
    else:
        torch.testing.assert_close(loss.double().cpu(), ref.detach(), rtol=0, atol=1e-5)
        torch.testing.assert_close(grad.double().cpu(), ref_grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [1, 7, 33, 2049])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_matches_reference(device, gen, dtype, vocab, temperature):
    case = make_case(64, vocab, gen, dtype)
    assert_matches(*run_both(device, *case, temperature=temperature)[:4], dtype)


@pytest.mark.parametrize("clip_c", [None, 3.0])
@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
@pytest.mark.parametrize("inplace", [True, False])
def test_dual_clip_kl_and_backward_modes(device, gen, clip_c, kl_coef, inplace):
    logits, targets, old, adv, mask = make_case(96, 300, gen, log_ratio_spread=1.5)
    ref_logprobs = old + torch.randn(96, generator=gen) * 0.5
    kw = dict(clip_c=clip_c, kl_coef=kl_coef, ref_logprobs=ref_logprobs if kl_coef else None,
              temperature=1.3)
    assert_matches(*run_both(device, logits, targets, old, adv, mask, inplace=inplace, **kw)[:4],
                   torch.float32)


def test_every_clip_region_is_covered_and_counted(device, gen):
    """Ratios far outside both bounds with both advantage signs: clipped rows get no gradient,
    and the clip fractions equal a direct count."""
    logits, targets, old, adv, mask = make_case(400, 64, gen, log_ratio_spread=1.5, mask_frac=0.9)
    loss, grad, ref, ref_grad, stats = run_both(device, logits, targets, old, adv, mask, clip_c=3.0)
    assert_matches(loss, grad, ref, ref_grad, torch.float32)
    logp, _ = token_logprobs_reference(logits, targets)
    ratio = torch.exp(logp - old.double())
    low = (adv < 0) & (ratio < 0.8) & mask
    high = (adv > 0) & (ratio > 1.28) & mask
    dual = (adv < 0) & (ratio > 3.0) & mask
    assert low.any() and high.any() and dual.any(), "the case must exercise every clip"
    count = mask.sum().item()
    assert stats.clip_frac_low.item() == pytest.approx(low.sum().item() / count, abs=1e-6)
    assert stats.clip_frac_high.item() == pytest.approx(high.sum().item() / count, abs=1e-6)
    assert stats.clip_frac_dual.item() == pytest.approx(dual.sum().item() / count, abs=1e-6)
    zero_rows = (low | high | dual | ~mask | (adv == 0)).cpu()
    assert torch.all(grad.cpu()[zero_rows] == 0)
    assert torch.all(grad.cpu()[~zero_rows].abs().sum(-1) > 0)
    assert stats.num_tokens.item() == count
    assert stats.approx_kl.item() == pytest.approx((old.double() - logp)[mask].mean().item(), abs=1e-5)
    assert stats.ratio_mean.item() == pytest.approx(ratio[mask].mean().item(), rel=1e-5)


def test_all_masked_batch_gives_zero_not_nan(device, gen):
    logits, targets, old, adv, mask = make_case(16, 50, gen)
    mask[:] = False
    targets[:] = -100  # padding targets are never read
    loss, grad, *_ = run_both(device, logits, targets, old, adv, mask)
    assert loss.item() == 0.0 and torch.all(grad == 0)


def test_num_tokens_gives_the_global_token_mean(device, gen):
    logits, targets, old, adv, mask = make_case(32, 40, gen)
    for num_tokens in (1000, torch.tensor(1000.0)):
        assert_matches(*run_both(device, logits, targets, old, adv, mask, num_tokens=num_tokens)[:4],
                       torch.float32)


def test_extreme_logits(device, gen):
    logits, targets, old, adv, mask = make_case(24, 100, gen)
    logits[0] = 1e4
    logits[1, ::3] = -1e4
    targets[1] = 1  # not one of the -1e4 entries (row 4 covers that case)
    logits[2, targets[2]] = 1e4
    logits[3] = -1e4
    logits[4, targets[4]] = -1e4
    mask[:5] = True
    ref_logp, _ = token_logprobs_reference(logits, targets)
    old = (ref_logp + 0.1).float()
    # Row 4's token has logprob ~ -1e4, which fp32 stores only to ~1e-3; its log-ratio is put
    # beyond the -20 clamp, where that rounding cannot matter (and the gradient is 0).
    old[4] = ref_logp[4] + 30
    assert_matches(*run_both(device, logits, targets, old, adv, mask)[:4], torch.float32)


def test_full_qwen_vocabulary(device, gen):
    vocab = 151936
    logits, targets, old, adv, mask = make_case(4, vocab, gen)
    assert_matches(*run_both(device, logits, targets, old, adv, mask)[:4], torch.float32)


def test_three_d_shifted_logits_and_inplace_storage(device, gen):
    """[B, T, V] logits sliced as logits[:, :-1] (the next-token shift) are read in place,
    and the in-place backward writes dlogits into the logits' own storage."""
    b, t, vocab = 3, 10, 70
    full = torch.randn(b, t, vocab, generator=gen).to(device)
    weight = torch.ones((), device=device, requires_grad=True)
    logits = (full * weight)[:, :-1]
    targets = torch.randint(0, vocab, (b, t - 1), generator=gen).to(device)
    ref_logp, _ = token_logprobs_reference(logits.detach().cpu(), targets.cpu())
    old = (ref_logp + 0.05).float().to(device)
    adv = torch.randn(b, t - 1, generator=gen).to(device)
    mask = torch.rand(b, t - 1, generator=gen).to(device) < 0.7
    captured = {}
    logits.register_hook(lambda g: captured.setdefault("grad", g))
    xr = logits.detach().cpu().double().requires_grad_()  # before backward overwrites them
    loss, _ = grpo_loss(logits, targets, old, adv, mask)
    loss.backward()
    assert captured["grad"].data_ptr() == logits.data_ptr()
    ref = grpo_loss_reference(xr, targets.cpu(), old.cpu(), adv.cpu(), mask.cpu())
    ref.backward()
    torch.testing.assert_close(loss.double().cpu(), ref.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(captured["grad"].double().cpu(), xr.grad, atol=1e-5, rtol=0)


def test_entropy_stat(device, gen):
    logits, targets, old, adv, mask = make_case(20, 90, gen)
    _, stats = grpo_loss(logits.to(device), targets.to(device), old.to(device), adv.to(device),
                         mask.to(device), return_entropy=True)
    _, entropy = token_logprobs_reference(logits, targets)
    assert stats.entropy.item() == pytest.approx(entropy[mask].mean().item(), abs=1e-5)


def test_gradcheck_float64(device, gen):
    logits, targets, old, adv, mask = make_case(6, 5, gen, dtype=torch.float64, log_ratio_spread=0.1)
    mask[0] = True
    ref_logprobs = old + 0.2
    args = [t.to(device) for t in (targets, old.double(), adv.double(), mask, ref_logprobs.double())]
    x = logits.to(device).requires_grad_()

    def loss_of(logits_in):
        # gradcheck runs backward twice on one graph, which an in-place backward (that
        # consumes the logits) cannot serve; the in-place path is compared elsewhere.
        return grpo_loss(logits_in * 1, *args[:4], ref_logprobs=args[4], kl_coef=0.05,
                         temperature=0.9, inplace_backward=False)[0]

    assert torch.autograd.gradcheck(loss_of, (x,))


def test_opcheck_token_loss(device, gen):
    n = 12
    logp = -torch.rand(n, generator=gen).to(device) * 3
    old = logp + torch.randn(n, generator=gen).to(device) * 0.3
    adv = torch.randn(n, generator=gen).to(device)
    mask = torch.rand(n, generator=gen).to(device) < 0.7
    ref = logp + 0.1
    torch.library.opcheck(torch.ops.siri.grpo_token_loss.default,
                          (logp, old, adv, mask, ref, 0.2, 0.28, 3.0, 0.1))
    torch.library.opcheck(torch.ops.siri.grpo_token_loss.default,
                          (logp, old, adv, mask, None, 0.2, 0.28, 0.0, 0.0))


@pytest.mark.parametrize("kw, error, match", [
    (dict(kl_coef=0.1), ValueError, "needs ref_logprobs"),
    (dict(clip_low=1.5), ValueError, "clip_low must be"),
    (dict(clip_c=0.5), ValueError, "clip_c"),
    (dict(num_tokens=-1), ValueError, "num_tokens must be"),
    (dict(temperature=-1.0), ValueError, "temperature must be"),
])
def test_bad_arguments(gen, kw, error, match):
    logits, targets, old, adv, mask = make_case(4, 10, gen)
    with pytest.raises(error, match=match):
        grpo_loss(logits, targets, old, adv, mask, **kw)


def test_bad_tensors(gen):
    logits, targets, old, adv, mask = make_case(4, 10, gen)
    mask[:] = True
    with pytest.raises(ValueError, match="targets must lie in"):
        grpo_loss(logits, targets.clone().fill_(10), old, adv, mask)
    with pytest.raises(ValueError, match="advantages must have the shape"):
        grpo_loss(logits, targets, old, adv[:3], mask)
    with pytest.raises(TypeError, match="mask must have dtype Bool"):
        grpo_loss(logits, targets, old, adv, mask.float())


def test_loss_is_finite_for_large_log_ratios(device, gen):
    logits, targets, old, adv, mask = make_case(16, 20, gen)
    old = old + torch.tensor([50.0, -50.0] * 8)  # log-ratio beyond the +-20 clamp
    loss, grad, ref, ref_grad, _ = run_both(device, logits, targets, old, adv, mask)
    assert math.isfinite(loss.item()) and torch.isfinite(grad).all()
    # ratios reach e^20, so compare relative to the magnitude
    torch.testing.assert_close(loss.double().cpu(), ref.detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grad.double().cpu(), ref_grad, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_out_of_place_equals_in_place_on_strided_extreme_logits(device, gen, dtype):
    """The three backward paths (in place into an intermediate, out of place into a fresh tensor,
    a leaf) give the same dlogits bit for bit, and match the float64 reference, on a row-strided
    [B, T-1, V] view holding finfo.min and -inf entries. V=8192 makes dlogits 8 MiB in fp32, so
    the out-of-place result is large enough to be backed by huge pages."""
    b, t, vocab = 2, 129, 8192
    full = (torch.randn(b, t, vocab, generator=gen, dtype=torch.float64) * 3).to(dtype)
    full[0, 0, ::7] = torch.finfo(dtype).min
    full[0, 1, 100:] = float("-inf")
    full[1, 2, :] = torch.finfo(dtype).min
    targets = torch.randint(0, 100, (b, t - 1), generator=gen)  # row (0, 1) keeps finite targets
    ref_logp, _ = token_logprobs_reference(full[:, :-1], targets)
    old = (ref_logp + torch.randn(b, t - 1, generator=gen, dtype=torch.float64) * 0.2).float()
    adv = torch.randn(b, t - 1, generator=gen)
    mask = torch.rand(b, t - 1, generator=gen) < 0.8
    mask[0, :3] = True
    mask[1, 2] = True
    args = [x.to(device) for x in (targets, old, adv, mask)]

    def dlogits(kind):
        source = full.clone().to(device).requires_grad_()
        logits = source[:, :-1] if kind == "leaf" else (source * 1)[:, :-1]
        if kind == "leaf":
            logits = logits.detach().requires_grad_()  # a strided leaf
        assert not logits.is_contiguous()
        loss, _ = grpo_loss(logits, *args, inplace_backward=kind == "in_place")
        (grad,) = torch.autograd.grad(loss, logits)
        return loss, grad

    (loss_in, grad_in), (loss_out, grad_out), (loss_leaf, grad_leaf) = map(dlogits, ("in_place", "out", "leaf"))
    assert torch.equal(grad_in, grad_out) and torch.equal(grad_in, grad_leaf)
    assert loss_in.item() == loss_out.item() == loss_leaf.item()
    assert torch.isfinite(grad_out).all() and (grad_out != 0).any()
    xr = full[:, :-1].double().requires_grad_()
    ref = grpo_loss_reference(xr, targets, old, adv, mask)
    ref.backward()
    assert_matches(loss_out, grad_out, ref, xr.grad, dtype)


@pytest.mark.parametrize("inplace", [True, False])
def test_unchecked_targets_give_the_same_loss_and_gradient(device, gen, inplace):
    """check_targets=False (the trainer's path: no device-to-host read) changes nothing when
    the targets are valid, in both backward modes."""
    logits, targets, old, adv, mask = make_case(80, 500, gen)
    results = []
    for check in (True, False):
        leaf = logits.clone().to(device).requires_grad_()
        loss, _ = grpo_loss(leaf * 1, targets.to(device), old.to(device), adv.to(device), mask.to(device),
                            inplace_backward=inplace, check_targets=check)
        loss.backward()
        results.append((loss.detach(), leaf.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def assert_same_with_nan(actual, expected, atol=1e-5):
    """Equal to the float64 reference within atol, NaN exactly where the reference is NaN."""
    actual = actual.double().cpu()
    assert torch.equal(actual.isnan(), expected.isnan())
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol, equal_nan=True)


@pytest.mark.parametrize("kl_coef, clip_c", [(0.0, None), (0.1, 3.0)])
@pytest.mark.parametrize("inplace", [True, False])
def test_a_nan_logit_gives_a_nan_loss_and_gradient(device, gen, kl_coef, clip_c, inplace):
    """One NaN logit in an otherwise normal batch makes that token's logp NaN.
    The loss must be NaN (as the float64 reference's is) so the trainer's non-finite check
    fires; a clamp written with fmin/fmax turned the NaN log-ratio into -20, a finite loss and a
    zero gradient. The NaN row's gradient is NaN, every other row's equals the reference's."""
    logits, targets, old, adv, mask = make_case(24, 40, gen, log_ratio_spread=1.5)
    mask[5] = True
    logits[5, 11] = float("nan")
    ref_logprobs = old + torch.randn(24, generator=gen) * 0.5
    kw = dict(kl_coef=kl_coef, clip_c=clip_c, ref_logprobs=ref_logprobs if kl_coef else None)
    loss, grad, ref, ref_grad, stats = run_both(device, logits, targets, old, adv, mask, inplace=inplace, **kw)
    assert math.isnan(ref.item()), "the float64 reference must show the NaN too"
    assert math.isnan(loss.item())
    assert math.isnan(stats.logp[5].item())
    assert grad[5].isnan().all()
    assert_same_with_nan(grad, ref_grad)
    others = torch.arange(24) != 5
    assert torch.isfinite(grad.cpu()[others]).all()


@pytest.mark.parametrize("inplace", [True, False])
def test_an_unchecked_out_of_range_target_gives_a_nan_loss_and_gradient(device, gen, inplace):
    """check_targets=False with a target outside the vocabulary: logp is NaN, and so must be
    the loss and that row's gradient (they were finite and zero). The reference sees the same
    NaN logp through a NaN in that row's logits; the other rows match it."""
    logits, targets, old, adv, mask = make_case(20, 50, gen)
    mask[7] = True
    bad = targets.clone()
    bad[7] = 50 + 3
    leaf = logits.clone().to(device).requires_grad_()
    loss, stats = grpo_loss(leaf * 1, bad.to(device), old.to(device), adv.to(device), mask.to(device),
                            inplace_backward=inplace, check_targets=False)
    loss.backward()
    assert math.isnan(stats.logp[7].item()) and math.isnan(loss.item())
    assert leaf.grad[7].isnan().all()
    nan_logits = logits.double().clone()
    nan_logits[7, 0] = float("nan")  # the same NaN logp for row 7 in the reference
    xr = nan_logits.requires_grad_()
    ref = grpo_loss_reference(xr, targets, old, adv, mask)
    ref.backward()
    assert math.isnan(ref.item())
    assert_same_with_nan(leaf.grad, xr.grad)


@pytest.mark.parametrize("field", ["logp", "old", "ref"])
def test_token_loss_propagates_nan_from_its_clamped_inputs(device, gen, field):
    """grpo_token_loss (the header math CPU and CUDA share): a NaN logp, old or ref logprob
    (the inputs of the +-20 clamps) of a masked-in token gives NaN loss and NaN d loss / d logp
    for that token only, like torch.clamp and torch.maximum in the reference."""
    n = 8
    logp = (-torch.rand(n, generator=gen, dtype=torch.float64) * 3)
    inputs = dict(logp=logp, old=logp + torch.randn(n, generator=gen, dtype=torch.float64) * 0.3,
                  adv=torch.randn(n, generator=gen, dtype=torch.float64),
                  ref=logp + torch.randn(n, generator=gen, dtype=torch.float64) * 0.3)
    inputs[field][2] = float("nan")
    mask = torch.ones(n, dtype=torch.bool)
    loss, dloss, _ = torch.ops.siri.grpo_token_loss(*(inputs[k].float().to(device) for k in ("logp", "old", "adv")),
                                                    mask.to(device), inputs["ref"].float().to(device),
                                                    0.2, 0.28, 3.0, 0.1)
    lp = inputs["logp"].clone().requires_grad_()
    adv, old, ref = inputs["adv"], inputs["old"], inputs["ref"]
    ratio = torch.exp(torch.clamp(lp - old, -20.0, 20.0))
    pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.28))
    pg = torch.where(adv < 0, torch.minimum(pg, -adv * 3.0), pg)
    kl = torch.clamp(ref - lp, -20.0, 20.0)
    expected = pg + 0.1 * torch.clamp(torch.exp(kl) - kl - 1, -10.0, 10.0)
    assert math.isnan(expected[2].item())
    assert math.isnan(loss[2].item()) and math.isnan(dloss[2].item())
    keep = torch.arange(n) != 2
    (expected_grad,) = torch.autograd.grad(expected[keep].sum(), lp)
    torch.testing.assert_close(loss.double().cpu()[keep], expected.detach()[keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(dloss.double().cpu()[keep], expected_grad[keep], rtol=0, atol=1e-5)
