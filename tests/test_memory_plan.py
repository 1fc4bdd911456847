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
from siri.engine.cuda_graphs import graph_memory_bytes
from siri.train.memory_plan import (GiB, MicroBatchShape, activation_bytes, layer_activation_bytes_per_token,
                              plan_memory)
from siri.models.shape import KNOWN_MODELS, ModelShape

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


SHAPE_1_5B = ModelShape.from_hf_config(KNOWN_MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"])
SHAPE_7B = ModelShape.from_hf_config(KNOWN_MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"])


def item(items, name):
    (found,) = [i.nbytes for i in items if i.name == name]
    return found


def test_keep_kv_cache_pool_leaves_room_for_the_update_on_80_gb():
    """rollout.keep_kv_cache on the 1.5B recipe (1 x 80 GiB): the pool the engine used to get
    (0.8 of what was free at the first rollout, before AdamW's moments existed) plus the
    update's additions overflow the device; the kept pool is sized from what is free with the
    moments in place, less the update's additions, and rollout + update fit."""
    plain = plan_memory(load_config(PAPER_CONFIG), SHAPE_1_5B, device_memory_gb=80)
    kept = plan_memory(load_config(PAPER_CONFIG, ["rollout.keep_kv_cache=true"]), SHAPE_1_5B, device_memory_gb=80)
    n = SHAPE_1_5B.num_parameters()
    usable = 78 * GiB                                  # 80 GiB less the 2 GiB CUDA reserve
    persistent = n * (4 + 2 + 2 * 4)                   # fp32 master, bf16 copy, two fp32 moments
    assert sum(i.nbytes for i in kept.persistent) == persistent
    update = plain.training_peak - persistent          # what the update adds (checked elsewhere)
    graphs = graph_memory_bytes(SHAPE_1_5B, 2, 1024)   # bf16, max_num_seqs 1024
    # before: sized at the first rollout, moments not yet allocated, and kept through the update
    old_pool = int((usable - n * (4 + 2)) * 0.8) - graphs
    assert persistent + update + old_pool + graphs > usable, "the old sizing did overflow"
    pool = int((usable - persistent - update) * 0.8) - graphs
    assert pool > 0
    assert item(kept.rollout, "KV pool") == pool == item(kept.training, "KV pool (kept)")
    assert item(kept.training, "CUDA graphs (kept)") == graphs
    assert kept.training_peak == persistent + update + pool + graphs <= usable
    assert kept.kv_tokens == pool // SHAPE_1_5B.kv_bytes_per_token(2) // 16 * 16
    assert kept.fits and kept.keep_kv_cache
    # without keep_kv_cache the pool is 0.8 of all that is free: larger, and not in the update
    assert item(plain.rollout, "KV pool") == int((usable - persistent) * 0.8) - graphs > pool
    assert not any("kept" in i.name for i in plain.training)


def test_kept_kv_cache_bytes_is_the_plans_pool():
    """The size the trainer gives the engine from the memory it finds free: the plan's kept
    pool when that is what is free; a clear error when the update leaves no room."""
    from siri.train.memory_plan import kept_kv_cache_bytes

    cfg = load_config(PAPER_CONFIG, ["rollout.keep_kv_cache=true"])
    plan = plan_memory(cfg, SHAPE_1_5B, device_memory_gb=80)
    free = 78 * GiB - sum(i.nbytes for i in plan.persistent)
    assert kept_kv_cache_bytes(cfg, SHAPE_1_5B, free) == item(plan.rollout, "KV pool")
    update = plan_memory(load_config(PAPER_CONFIG), SHAPE_1_5B).training_peak - sum(i.nbytes for i in plan.persistent)
    without_graphs = load_config(PAPER_CONFIG, ["rollout.keep_kv_cache=true", "rollout.cuda_graphs=false"])
    assert kept_kv_cache_bytes(without_graphs, SHAPE_1_5B, update + 10 * GiB) == int(10 * GiB * 0.8)
    with pytest.raises(ValueError, match="keep_kv_cache.*no room"):
        kept_kv_cache_bytes(cfg, SHAPE_1_5B, update)


def test_keep_kv_cache_counts_the_pool_in_the_update_verdict():
    """A 40 GiB pool: beside the rollout it fits; kept through the update it does not, and the
    advice says to release it."""
    cfg = load_config(PAPER_CONFIG, ["rollout.kv_cache_gb=40"])
    released = plan_memory(cfg, SHAPE_1_5B, device_memory_gb=80)
    kept = plan_memory(load_config(PAPER_CONFIG, ["rollout.kv_cache_gb=40", "rollout.keep_kv_cache=true"]),
                       SHAPE_1_5B, device_memory_gb=80)
    persistent = sum(i.nbytes for i in released.persistent)
    update = released.training_peak - persistent
    graphs = graph_memory_bytes(SHAPE_1_5B, 2, 1024)
    decode_logits = 1024 * SHAPE_1_5B.vocab_size * 4
    assert persistent + 40 * GiB + graphs + decode_logits <= 78 * GiB < persistent + update + 40 * GiB + graphs
    assert released.fits and released.rollout_peak == persistent + 40 * GiB + graphs + decode_logits
    assert not kept.fits and kept.training_peak == persistent + update + 40 * GiB + graphs
    assert "does NOT fit" in kept.verdict()
    assert any(a.startswith("set rollout.keep_kv_cache=false") for a in kept.advice)


@pytest.mark.parametrize("shape", [SHAPE_1_5B, SHAPE_7B], ids=["1.5B", "7B"])
def test_fsdp_update_peak_holds_the_root_beside_the_activations(shape):
    """FSDP2 gathers the root module (embedding, final norm, LM head) when the forward starts
    and does not reshard it after forward, and backward computes the head's gradient first
    and reduce-scatters it only when the root's backward ends: both sit beside the largest
    micro-batch's activations and logits (and, from the second micro-batch on, the master
    gradients)."""
    cfg = load_config(PAPER_CONFIG, ["trainer.parallelism=fsdp"])
    plan = plan_memory(cfg, shape, world_size=8)
    mb, c, n = plan.micro_batch, 2, shape.num_parameters()
    persistent = sum(i.nbytes for i in plan.persistent)
    acts = activation_bytes(shape, mb, c, checkpointing=True)
    logits = mb.tokens * (shape.vocab_size + shape.hidden_size) * c
    per_update = 128 // 8 // 4 * 8            # sequences of one optimizer step on one rank
    assert mb.batch < per_update              # so the master gradients (fp32, sharded) are there
    master_grads = n * 4 // 8
    head = shape.vocab_size * shape.hidden_size
    root = 2 * head + shape.hidden_size       # untied embedding and head, final norm
    assert root == n - shape.num_layers * shape.layer_parameters()
    assert plan.training_peak - persistent >= acts + logits + master_grads + root * c + head * c


def test_7b_under_ddp_does_not_fit_and_says_what_would():
    """7B with fp32 master weights and moments under DDP: the persistent state alone exceeds
    an 80 GiB device, so there is no KV pool: the plan says so (a pool of 0, never negative)
    and names FSDP2, which fits."""
    cfg = load_config(PAPER_CONFIG, ["model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"])
    n = SHAPE_7B.num_parameters()
    assert n * (4 + 2 + 8) > 78 * GiB
    for world in (1, 8):
        plan = plan_memory(cfg, SHAPE_7B, world_size=world)
        assert all(i.nbytes >= 0 for i in plan.persistent + plan.training + plan.rollout)
        assert item(plan.rollout, "KV pool") == 0 and plan.kv_tokens == 0
        assert not plan.fits and not plan.kv_fits
        assert "does NOT fit" in plan.verdict() and "persistent state alone" in plan.verdict()
        assert any("trainer.parallelism=fsdp" in a for a in plan.advice), plan.advice
    assert "set trainer.parallelism=fsdp" in plan.advice
    assert plan_memory(load_config(PAPER_CONFIG, ["model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                                                  "trainer.parallelism=fsdp"]), SHAPE_7B, world_size=8).fits
    one = plan_memory(cfg, SHAPE_7B, world_size=1)
    (more_devices,) = [a for a in one.advice if "--nproc" in a and "fits" in a]
    devices = int(more_devices.split("--nproc ")[1].split(")")[0])
    assert plan_memory(load_config(PAPER_CONFIG, ["model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                                                  "trainer.parallelism=fsdp"]), SHAPE_7B, world_size=devices).fits


def test_a_pool_smaller_than_one_sequence_does_not_fit():
    """The engine refuses a pool that cannot hold a prompt plus the largest cap: so does the plan."""
    longest = 1024 + 16384
    per_token = SHAPE_1_5B.kv_bytes_per_token(2)
    small = (longest - 16) * per_token / GiB      # one page short
    plan = plan_memory(load_config(PAPER_CONFIG, [f"rollout.kv_cache_gb={small}"]), SHAPE_1_5B)
    assert plan.peak <= plan.usable_bytes and plan.kv_tokens < longest
    assert not plan.fits and "less than one sequence" in plan.verdict()
    enough = plan_memory(load_config(PAPER_CONFIG, [f"rollout.kv_cache_gb={longest * per_token / GiB}"]), SHAPE_1_5B)
    assert enough.kv_tokens == longest and enough.fits


def test_dry_run_shows_the_graphs_and_the_kept_pool():
    """The CUDA graphs' memory is its own line when graphs are on; with keep_kv_cache the plan
    lists the pool in the update phase and says whether rollout + update fit."""
    graphs = f"{graph_memory_bytes(SHAPE_1_5B, 2, 1024) / GiB:.2f}"
    kept = run_cli(overrides=["rollout.keep_kv_cache=true"])
    assert kept.returncode == 0, kept.stderr
    rows = [line for line in kept.stdout.splitlines() if "│" in line]
    assert any("CUDA graphs " in r and graphs in r for r in rows)
    assert any("KV pool (kept)" in r for r in rows) and any("CUDA graphs (kept)" in r for r in rows)
    text = " ".join(kept.stdout.split())          # rich wraps long lines
    assert "and the CUDA graphs (" + graphs + " GiB) stay allocated through the update" in text
    assert "rollout + update peak" in text and " fits in 78.0 GiB usable" in text
    off = run_cli(overrides=["rollout.cuda_graphs=false"])
    assert off.returncode == 0, off.stderr
    assert "CUDA graphs" not in off.stdout and "rollout.keep_kv_cache:" not in off.stdout
    assert "kept" not in "".join(line for line in off.stdout.splitlines() if "│" in line)


def test_dry_run_7b_ddp_says_it_does_not_fit():
    result = run_cli("--nproc", "8", overrides=["model.path=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"])
    assert result.returncode == 0, result.stderr
    (pool,) = [cells for cells in (line.split("│") for line in result.stdout.splitlines())
               if len(cells) > 4 and cells[2].strip() == "KV pool"]
    assert pool[3].strip() == "0.00" and "no room" in pool[4]
    assert "verdict: does NOT fit" in result.stdout and "set trainer.parallelism=fsdp" in result.stdout
