"""The memory plan: parameter counts and activation bytes checked against real HF modules,
its verdict and advice, and `siri train --dry-run`."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from siri.config import load_config
from siri.memory_plan import (GiB, MicroBatchShape, activation_bytes, layer_activation_bytes_per_token,
                              plan_memory)
from siri.model_shape import KNOWN_MODELS, ModelShape

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "configs" / "siri_r1_distill_qwen_1.5b.yaml"


def tiny_config(kind, **overrides):
    fields = dict(hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=6,
                  num_key_value_heads=2, vocab_size=211, tie_word_embeddings=False)
    fields.update(overrides)
    return (transformers.Qwen2Config if kind == "qwen2" else transformers.LlamaConfig)(**fields)


@pytest.mark.parametrize("kind, overrides", [
    ("qwen2", {}),
    ("qwen2", {"tie_word_embeddings": True}),
    ("llama", {}),
    ("llama", {"head_dim": 32, "attention_bias": True}),
])
def test_parameter_count_matches_the_model(kind, overrides):
    config = tiny_config(kind, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(config)
    shape = ModelShape.from_hf_config(config)
    assert shape.num_parameters() == sum(p.numel() for p in model.parameters())


def test_known_models_match_their_hf_config():
    """The built-in table goes through the same path as a downloaded config."""
    shape = ModelShape.from_hf_config(KNOWN_MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"])
    config = transformers.Qwen2Config(**KNOWN_MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"])
    assert shape == ModelShape.from_hf_config(config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert shape.num_parameters() == sum(p.numel() for p in model.parameters())
    assert shape.kv_bytes_per_token(2) == 28 * 2 * 2 * 128 * 2


def saved_bytes_of_one_layer(config, dtype, batch, length, pad):
    """Bytes of the tensors autograd saves inside decoder layer 0 (parameters excluded),
    counted once per storage."""
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(dtype)
    ids = torch.randint(0, config.vocab_size, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad:
        mask[0, : length // 3] = 0
    current, saved = [None], {}

    def pack(t):
        if current[0] == 0:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    for i, layer in enumerate(model.model.layers):
        layer.register_forward_pre_hook(lambda module, args, i=i: current.__setitem__(0, i))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=ids, attention_mask=mask)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in saved.items() if ptr not in params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pad", [False, True])
def test_layer_activation_bytes_match_autograd(dtype, pad):
    """The plan's per-layer count against the bytes autograd really saves in HF's Qwen2 layer
    (SDPA), with and without a padding mask: within 3%."""
    config = tiny_config("qwen2", hidden_size=128, intermediate_size=352, num_attention_heads=4,
                         num_key_value_heads=2)
    shape = ModelShape.from_hf_config(config)
    batch, length = 2, 96
    c = torch.tensor([], dtype=dtype).element_size()
    measured = saved_bytes_of_one_layer(config, dtype, batch, length, pad)
    planned = batch * length * layer_activation_bytes_per_token(shape, c, padded=pad)
    planned += 2 * length * shape.head_dim * c  # RoPE cos/sin, first saved by layer 0
    if pad:
        planned += batch * length * length * c
    assert planned == pytest.approx(measured, rel=0.03)


def test_checkpointing_and_padding_change_activations_as_expected():
    shape = ModelShape.from_hf_config(KNOWN_MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"])
    lone, pair = MicroBatchShape(1, 16384), MicroBatchShape(2, 8192)
    full = activation_bytes(shape, lone, 2, checkpointing=False)
    kept = activation_bytes(shape, lone, 2, checkpointing=True)
    assert kept < full / 5
    # same tokens, but the padded pair carries masks of 2 x 8192^2 per layer
    assert activation_bytes(shape, pair, 2, checkpointing=False) > full


def test_paper_config_fits_on_80_gb_and_not_on_24():
    cfg = load_config(PAPER_CONFIG)
    plan = plan_memory(cfg, device_memory_gb=80)
    assert plan.fits and plan.compute_dtype == "bfloat16" and plan.param_dtype == "float32"
    assert plan.num_parameters == 1_777_088_000
    persistent = {i.name: i.nbytes for i in plan.persistent}
    assert persistent["master weights"] == 4 * plan.num_parameters
    assert persistent["AdamW moments"] == 8 * plan.num_parameters
    small = plan_memory(cfg, device_memory_gb=24)
    assert not small.fits and small.advice


def test_advice_names_a_knob_that_makes_it_fit():
    cfg = load_config(PAPER_CONFIG, ["model.gradient_checkpointing=false", "algo.micro_batch_tokens=65536"])
    plan = plan_memory(cfg, device_memory_gb=80)
    assert not plan.fits
    (knobs,) = [a.removeprefix("set ").split() for a in plan.advice if a.startswith("set ")]
    assert "model.gradient_checkpointing=true" in knobs
    fixed = load_config(PAPER_CONFIG, ["model.gradient_checkpointing=false", "algo.micro_batch_tokens=65536",
                                       *knobs])
    assert plan_memory(fixed, device_memory_gb=80).fits
    tight = plan_memory(fixed, device_memory_gb=40)
    assert not tight.fits and any("micro_batch_tokens=" in a for a in tight.advice)


def test_fsdp_divides_the_persistent_state():
    cfg = load_config(PAPER_CONFIG, ["trainer.parallelism=fsdp"])
    ddp = plan_memory(load_config(PAPER_CONFIG), world_size=8)
    fsdp = plan_memory(cfg, world_size=8)
    by_name = {i.name: i.nbytes for i in fsdp.persistent}
    assert by_name["AdamW moments"] * 8 == {i.name: i.nbytes for i in ddp.persistent}["AdamW moments"]
    assert fsdp.training_peak < ddp.training_peak and fsdp.kv_tokens > ddp.kv_tokens


def test_explicit_kv_cache_gb_sets_the_pool():
    cfg = load_config(PAPER_CONFIG, ["rollout.kv_cache_gb=10"])
    plan = plan_memory(cfg)
    pool = next(i for i in plan.rollout if i.name == "KV pool")
    assert pool.nbytes == 10 * GiB
    assert plan.kv_tokens == 10 * GiB // (28 * 2 * 2 * 128 * 2) // 16 * 16


def test_bad_arguments():
    cfg = load_config(PAPER_CONFIG)
    with pytest.raises(ValueError, match="device_memory_gb"):
        plan_memory(cfg, device_memory_gb=0)
    with pytest.raises(ValueError, match="world_size"):
        plan_memory(cfg, world_size=0)
    with pytest.raises(ValueError, match="hidden_size"):
        ModelShape.from_hf_config({"vocab_size": 10})
    other = copy.deepcopy(cfg)
    other.model.path = "/nonexistent/model/dir"
    with pytest.raises(ValueError, match="model.path"):
        plan_memory(other)


def run_cli(*args, overrides=()):
    return subprocess.run([sys.executable, "-m", "siri", "train", str(PAPER_CONFIG), *overrides, "--dry-run", *args],
                          capture_output=True, text=True, cwd=REPO, env={"COLUMNS": "160", "PATH": "/usr/bin:/bin",
                                                                          "HF_HUB_OFFLINE": "1"})


def test_dry_run_prints_the_plan_and_verdict():
    result = run_cli()
    assert result.returncode == 0, result.stderr
    assert "memory plan per device: 80 GiB" in result.stdout
    assert "verdict: fits" in result.stdout
    small = run_cli("--device-memory-gb", "16", overrides=["model.gradient_checkpointing=false"])
    assert small.returncode == 0, small.stderr
    assert "verdict: does NOT fit" in small.stdout


def test_dry_run_bad_device_memory_is_one_line():
    result = run_cli("--device-memory-gb", "0")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "device_memory_gb" in result.stderr
