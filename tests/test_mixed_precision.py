"""Training at the paper's lr in bf16: fp32 master weights make the updates land, the
checkpoint holds them in fp32, and a resume from it continues exactly.

At lr 1e-6 an AdamW update (~1e-6 per element) is far below bf16's resolution around the
weights (~2e-4 at 0.05), so pure bf16 training rounds it away; the pure-bf16 run below is the
control that shows the test can fail."""
import json

import pytest
import torch

from siri import Trainer, load_config
from siri.train.precision import compute_copy
from tiny_models import tiny_model
from training_run import deterministic, update_stats, weights

STEPS = 3


def run(workspace, run_dir, *overrides, steps=STEPS):
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={run_dir}", f"trainer.steps={steps}",
                                                  "optim.lr=1e-6", "trainer.save_rollouts=false",
                                                  "trainer.save_every=2",
                                                  # the test reward scores truncated responses too, so
                                                  # every group has unequal rewards and a gradient
                                                  "reward.truncated_reward=null",
                                                  *overrides])
    metrics = []
    Trainer(cfg, callbacks=[metrics.append]).fit()
    return metrics


@pytest.fixture(scope="module")
def runs(workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    out = {}
    for name, dtype, param_dtype in (("fp32", "float32", "float32"), ("mixed", "bfloat16", "float32"),
                                     ("pure_bf16", "bfloat16", "bfloat16")):
        metrics = run(workspace, root / name, f"model.dtype={dtype}", f"model.param_dtype={param_dtype}")
        out[name] = (root / name, metrics)
    return out


def test_bf16_compute_with_fp32_master_weights_applies_the_update(workspace, runs):
    initial = weights(workspace / "model")
    stats = {}
    for name, (directory, _) in runs.items():
        final = weights(directory / "checkpoints" / f"step_{STEPS}")
        # against the initial weights as that run holds them (pure bf16 rounds them at load)
        stats[name] = update_stats({k: v.to(final[k].dtype) for k, v in initial.items()}, final)
    assert all(m["optimizer_steps"] > 0 and m["grad_norm"] > 0 for _, ms in runs.values() for m in ms)
    fp32_fraction, fp32_norm = stats["fp32"]
    mixed_fraction, mixed_norm = stats["mixed"]
    bf16_fraction, bf16_norm = stats["pure_bf16"]
    print(f"changed fraction / update norm: fp32 {fp32_fraction:.3f} / {fp32_norm:.3g}, mixed "
          f"{mixed_fraction:.3f} / {mixed_norm:.3g}, pure bf16 {bf16_fraction:.4f} / {bf16_norm:.3g}")
    assert fp32_fraction > 0.5
    assert mixed_fraction > 0.5
    assert 0.5 < mixed_norm / fp32_norm < 2.0
    # the control: in pure bf16 almost nothing moves, or moves by whole bf16 steps
    assert bf16_fraction < 0.1 or not 0.5 < bf16_norm / fp32_norm < 2.0


def test_mixed_checkpoint_holds_fp32_master_weights(runs):
    directory = runs["mixed"][0] / "checkpoints" / f"step_{STEPS}"
    saved = weights(directory)
    assert {t.dtype for t in saved.values()} == {torch.float32}
    config = json.loads((directory / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float32"
    # the pure-bf16 run keeps (and saves) bf16 weights: it has no master copy
    assert {t.dtype for t in weights(runs["pure_bf16"][0] / "checkpoints" / f"step_{STEPS}").values()} \
        == {torch.bfloat16}


def test_mixed_precision_resume_is_exact(workspace, runs, tmp_path):
    """2 steps, then a new Trainer resumes from step_2's fp32 master weights and Adam state:
    the metrics and the final master weights equal the uninterrupted mixed run's bit for bit."""
    resumed_dir = tmp_path / "resumed"
    first = run(workspace, resumed_dir, "model.dtype=bfloat16", steps=2)
    second = run(workspace, resumed_dir, "model.dtype=bfloat16")
    assert [m["step"] for m in first + second] == list(range(STEPS))
    assert deterministic(first + second) == deterministic(runs["mixed"][1])
    a = weights(resumed_dir / "checkpoints" / f"step_{STEPS}")
    b = weights(runs["mixed"][0] / "checkpoints" / f"step_{STEPS}")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_compute_copy_rounds_each_parameter_and_keeps_ties():
    model = tiny_model("qwen2", tie_word_embeddings=True)
    copy = compute_copy(model, torch.bfloat16)
    assert copy.lm_head.weight is copy.model.embed_tokens.weight
    for (name, p), (_, q) in zip(model.named_parameters(), copy.named_parameters()):
        assert q.dtype == torch.bfloat16 and torch.equal(q, p.to(torch.bfloat16)), name
        assert q.data_ptr() != p.data_ptr()
    assert model.lm_head.weight.dtype == torch.float32          # the source is untouched


def adamw_two_steps(eager: bool, *, mixed: bool, amsgrad: bool = False):
    """Two AdamW steps on a tiny model, with the state allocated eagerly (before the first
    step, as the trainer does) or lazily by torch's first step. Mixed: fp32 master weights
    and a bf16 compute copy (PolicyWeights' master layout); else one fp32 model. One
    parameter gets no gradient in the first step, so lazy init skips it there."""
    from siri.train.precision import PolicyWeights, init_optimizer_state

    model = tiny_model("qwen2", seed=3)
    weights = PolicyWeights(model, compute_dtype=torch.bfloat16 if mixed else torch.float32,
                            param_dtype=torch.float32)
    optimizer = torch.optim.AdamW(weights.optimizer_parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-8,
                                  weight_decay=0.1, amsgrad=amsgrad)
    if eager:
        allocated = init_optimizer_state(optimizer)
        params = weights.optimizer_parameters()
        moments = 3 if amsgrad else 2
        assert allocated == moments * sum(p.numel() * p.element_size() for p in params)
        for p in params:
            state = optimizer.state[p]
            assert torch.equal(state["exp_avg"], torch.zeros_like(p)) and float(state["step"]) == 0
    g = torch.Generator().manual_seed(11)
    weights.train_model.train()
    for step in range(2):
        ids = torch.randint(0, 256, (2, 12), generator=g)
        logits = weights.train_model(input_ids=ids).logits.float()
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        if step == 0:
            weights.train_model.model.norm.weight.grad = None
        weights.accumulate_gradients()
        optimizer.step()
        weights.after_optimizer_step()
        weights.zero_grad()
    return weights, optimizer


@pytest.mark.parametrize("mixed, amsgrad", [(False, False), (True, False), (True, True)])
def test_eager_optimizer_state_trains_bitwise_like_lazy_init(mixed, amsgrad):
    """The trainer allocates AdamW's moments when it builds the optimizer, so the KV pool's
    sizing sees them: the parameters (master and compute copy) and the optimizer state after
    2 steps are bit for bit those of torch's lazy initialisation."""
    eager, eager_opt = adamw_two_steps(True, mixed=mixed, amsgrad=amsgrad)
    lazy, lazy_opt = adamw_two_steps(False, mixed=mixed, amsgrad=amsgrad)
    for module in ("master_model", "train_model"):
        a = dict(getattr(eager, module).named_parameters())
        b = dict(getattr(lazy, module).named_parameters())
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), f"{module}.{name}"
    eager_state, lazy_state = eager_opt.state_dict()["state"], lazy_opt.state_dict()["state"]
    # the parameter without a gradient at step 0 took one step; torch's lazy init gave it state then
    assert eager_state.keys() == lazy_state.keys()
    for index in eager_state:
        for key, value in lazy_state[index].items():
            other = eager_state[index][key]
            assert other.dtype == value.dtype and other.device == value.device and torch.equal(other, value), \
                (index, key)
    # and the moments changed the weights: the test is not comparing two untouched models
    assert not torch.equal(dict(eager.master_model.named_parameters())["model.norm.weight"],
                           dict(tiny_model("qwen2", seed=3).named_parameters())["model.norm.weight"])


def test_init_optimizer_state_rejects_other_optimizers():
    from siri.train.precision import init_optimizer_state

    with pytest.raises(TypeError, match="Adam and AdamW"):
        init_optimizer_state(torch.optim.SGD(tiny_model("qwen2").parameters(), lr=0.1))
