"""siri.integrations.trl: a siri length schedule inside TRL's GRPOTrainer. A tiny model trains a
few steps under a cap that changes every step; TRL's own logs show that no completion outran
its step's cap, that the cap was the schedule's, and that the truncated completions scored 0;
checkpoints land after the schedule's peaks and troughs."""
import json
from types import SimpleNamespace

import pytest
import torch
import yaml

pytest.importorskip("trl", reason="TRL is not installed (pip install 'siri[trl]')")

from datasets import Dataset  # noqa: E402  (TRL needs datasets; both come with the extra)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from siri.algo.schedule import make_schedule  # noqa: E402
from siri.config import Config  # noqa: E402
from siri.integrations.trl import MARKER, CappedReward, LengthScheduleCallback, as_schedule  # noqa: E402
from siri.models.tiny_lm import build_model, build_tokenizer  # noqa: E402

STEPS = 4
SCHEDULE = {"kind": "cosine", "l_max": 8, "l_min": 2, "period": 4}      # caps 8, 5, 2, 5: a change every step


def always_one(prompts, completions, completion_ids, **kwargs):
    """A reward function of TRL's form: 1 for every completion."""
    return [1.0] * len(completion_ids)


def tiny_policy(stop_probability=0.1):
    """A tiny random Qwen2 model and its chat tokenizer. The EOS logit is raised so that each
    sampled token is EOS with about ``stop_probability``: under caps of 2-8 tokens a step has
    both finished and truncated completions."""
    corpus = [f"What is {a} + {b}? The answer is {a + b}." for a in range(20) for b in range(20)]
    tokenizer = build_tokenizer(corpus, vocab_size=300)
    vocab = len(tokenizer)
    model = build_model(vocab, hidden_size=64, layers=1, heads=2, kv_heads=1, max_positions=256,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    bias = torch.zeros(vocab)
    bias[tokenizer.eos_token_id] = float(torch.tensor((vocab - 1) * stop_probability / (1 - stop_probability)).log())
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: out + bias.to(out.dtype))
    return model, tokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trl")
    model, tokenizer = tiny_policy()
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {a} + 1?"}]} for a in range(16)])
    length = LengthScheduleCallback(SCHEDULE)
    args = GRPOConfig(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=length.longest_cap(STEPS), learning_rate=1e-5, beta=0.0,
                      loss_type="dapo", logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                      seed=0, disable_tqdm=True, temperature=1.0)
    trainer = GRPOTrainer(model=model, reward_funcs=[length.capped(always_one)], args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    length.attach(trainer)
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "completions/max_length" in entry]
    return out, steps, make_schedule(**SCHEDULE)


def test_every_step_generates_under_the_schedules_cap(trained):
    _, steps, schedule = trained
    assert [entry["step"] for entry in steps] == list(range(1, STEPS + 1))
    caps = [schedule(t) for t in range(STEPS)]
    assert caps == [8, 5, 2, 5]
    clipped = 0
    for t, entry in enumerate(steps):
        assert entry["completions/max_length"] <= caps[t], (t, entry)
        if entry["completions/clipped_ratio"] > 0:
            # TRL counts a completion clipped when it ends without EOS: it then has exactly the cap's length
            assert entry["completions/max_length"] == caps[t], (t, entry)
            clipped += 1
        assert entry["siri/cap"] == caps[t]
        assert entry["siri/compressing"] == float(schedule.phase(t) == "compress")
    assert clipped >= STEPS - 1, "almost every step should truncate some completion, else the caps go unseen"


def test_truncated_completions_score_zero(trained):
    """The reward is 1 for every completion, so TRL's mean reward is the share TRL itself
    counts as not truncated."""
    _, steps, _ = trained
    for entry in steps:
        assert entry["reward"] == pytest.approx(1.0 - entry["completions/clipped_ratio"], abs=1e-6), entry
    assert any(0 < entry["completions/clipped_ratio"] < 1 for entry in steps), "no step mixed finished and truncated"


