"""Model families (siri/models/families/, one module each) and their registry: what each says
about q/k norm, biases, RoPE and sliding windows, checked against the real HF modules, and that
a family is added by adding one file."""
import sys

import pytest
import torch
import transformers

import siri.engine
from siri.engine import LLMEngine, SamplingParams
from siri.engine.model_runner import SUPPORTED_HEAD_DIMS, ModelRunner
from siri.models import FAMILIES, SUPPORTED_MODEL_TYPES, ModelFamily, families, find_family, get_family, registry
from siri.models.shape import ModelShape
from tiny_models import assert_greedy_matches_hf, tiny_config, tiny_model


def test_the_registry_holds_the_three_families_and_the_engine_exports_them():
    assert SUPPORTED_MODEL_TYPES == ("llama", "qwen2", "qwen3")
    assert siri.engine.SUPPORTED_MODEL_TYPES == SUPPORTED_MODEL_TYPES
    assert all(FAMILIES[t].model_type == t and get_family(t) is FAMILIES[t] for t in SUPPORTED_MODEL_TYPES)
    assert [t for t in SUPPORTED_MODEL_TYPES if FAMILIES[t].qk_norm] == ["qwen3"]
    assert find_family("gpt2") is None
    with pytest.raises(ValueError, match=r"supports the model types \('llama', 'qwen2', 'qwen3'\); got 'gpt2'"):
        get_family("gpt2")


def test_head_dims_come_from_the_extension():
    from siri._ext import _C

    assert SUPPORTED_HEAD_DIMS == tuple(_C.SUPPORTED_HEAD_DIMS) and 64 in SUPPORTED_HEAD_DIMS
    with pytest.raises(ValueError, match="head_dim in"):
        ModelRunner(tiny_model("qwen2", head_dim=max(SUPPORTED_HEAD_DIMS) + 8))


@pytest.mark.parametrize("model_type, overrides", [
    ("qwen2", {}),
    ("qwen3", {}),
    ("qwen3", {"attention_bias": True}),
    ("llama", {"attention_bias": True, "mlp_bias": True}),
])
def test_the_families_count_the_parameters_of_the_hf_model(model_type, overrides):
    """Biases (Qwen2's q/k/v; attention_bias and mlp_bias where the family reads them) and
    Qwen3's q/k norms, as the HF modules have them."""
    config = tiny_config(model_type, layers=1, **overrides)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    shape = ModelShape.from_hf_config(config)
    assert shape.num_parameters() == sum(p.numel() for p in model.parameters())
    assert shape.qk_norm == (model_type == "qwen3")


def test_a_model_type_without_a_family_is_planned_as_llama_with_its_attention_bias():
    fields = dict(model_type="mistral", hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                  num_attention_heads=2, vocab_size=10)
    assert not ModelShape.from_hf_config(fields).qkv_bias
    shape = ModelShape.from_hf_config({**fields, "attention_bias": True})
    assert shape.qkv_bias and shape.o_bias and not shape.qk_norm


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_each_family_says_which_rope_a_cuda_graph_can_capture(model_type):
    family = FAMILIES[model_type]
    assert not family.rope_graph_capturable("dynamic")
    assert all(family.rope_graph_capturable(r) for r in family.rope_types if r != "dynamic")
    runner = ModelRunner(tiny_model(model_type, layers=1, rope_scaling={"rope_type": "linear", "factor": 2.0}))
    assert runner.family is family and runner.rope_type == "linear" and runner.rope_graph_capturable


def test_a_rope_type_the_family_does_not_list_is_a_clear_error():
    config = {"model_type": "qwen2", "rope_parameters": {"rope_type": "proportional"}}
    with pytest.raises(ValueError, match="rope_type in .*'default'.*; this model has rope_type 'proportional'"):
        FAMILIES["qwen2"].check_engine_config(config)


def test_sliding_window_layers_are_refused_and_a_window_no_layer_uses_is_not(gen):
    sliding = tiny_model("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=1)
    with pytest.raises(ValueError, match="sliding-window attention is not supported"):
        LLMEngine(sliding, num_pages=64)
    # use_sliding_window with max_window_layers >= the layers: every layer attends in full (as in HF)
    model = tiny_model("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=2)
    engine = LLMEngine(model, page_size=4, num_pages=64)
    prompt = torch.randint(1, 256, (12,), generator=gen).tolist()
    out = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=6))
    assert_greedy_matches_hf(model, prompt, out[0][0].token_ids, 6)
    assert not FAMILIES["llama"].uses_sliding_window({"use_sliding_window": True})


def test_a_new_family_is_one_new_file(tmp_path, monkeypatch):
    """A module in siri/models/families/ binding FAMILY is found; a module that binds none, or
    declares a model type twice, is an error at discovery."""
    (tmp_path / "mistral_test_family.py").write_text(
        "from siri.models.family import ModelFamily\n\n"
        "class Mistral(ModelFamily):\n    model_type = 'mistral'\n\n\nFAMILY = Mistral()\n")
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"{families.__name__}.mistral_test_family", raising=False)
    found = registry._discover()
    assert tuple(found) == ("llama", "mistral", "qwen2", "qwen3")
    assert isinstance(found["mistral"], ModelFamily) and repr(found["mistral"]) == "<model family 'mistral'>"

    (tmp_path / "twice_test_family.py").write_text("from siri.models.families.qwen2 import FAMILY\n")
    monkeypatch.delitem(sys.modules, f"{families.__name__}.twice_test_family", raising=False)
    with pytest.raises(ValueError, match="'qwen2' is declared twice"):
        registry._discover()
    (tmp_path / "twice_test_family.py").write_text("FAMILY = None\n")
    monkeypatch.delitem(sys.modules, f"{families.__name__}.twice_test_family", raising=False)
    with pytest.raises(TypeError, match="must bind FAMILY"):
        registry._discover()
    (tmp_path / "twice_test_family.py").write_text(
        "from siri.models.family import ModelFamily\n\nFAMILY = ModelFamily()\n")
    monkeypatch.delitem(sys.modules, f"{families.__name__}.twice_test_family", raising=False)
    with pytest.raises(TypeError, match="must set model_type"):
        registry._discover()
    for name in ("mistral_test_family", "twice_test_family"):
        sys.modules.pop(f"{families.__name__}.{name}", None)
