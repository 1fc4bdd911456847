"""Config: YAML + dotted overrides -> dataclasses, and validation with clear errors."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from siri.config import Config, ConfigError, apply_overrides, config_from_dict, config_to_dict, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
DEMO_CONFIGS = sorted((REPO / "siri" / "demo").glob("*.yaml"))


def write(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def data_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "1+1?", "answer": "2"}\n')
    return str(path)


def test_defaults_are_the_paper_recipe():
    cfg = Config()
    assert (cfg.algo.clip_low, cfg.algo.clip_high, cfg.algo.kl_coef) == (0.2, 0.28, 0.0)
    assert cfg.optim.lr == 1e-6 and cfg.rollout.temperature == 1.0
    assert cfg.algo.filter_metric == "acc"   # dynamic sampling filters on accuracy, as DAPO
    assert cfg.schedule == dict(kind="cosine", l_max=16384, l_min=8192, period=640)
    s = cfg.length_schedule()
    assert (s(0), s(320), s(640)) == (16384, 8192, 16384)


def test_yaml_and_overrides_fill_the_dataclasses(tmp_path):
    path = write(tmp_path, {"trainer": {"steps": 5}, "data": {"train": data_file(tmp_path)},
                            "schedule": {"kind": "constant", "l_max": 64}})
    cfg = load_config(path, ["trainer.steps=7", "optim.lr=3e-4", "data.instruction=null",
                             "optim.betas=[0.8, 0.9]", "schedule.multiple_of=8"])
    assert cfg.trainer.steps == 7 and cfg.optim.lr == 3e-4 and cfg.data.instruction is None
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.length_schedule()(0) == 64
    # round trip through a plain dict
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


def test_overrides_do_not_mutate_the_input():
    base = {"trainer": {"steps": 1}}
    out = apply_overrides(base, ["trainer.steps=2", "algo.clip_c=3"])
    assert base == {"trainer": {"steps": 1}} and out == {"trainer": {"steps": 2}, "algo": {"clip_c": 3}}


@pytest.mark.parametrize("overrides, message", [
    (["trainer.stepz=3"], "unknown config key 'trainer.stepz'; did you mean 'trainer.steps'"),
    (["trainer.steps=ten"], "'trainer.steps' must be an integer"),
    (["trainer.steps=0"], "'trainer.steps' must be >= 1"),
    (["schedule.l_min=20000"], "l_min"),
    (["rollout.prompts_per_step=10", "algo.mini_batches=3"], "must be divisible by 'algo.mini_batches'"),
    (["rollout.group_size=1"], "'rollout.group_size' must be >= 2"),
    (["algo.clip_c=0.5"], "'algo.clip_c'"),
    (["algo.old_logprobs=engine", "algo.ppo_epochs=2"], "exactly on-policy"),
    (["model.dtype=fp8"], "'model.dtype' must be one of"),
    (["reward.fn=no_such_module:f"], "'reward.fn'"),
    (["schedule.kind=zigzag"], "unknown schedule kind"),
    (["trainer.resume=/no/such/checkpoint"], "'trainer.resume'"),
    (["trainer=3"], "config section 'trainer' must be a mapping"),
    (["trainerSteps"], "must look like section.key=value"),
    (["algo.max_sampling_rounds=0"], "'algo.max_sampling_rounds' must be >= 1"),
    (["reward.workers=-1"], "'reward.workers' must be >= 0"),
    (["reward.overlong_buffer=-4"], "'reward.overlong_buffer' must be >= 0"),
    (["reward.overlong_buffer=16384"], "must be smaller than the schedule's shortest cap"),
    (["reward.overlong_penalty=-1"], "'reward.overlong_penalty' must be >= 0"),
    (["reward.length_reward=shortest"], "'reward.length_reward' must be one of"),
    (["algo.filter_metric=score"], "'algo.filter_metric' must be one of ['acc', 'reward']"),
    (["reward.length_reward=l1_target"], "needs 'reward.length_target'"),
    (["reward.length_reward=kimi", "reward.length_reward_weight=-1"], "'reward.length_reward_weight'"),
    (["trainer.eval_every=5"], "'eval.data' is null"),
    (["eval.data=/no/such/eval.jsonl"], "'eval.data': no such file"),
    (["eval.n=0"], "'eval.n' must be >= 1"),
    (["eval.n=5000"], "'eval.n' (5000) exceeds"),
    (["eval.max_tokens=0"], "'eval.max_tokens' must be >= 1"),
    (["eval.temperature=0"], "'eval.temperature' must be > 0"),
])
def test_bad_values_are_named(tmp_path, overrides, message):
    path = write(tmp_path, {"data": {"train": data_file(tmp_path)}, "trainer": {"steps": 3}})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(path, overrides)


def test_missing_files_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    path = write(tmp_path, {"data": {"train": str(tmp_path / "missing.jsonl")}})
    with pytest.raises(ConfigError, match="'data.train': no such file"):
        load_config(path)
    path = write(tmp_path, {"data": {"train": "deepscaler", "path": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match="'data.path': no such file"):
        load_config(path)


def test_cap_above_the_models_positions_is_an_error(tmp_path):
    from tiny_models import tiny_model

    tiny_model(max_position_embeddings=256).save_pretrained(tmp_path / "model")
    path = write(tmp_path, {"model": {"path": str(tmp_path / "model")}, "data": {"train": data_file(tmp_path),
                            "max_prompt_tokens": 64}, "schedule": {"kind": "cosine", "l_max": 256, "l_min": 128,
                                                                   "period": 10}, "trainer": {"steps": 10}})
    with pytest.raises(ConfigError, match="exceeds the model's max_position_embeddings \\(256\\)"):
        load_config(path)
    assert load_config(path, ["schedule.l_max=192"]).schedule["l_max"] == 192


@pytest.mark.parametrize("path", CONFIGS + DEMO_CONFIGS, ids=[p.name for p in CONFIGS + DEMO_CONFIGS])
def test_shipped_configs_validate(path):
    # the demo's configs (siri/demo/) name their model and data relative to the demo's
    # directory, which `siri demo` fills in; their files do not exist before that
    cfg = load_config(path, check_files=path not in DEMO_CONFIGS)
    assert cfg.trainer.steps > 0


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_in_configs_says_how_to_run_it(path):
    """configs/ holds what a user can run as it is, each with the command in a comment."""
    comments = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(f"siri train configs/{path.name}" in line for line in comments)


def test_paper_recipe_dry_run_prints_config_and_key_caps():
    """`siri train CONFIG --dry-run` validates without downloading anything."""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "siri", "train", str(REPO / "configs/siri_r1_distill_qwen_1.5b.yaml"),
                          "--dry-run"], capture_output=True, text=True, env=env, cwd=REPO.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" in text and "l_min: 8192" in text
    for step, cap in ((0, 16384), (320, 8192), (640, 16384), (1600, 8192), (1919, 16384)):
        assert any(line.split("│")[1:3] == [f" {step} ", f" {cap} "] or
                   line.replace("│", " ").split()[:2] == [str(step), str(cap)] for line in text.splitlines()), (step, cap)
    assert "dry run: config is valid" in text
    # piped output is not wrapped at 80 columns: the long instruction stays on its line
    instruction = load_config(REPO / "configs/siri_r1_distill_qwen_1.5b.yaml").data.instruction
    assert len(f"  instruction: {instruction}") > 80  # longer than rich's default width
    assert any(line.strip() == f"instruction: {instruction}" for line in text.splitlines())


def test_dry_run_reports_bad_config_without_traceback(tmp_path):
    path = write(tmp_path, {"schedule": {"kind": "cosine", "l_max": 10, "l_min": 20, "period": 4}})
    out = subprocess.run([sys.executable, "-m", "siri", "train", str(path), "--dry-run"], capture_output=True,
                         text=True, cwd=REPO.parent, timeout=120)
    assert out.returncode == 2 and "invalid config" in out.stderr and "Traceback" not in out.stderr
