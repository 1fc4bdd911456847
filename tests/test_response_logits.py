"""Response-only logits: the LM head runs on the response positions only, and the trainer
hands that fresh [N, V] tensor to the fused loss, whose backward writes dlogits into it."""
import pytest
import torch

import siri.train.trainer
from siri import Trainer, load_config
from siri.algo.response_logits import response_logits
from siri.algo.rollout_batch import Rollout, collate
from tiny_models import tiny_model


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
def test_response_logits_are_the_full_logits_at_the_response_positions(model_type, gen):
    model = tiny_model(model_type, dtype=torch.float64)
    rollouts = []
    for _ in range(4):
        prompt_len, response_len = torch.randint(1, 12, (2,), generator=gen).tolist()
        ids = torch.randint(1, 256, (prompt_len + response_len,), generator=gen).tolist()
        rollouts.append(Rollout(ids[:prompt_len], ids[prompt_len:], [0.0] * response_len, "stop"))
    mb = collate(rollouts, pad_id=0, device=torch.device("cpu"))
    rows = response_logits(model, mb.input_ids, mb.attention_mask, mb.response_mask)
    with torch.no_grad():
        full = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
    assert rows.shape == (mb.num_response_tokens, 256) and rows.is_contiguous()
    torch.testing.assert_close(rows.detach(), full[:, :-1][mb.response_mask], rtol=1e-12, atol=1e-12)
    # the hook is gone afterwards: a plain forward returns every position again
    assert model(input_ids=mb.input_ids).logits.shape[:2] == mb.input_ids.shape


def test_response_logits_rejects_a_mask_of_the_wrong_shape():
    model = tiny_model("qwen2")
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"response_mask must have shape \[B, T-1\]"):
        response_logits(model, ids, torch.ones_like(ids), torch.ones(2, 5, dtype=torch.bool))


def test_the_trainer_passes_response_rows_and_the_loss_writes_dlogits_in_place(workspace, tmp_path, monkeypatch):
    seen = []
    real_loss = siri.train.trainer.grpo_loss

    def spy(logits, targets, old_logprobs, advantages, mask, **kwargs):
        record = {"shape": tuple(logits.shape), "targets": targets.numel(), "leaf": logits.grad_fn is None,
                  "contiguous": logits.is_contiguous(), "storage": logits.untyped_storage().data_ptr(),
                  "grad_storage": None}

        def remember(grad):
            record["grad_storage"] = grad.untyped_storage().data_ptr()
        logits.register_hook(remember)
        seen.append(record)
        return real_loss(logits, targets, old_logprobs, advantages, mask, **kwargs)

    monkeypatch.setattr(siri.train.trainer, "grpo_loss", spy)
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={tmp_path}", "trainer.steps=1",
                                                  "trainer.save_rollouts=false", "algo.micro_batch_tokens=120"])
    metrics = Trainer(cfg).fit()
    assert len(seen) > 1, "several micro-batches expected"
    assert sum(r["shape"][0] for r in seen) == metrics["train_tokens"] == metrics["tokens_generated"]
    for r in seen:
        assert len(r["shape"]) == 2 and r["shape"][0] == r["targets"]
        assert not r["leaf"] and r["contiguous"]
        assert r["grad_storage"] == r["storage"], "dlogits went to a new buffer, not the logits' storage"