def test_checkpoints_after_peaks_and_troughs(trained):
    out, _, schedule = trained
    assert schedule.peaks(STEPS) == [0] and schedule.troughs(STEPS) == [2]
    saved = sorted(p.name for p in out.glob("checkpoint-*"))
    assert saved == ["checkpoint-1", "checkpoint-3"]        # after step 0 (peak) and step 2 (trough)
    marks = [json.loads((out / name / MARKER).read_text()) for name in saved]
    assert [(m["kind"], m["last_step_cap"], m["phase"]) for m in marks] == [("peak", 8, "expand"),
                                                                             ("trough", 2, "compress")]
    assert marks[0]["schedule"] == schedule.to_dict()


def test_capped_reward_judges_eos_within_the_steps_cap():
    schedule = make_schedule("piecewise", points=[[0, 3], [1, 5]])
    reward = CappedReward(always_one, eos_token_ids=[7, 9], schedule=schedule, truncated_reward=-1.0)
    ids = [[1, 7], [1, 2, 3], [1, 2, 3, 9], [9]]
    step0 = reward(prompts=None, completions=None, completion_ids=ids, trainer_state=SimpleNamespace(global_step=0))
    assert step0 == [1.0, -1.0, -1.0, 1.0]                  # EOS at the 4th token is past a cap of 3
    step1 = reward(prompts=None, completions=None, completion_ids=ids, trainer_state=SimpleNamespace(global_step=1))
    assert step1 == [1.0, -1.0, 1.0, 1.0]
    assert CappedReward(always_one, 7)(completion_ids=ids) == [1.0, 0.0, 0.0, 0.0]   # no schedule: all ids
    assert reward.__name__ == "always_one"


def test_capped_reward_errors_name_the_problem():
    with pytest.raises(ValueError, match="no eos_token_ids"):
        CappedReward(always_one)(completion_ids=[[1]])
    with pytest.raises(ValueError, match="needs completion_ids"):
        CappedReward(always_one, 2)(completions=["a"])

    async def remote(**kwargs):
        return []

    class Remote:
        async def __call__(self, **kwargs):
            return []

    for fn in (remote, Remote()):
        with pytest.raises(ValueError, match="async"):
            CappedReward(fn, 2)
    with pytest.raises(ValueError, match="returned 1 rewards for 2"):
        CappedReward(lambda **kw: [1.0], 2)(completion_ids=[[1], [2]])


def test_schedule_sources(tmp_path):
    expected = make_schedule(**SCHEDULE)
    assert as_schedule(SCHEDULE) == expected and as_schedule(expected) is expected
    config = Config(schedule=dict(SCHEDULE))
    assert as_schedule(config) == config.length_schedule() == as_schedule({"schedule": dict(SCHEDULE)})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"schedule": SCHEDULE, "rollout": {"page_size": 2}}))
    assert as_schedule(path) == make_schedule(**SCHEDULE, multiple_of=2)
    with pytest.raises(ValueError, match="l_min"):
        as_schedule({"kind": "cosine", "l_max": 4, "l_min": 8, "period": 4})
    with pytest.raises(ValueError, match="got int"):
        as_schedule(3)


def fake_trainer(**args):
    """The attributes of a TRL GRPOTrainer that attach() and the cap touch (its vLLM path)."""
    callbacks = []
    return SimpleNamespace(
        max_completion_length=99, eos_token_ids=[5], _metrics={"train": {}}, reward_funcs=[],
        add_callback=callbacks.append, callback_handler=SimpleNamespace(callbacks=callbacks),
        state=SimpleNamespace(global_step=2), use_vllm=True, vllm_generation=SimpleNamespace(max_completion_length=99),
        args=SimpleNamespace(max_steps=8, **args))


def test_attach_sets_the_vllm_cap_and_checks_its_context():
    trainer = fake_trainer(vllm_max_model_length=64)
    length = LengthScheduleCallback(SCHEDULE).attach(trainer)
    assert trainer.callback_handler.callbacks == [length]
    assert trainer.vllm_generation.max_completion_length == trainer.max_completion_length == 2   # step 2's cap
    with pytest.raises(ValueError, match=r"vllm_max_model_length \(8\) must exceed"):
        LengthScheduleCallback(SCHEDULE).attach(fake_trainer(vllm_max_model_length=8))
    with pytest.raises(ValueError, match="TRL .* GRPOTrainer"):
        LengthScheduleCallback(SCHEDULE).attach(object())
