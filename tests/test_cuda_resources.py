"""scripts/cuda_resource_usage.py: ptxas's register/spill report as a table with a budget check
(decode attention in bf16 with GQA groups up to 4 within 128 registers, no spills)."""
import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("cuda_resource_usage", ROOT / "scripts/cuda_resource_usage.py")
usage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(usage)

NVCC = next((p for p in ("/usr/local/cuda/bin/nvcc", shutil.which("nvcc")) if p and Path(p).exists()), None)


def row(kernel, registers, spill=0):
    return {"kernel": kernel, "registers": registers, "spill": spill}


def test_budget_rules():
    assert usage.violations(row("decode_kernel<__nv_bfloat16, 128, 4>", 128)) == []
    assert usage.violations(row("decode_kernel<__nv_bfloat16, 128, 4>", 129)) == ["129 registers > 128"]
    assert usage.violations(row("decode_kernel<__nv_bfloat16, 128, 8>", 206)) == []  # 8 heads: no budget
    assert usage.violations(row("decode_kernel<float, 128, 2>", 200)) == []          # bf16 only
    assert usage.violations(row("sample_tokens_kernel<float>", 64, spill=8)) == ["8 bytes spilled"]
    assert usage.violations(row("token_logprobs_kernel<double>", 48, spill=32)) == []  # float64: listed only
    assert usage.violations(row("token_logprobs_kernel<double, true>", 48, spill=32)) == []
    assert usage.violations(row("token_logprobs_kernel<float, true>", 48, spill=32)) == ["32 bytes spilled"]


def test_demangled_names_lose_namespaces_and_parameters():
    if shutil.which("c++filt") is None:
        pytest.skip("c++filt not installed: names stay mangled")
    mangled = "_ZN4siri4cuda51_GLOBAL__N__decf5eda_18_paged_attention_cu_c958acfa13decode_kernelI13__nv_bfloat16Li128ELi4EEEvNS_20PagedAttentionParamsE"
    assert usage.demangle([mangled]) == ["decode_kernel<__nv_bfloat16, 128, 4>"]


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: ptxas resource usage cannot be measured")
def test_decode_kernels_fit_the_register_budget_on_sm90():
    rows = usage.resource_usage(NVCC, ROOT / "csrc/cuda/paged_attention.cu", "sm_90")
    decode = {r["kernel"]: r for r in rows if r["kernel"].startswith("decode_kernel<")}
    for heads in (1, 2, 4, 8):  # every head-block size is instantiated, for every dtype and head_dim
        for d in (64, 80, 96, 128, 256):
            assert f"decode_kernel<__nv_bfloat16, {d}, {heads}>" in decode
    over = {name: usage.violations(r) for name, r in decode.items() if usage.violations(r)}
    assert not over, over
    assert max(r["registers"] for n, r in decode.items() if n.endswith(", 2>")) < \
        max(r["registers"] for n, r in decode.items() if n.endswith(", 8>")), "small groups must use fewer registers"
