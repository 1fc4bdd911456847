"""The installed package: extension loads, build_info is complete, ops are registered, CLI."""
import subprocess
import sys

import torch

import siri


def test_build_info_fields():
    info = siri.build_info()
    for key in ("version", "backends", "cuda_archs", "compiler", "simd", "torch_version"):
        assert key in info, key
    assert info["version"] == siri.__version__
    assert "cpu" in info["backends"]
    # The extension must be built against the torch it runs with (ABI).
    assert torch.__version__.startswith(info["torch_version"])


def test_extension_module_is_pybind11():
    from siri import _C

    assert callable(_C.build_info)
    assert _C.build_info()["version"] == siri.__version__


def test_ops_registered_for_cpu():
    for op in ("group_advantages", "sample_tokens"):
        assert hasattr(torch.ops.siri, op)
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"siri::{op}", "CPU")
        if "cuda" in siri.build_info()["backends"]:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"siri::{op}", "CUDA")


def test_cli_info_shows_cpu_backend():
    out = subprocess.run([sys.executable, "-m", "siri", "info"], capture_output=True, text=True,
                         check=True).stdout
    assert "compiled backends" in out and "cpu" in out
    assert "CUDA device" in out


def test_public_api_is_exported():
    for name in ("LLMEngine", "SamplingParams", "CompletionOutput", "make_schedule", "ops", "rewards",
                 "build_info"):
        assert hasattr(siri, name), name
    for op in ("group_advantages", "grpo_loss", "token_logprobs", "sample_tokens",
               "paged_decode_attention", "paged_prefill_attention", "append_kv"):
        assert callable(getattr(siri.ops, op)), op


def test_extension_exposes_only_production_entries():
    """siri._C carries nothing test-only: the header probes live in the separate module
    _siri_probes (bindings/probes), which siri never imports."""
    from siri import _C

    public = {name for name in dir(_C) if not name.startswith("__")}
    assert public == {"build_info", "attention_split_plan", "graph_max_splits", "ATTENTION_PARTIAL_BYTES",
                      "SUPPORTED_HEAD_DIMS"}, public
    assert isinstance(_C.SUPPORTED_HEAD_DIMS, tuple) and _C.SUPPORTED_HEAD_DIMS == (64, 80, 96, 128, 256)
    out = subprocess.run([sys.executable, "-c", "import sys, siri, siri.ops, siri.engine; "
                          "print('_siri_probes' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_probes_module_imports():
    import _siri_probes

    assert callable(_siri_probes.attention_plan) and callable(_siri_probes.philox4x32_10)
