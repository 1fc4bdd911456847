"""siri.config: every validation rule and type check names the offending key, and the YAML /
dotted-override parsing reports malformed input (test_config.py covers the common mistakes)."""
import pytest
import yaml

from siri.config import ConfigError, _validate, apply_overrides, config_from_dict, load_config, yaml_error_line


def _escape(text):
    return "".join("\\" + c if c in "()[]{}.*+?^$|" else c for c in text)


@pytest.fixture
def base(tmp_path):
    """A valid config file (3 steps on a one-line local data file)."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "1+1?", "answer": "2"}\n')
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": str(data)}, "trainer": {"steps": 3}}))
    return path


def test_the_base_config_is_valid(base):
    cfg = load_config(base)
    assert cfg.trainer.steps == 3 and cfg.rollout.group_size == 8


POSITIVE = ["rollout.prompts_per_step", "rollout.page_size", "rollout.max_num_seqs", "rollout.max_prefill_tokens",
            "algo.ppo_epochs", "algo.mini_batches", "algo.micro_batch_tokens", "trainer.steps",
            "data.max_prompt_tokens", "trainer.max_consecutive_skips", "algo.max_sampling_rounds", "eval.n"]
NON_NEGATIVE = ["trainer.save_every", "trainer.keep_last", "optim.warmup_steps", "rollout.top_k",
                "reward.overlong_buffer", "trainer.eval_every"]


@pytest.mark.parametrize("key", POSITIVE)
def test_counts_below_one_are_named(base, key):
    with pytest.raises(ConfigError, match=_escape(f"'{key}' must be >= 1, got 0")):
        load_config(base, [f"{key}=0"])


@pytest.mark.parametrize("key", NON_NEGATIVE)
def test_negative_counts_are_named(base, key):
    with pytest.raises(ConfigError, match=_escape(f"'{key}' must be >= 0, got -1")):
        load_config(base, [f"{key}=-1"])


@pytest.mark.parametrize("overrides, message", [
    (["rollout.group_size=16", "rollout.max_num_seqs=8"], "'rollout.group_size' (16) exceeds 'rollout.max_num_seqs' (8)"),
    (["rollout.gpu_memory_fraction=1.0"], "'rollout.gpu_memory_fraction' must be in (0, 1), got 1.0"),
    (["rollout.gpu_memory_fraction=0"], "'rollout.gpu_memory_fraction' must be in (0, 1), got 0.0"),
    (["rollout.kv_cache_gb=0"], "'rollout.kv_cache_gb' must be > 0 or null, got 0.0"),
    (["model.param_dtype=bfloat16", "model.dtype=float32"], "'model.param_dtype: bfloat16' with 'model.dtype: float32'"),
    (["rollout.temperature=0"], "'rollout.temperature' must be > 0 for RL sampling, got 0.0"),
    (["rollout.top_p=0"], "'rollout.top_p' must be in (0, 1], got 0.0"),
    (["rollout.top_p=1.5"], "'rollout.top_p' must be in (0, 1], got 1.5"),
    (["algo.clip_low=1.0"], "'algo.clip_low' must be in (0, 1) and 'algo.clip_high' > 0, got 1.0 / 0.28"),
    (["algo.clip_high=0"], "'algo.clip_low' must be in (0, 1) and 'algo.clip_high' > 0, got 0.2 / 0.0"),
    (["algo.kl_coef=-0.1"], "'algo.kl_coef' must be >= 0, got -0.1"),
    (["optim.lr=0"], "'optim.lr' must be > 0 and 'optim.grad_clip' >= 0, got 0.0 / 1.0"),
    (["optim.grad_clip=-1"], "'optim.lr' must be > 0 and 'optim.grad_clip' >= 0, got 1e-06 / -1.0"),
    (["eval.limit=0"], "'eval.limit' must be >= 1 or null, got 0"),
    (["eval.top_p=0"], "'eval.temperature' must be > 0 and 'eval.top_p' in (0, 1], got 0.6 / 0.0"),
    (["model.param_dtype=float16"], "'model.param_dtype' must be one of ['float32', 'bfloat16'], got 'float16'"),
    (["model.device=tpu"], "'model.device' must be one of ['auto', 'cpu', 'cuda'], got 'tpu'"),
    (["data.on_error=ignore"], "'data.on_error' must be one of ['skip', 'raise'], got 'ignore'"),
    (["algo.advantage_scale=batch"], "'algo.advantage_scale' must be one of ['group', 'none'], got 'batch'"),
    (["trainer.parallelism=tp"], "'trainer.parallelism' must be one of ['ddp', 'fsdp'], got 'tp'"),
    (["data.path=/no/such/copy", "data.train=deepscaler"], "'data.path': no such file or directory: /no/such/copy"),
])
def test_bad_values_name_their_key(base, overrides, message):
    with pytest.raises(ConfigError, match=_escape(message)):
        load_config(base, overrides)


@pytest.mark.parametrize("overrides", [
    ["rollout.kv_cache_gb=null", "algo.clip_c=null", "reward.workers=0", "eval.limit=null"],
    ["rollout.kv_cache_gb=0.5", "rollout.gpu_memory_fraction=0.5", "rollout.top_p=1", "rollout.top_k=0"],
    ["model.param_dtype=bfloat16", "model.dtype=bfloat16", "optim.grad_clip=0", "trainer.save_every=0"],
    ["rollout.prompts_per_step=8", "algo.mini_batches=4", "algo.ppo_epochs=2", "eval.limit=1"],
])
def test_values_at_the_edge_of_each_rule_are_accepted(base, overrides):
    cfg = load_config(base, overrides)
    for item in overrides:
        key, raw = item.split("=")
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == yaml.safe_load(raw), item


@pytest.mark.parametrize("overrides, message", [
    (["data.path=5"], "'data.path' must be a string, got 5"),
    (["model.path=3"], "'model.path' must be a string, got 3"),
    (["rollout.kv_cache_gb=lots"], "'rollout.kv_cache_gb' must be a number, got 'lots'"),
    (["optim.lr=abc"], "'optim.lr' must be a number, got 'abc'"),
    (["optim.lr=true"], "'optim.lr' must be a number, got True"),
    (["trainer.steps=2.5"], "'trainer.steps' must be an integer, got 2.5"),
    (["trainer.steps=true"], "'trainer.steps' must be an integer, got True"),
    (["model.gradient_checkpointing=1"], "'model.gradient_checkpointing' must be true or false, got 1"),
    (["rollout.cuda_graphs=maybe"], "'rollout.cuda_graphs' must be true or false, got 'maybe'"),
    (["optim.betas=[0.9]"], "'optim.betas' must be a list of 2 values, got [0.9]"),
    (["optim.betas=0.9"], "'optim.betas' must be a list of 2 values, got 0.9"),
    (["optim.betas=[0.9, fast]"], "'optim.betas[1]' must be a number, got 'fast'"),
    (["schedule=3"], "'schedule' must be a mapping, got 3"),
    (["evall.n=2"], "unknown config key 'evall'; did you mean 'eval'?"),
    (["rollout.zzz=2"], "unknown config key 'rollout.zzz'; expected one of ['cuda_graphs',"),
])
def test_wrong_types_name_their_key(base, overrides, message):
    with pytest.raises(ConfigError, match=_escape(message)):
        load_config(base, overrides)


def test_numbers_are_coerced_where_the_field_is_a_float(base):
    # PyYAML (YAML 1.1) reads 1e-6 as a string; ints are accepted for floats; lists become tuples
    cfg = load_config(base, ["optim.lr=1e-5", "rollout.temperature=2", "optim.betas=[0.8, 0.95]",
                             "rollout.cuda_graphs=null", "data.instruction="])
    assert cfg.optim.lr == 1e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.rollout.temperature == 2.0 and isinstance(cfg.rollout.temperature, float)
    assert cfg.optim.betas == (0.8, 0.95)
    assert cfg.rollout.cuda_graphs is None
    assert cfg.data.instruction == ""       # an empty override value is the empty string, not null


def test_a_config_must_be_a_mapping():
    with pytest.raises(ConfigError, match="a config must be a mapping of sections, got list"):
        config_from_dict([{"trainer": {}}])


def test_a_yaml_file_whose_top_level_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- trainer\n- steps\n")
    with pytest.raises(ConfigError, match="list.yaml: the top level must be a mapping of sections"):
        load_config(path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    cfg = load_config(empty, validate=False)        # an empty file is the defaults
    assert cfg.trainer.steps == 1920


@pytest.mark.parametrize("override, message", [
    ("trainer..steps=1", "override 'trainer..steps=1' has an empty key part"),
    (".steps=1", "override '.steps=1' has an empty key part"),
    ("trainer.steps=[1", "override 'trainer.steps=[1': the value is not valid YAML"),
    ("trainer.steps.x=1", "override 'trainer.steps.x=1': 'steps' is not a section"),
])
def test_malformed_overrides(override, message):
    with pytest.raises(ConfigError, match=_escape(message)):
        apply_overrides({"trainer": {"steps": 3}}, [override])


def test_overrides_create_sections_and_parse_values_as_yaml():
    out = apply_overrides({}, ["a.b.c=1", "a.d=null", "e=[1, 2]", "f.g=some text"])
    assert out == {"a": {"b": {"c": 1}, "d": None}, "e": [1, 2], "f": {"g": "some text"}}


def test_yaml_error_line_without_a_mark_names_the_file_and_problem():
    assert yaml_error_line("cfg.yaml", yaml.YAMLError("something broke\nmore detail")) == \
        "cfg.yaml: not valid YAML: something broke"
    try:
        yaml.safe_load("a: [1,\nb: 2")
    except yaml.YAMLError as e:
        line = yaml_error_line("x.yaml", e)
    assert line.startswith("x.yaml:") and "not valid YAML" in line and line.count("\n") == 0


def test_validate_without_file_checks_accepts_a_missing_resume_dir(base):
    cfg = load_config(base, ["trainer.resume=/no/such/checkpoint"], validate=False)
    _validate(cfg, check_files=False)
    with pytest.raises(ConfigError, match="'trainer.resume'"):
        _validate(cfg, check_files=True)


def test_every_config_field_has_a_docstring():
    """Each field is documented where it is declared: a string right after it (what TRL does)."""
    import ast
    import inspect

    import siri.config

    undocumented = []
    for node in ast.parse(inspect.getsource(siri.config)).body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
            for stmt, after in zip(node.body, node.body[1:] + [None]):
                documented = (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                              and isinstance(after.value.value, str) and after.value.value.strip())
                if isinstance(stmt, ast.AnnAssign) and not documented:
                    undocumented.append(f"{node.name}.{stmt.target.id}")
    assert not undocumented


def test_choices_live_on_the_fields():
    from siri.algo.schedule import KINDS
    from siri.config import Config, config_choices
    from siri.rewards.length_shaping import LENGTH_REWARDS

    choices, cfg = config_choices(), Config()
    assert set(choices) == {"model.dtype", "model.param_dtype", "model.device", "data.on_error",
                            "algo.advantage_scale", "algo.old_logprobs", "algo.filter_metric",
                            "reward.length_reward", "trainer.parallelism"}
    for key, allowed in choices.items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) in allowed, key     # the default is allowed
    assert choices["reward.length_reward"] == tuple(LENGTH_REWARDS)
    assert cfg.schedule["kind"] in KINDS
