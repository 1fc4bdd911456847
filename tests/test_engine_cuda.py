"""The engine on a CUDA device: a decode step launches without one device-to-host sync, and
CUDA-graph decode gives the eager decode's tokens. Skipped, with the reason, without a GPU."""
import pytest
import torch

from conftest import CUDA_SKIP_REASON
from siri.engine import LLMEngine, SamplingParams
from tiny_models import random_prompts, tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(CUDA_SKIP_REASON is not None, reason=CUDA_SKIP_REASON or "")]


def forbid_syncs(engine):
    """Every decode step's device side runs under sync debug mode "error"."""
    launch = engine._launch_decode_step

    def checked():
        torch.cuda.set_sync_debug_mode("error")
        try:
            return launch()
        finally:
            torch.cuda.set_sync_debug_mode("default")

    engine._launch_decode_step = checked


@pytest.mark.parametrize("cuda_graphs", [False, True])
@pytest.mark.parametrize("num_pages", [4096, 60])  # 60: preemption, rows leaving and joining
def test_a_decode_step_never_waits_on_the_device(gen, cuda_graphs, num_pages):
    model = tiny_model("qwen2", dtype=torch.bfloat16).cuda()
    engine = LLMEngine(model, page_size=4, num_pages=num_pages, max_num_seqs=12, cuda_graphs=cuda_graphs)
    forbid_syncs(engine)
    outs = engine.generate(random_prompts(6, 256, gen), SamplingParams(n=2, max_tokens=[4, 30, 9, 30, 1, 17], seed=1))
    assert engine.last_stats["steps"] > 20 and all(len(c.token_ids) >= 1 for g in outs for c in g)
    if num_pages == 60:
        assert engine.last_stats["preemptions"] > 0


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cuda_graph_decode_gives_the_eager_tokens(gen, temperature):
    model = tiny_model("qwen2").cuda()
    prompts = random_prompts(9, 256, gen)
    params = SamplingParams(n=3, temperature=temperature, max_tokens=24, seed=5)
    graphs = LLMEngine(model, page_size=8, max_num_seqs=32, num_pages=2048, cuda_graphs=True)
    eager = LLMEngine(model, page_size=8, max_num_seqs=32, num_pages=2048, cuda_graphs=False)
    a, b = graphs.generate(prompts, params), eager.generate(prompts, params)
    assert graphs._graphs is not None and graphs._graphs.capture
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    for ga, gb in zip(a, b):
        for ca, cb in zip(ga, gb):
            torch.testing.assert_close(ca.logprobs, cb.logprobs, atol=1e-4, rtol=0)


def test_graphs_are_on_by_default_on_cuda():
    assert LLMEngine(tiny_model("qwen2").cuda(), num_pages=64).cuda_graphs
