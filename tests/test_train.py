"""Training: length limits, padding-free loss equivalence, a real short LoRA run on the embedded model."""

from __future__ import annotations

import json

import pytest

from conftest import requires_torch

pytestmark = requires_torch


def long_chat(n_turns: int, words: int = 30) -> list[dict]:
    msgs = [{"role": "system", "content": "Reply in your usual style."}]
    for i in range(n_turns):
        msgs.append({"role": "user", "content": f"question {i} " + "blah " * words})
        msgs.append({"role": "assistant", "content": f"answer {i}", **({"weight": 0} if i < n_turns - 1 else {})})
    return msgs


def test_config_reports_every_problem_at_once():
    from clonekit.errors import ConfigError
    from clonekit.train import TrainConfig

    with pytest.raises(ConfigError) as e:
        TrainConfig(micro_batch_size=0, learning_rate=5, quantization="2bit")
    msg = str(e.value)
    assert "micro_batch_size" in msg and "learning_rate" in msg and "quantization" in msg


def test_long_examples_lose_oldest_context_then_are_dropped(embedded_tokenizer):
    from clonekit.train import fit_example, tokenize_examples

    chat = long_chat(6)
    full, _, status = fit_example(embedded_tokenizer, chat, 10_000)
    assert status == "ok"
    ids, labels, status = fit_example(embedded_tokenizer, chat, len(full) // 2)
    assert status == "truncated" and 0 < len(ids) <= len(full) // 2
    text = embedded_tokenizer.decode(ids)
    assert "answer 5" in text and "question 0 " not in text and text.count("Reply in your usual style.") == 1
    assert embedded_tokenizer.decode([t for t in labels if t != -100]) == "answer 5<|im_end|>\n"
    rows = [{"messages": chat}, {"messages": long_chat(1, words=400)}]
    data, counts = tokenize_examples(embedded_tokenizer, rows, 120)
    assert counts["truncated"] == 1 and counts["dropped_too_long"] == 1 and counts["kept"] == len(data) == 1


def _batch_loss(model, tokenizer, features, padding_free: bool):
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)
    batch = collate([dict(f) for f in features])
    batch = {k: v for k, v in batch.items() if k in ("input_ids", "labels", "attention_mask", "position_ids")}
    with torch.no_grad():  # as in training: no KV cache (with one, transformers ignores packed boundaries)
        return model(**batch, use_cache=False).loss.item(), batch


def test_padding_free_loss_equals_padded_loss(tiny_model_dir, embedded_tokenizer):
    """Packed examples must not attend across each other: same loss as padding them."""
    import torch
    from transformers import AutoModelForCausalLM

    from clonekit.train import tokenize_examples

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32).eval()
    rows = [{"messages": long_chat(k, words=3 * k)} for k in (1, 2, 4)]
    features, _ = tokenize_examples(embedded_tokenizer, rows, 1024)
    assert len({len(f["input_ids"]) for f in features}) == 3  # uneven lengths: padding really happens
    padded, pb = _batch_loss(model, embedded_tokenizer, features, padding_free=False)
    packed, fb = _batch_loss(model, embedded_tokenizer, features, padding_free=True)
    assert fb["input_ids"].shape[0] == 1 and (fb["input_ids"] != embedded_tokenizer.pad_token_id).all()
    assert pb["input_ids"].numel() > fb["input_ids"].numel()
    assert packed == pytest.approx(padded, rel=1e-5, abs=1e-5)
    # the check can fail: without restarting positions the examples see each other and the loss moves
    with torch.no_grad():
        leaky = model(input_ids=fb["input_ids"], labels=fb["labels"], use_cache=False).loss.item()
    assert abs(leaky - padded) > 1e-3


@pytest.mark.slow
def test_short_lora_run_lowers_loss_and_saves_everything(tiny_dataset, tmp_path):
    from clonekit import storage
    from clonekit.train import TrainConfig, run_train

    run = tmp_path / "run"
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(run), max_steps=6, micro_batch_size=4,
                         gradient_accumulation_steps=1, learning_rate=2e-3, warmup_ratio=0.0, logging_steps=1,
                         save_steps=2, save_total_limit=2, eval_steps=3, max_seq_length=256, lora_r=8, lora_alpha=16)
    result = run_train(config)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2]), losses
    assert result.eval_loss is not None
    paths = storage.run_paths(run)
    assert (paths.adapter / "adapter_config.json").exists() and (paths.adapter / "adapter_model.safetensors").exists()
    assert [p.name for p in storage.list_checkpoints(paths.checkpoints)] == ["checkpoint-4", "checkpoint-6"]
    assert json.loads(paths.train_config.read_text())["max_steps"] == 6
    assert json.loads(paths.history.read_text()) == result.history
    assert paths.loss_plot.stat().st_size > 1000
    saved = json.loads(paths.result.read_text())
    assert saved["real_tokens"] > 0 and saved["data"]["train"]["kept"] == 24
