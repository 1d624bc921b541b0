"""Memory estimate and GPU presets: sane numbers, the activation count checked against what autograd really
keeps on a CPU model, presets per GPU size, checkpointing plans, advice when a run does not fit."""

from __future__ import annotations

import pytest

from clonekit.memory import (advise, estimate_memory, layer_activation_units, longest_fitting_context, model_shape,
                             plan_checkpointing, preset_for_gpu)

LLAMA3_8B = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False}
LLAMA32_1B = {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": True}
T4 = {"quantization": "4bit", "precision": "fp16", "attention": "sdpa"}


def test_estimate_is_sane_for_an_8b_qlora_on_a_t4():
    est = estimate_memory(LLAMA3_8B, {**T4, "micro_batch_size": 4, "max_seq_length": 2048}, gpu_gb=14.0)
    assert est["params_b"] == pytest.approx(8.03, abs=0.01)
    assert 5.0 < est["weights_gb"] < 5.6  # nf4 linear layers + 16-bit embeddings and head
    assert est["lora_params_m"] == pytest.approx(41.9, abs=0.1)  # r16 on all linear layers of Llama-3-8B
    assert est["fits"] and est["advice"] == ""
    parts = sum(v for k, v in est.items() if k.endswith("_gb") and k not in ("allocated_gb", "needed_gb", "gpu_gb"))
    assert est["allocated_gb"] == pytest.approx(parts, abs=0.01)
    # more tokens, dropout, no checkpointing: more memory; offloading: less
    grow = lambda **c: estimate_memory(LLAMA3_8B, {**T4, "micro_batch_size": 4, "max_seq_length": 2048, **c})["allocated_gb"]  # noqa: E731
    assert grow(max_seq_length=4096) > grow() > grow(max_seq_length=1024)
    assert grow(lora_dropout=0.0) < grow()
    assert grow(gradient_checkpointing="off") > 2 * grow()
    assert grow(offload_activations=True) < grow()
    assert estimate_memory(LLAMA3_8B, {**T4, "quantization": "none"})["weights_gb"] > 14


def test_advice_names_a_change_that_fits():
    est = estimate_memory(LLAMA3_8B, {**T4, "quantization": "none", "micro_batch_size": 4, "max_seq_length": 2048}, gpu_gb=14.0)
    assert not est["fits"] and "--quantization 4bit" in est["advice"]
    big = {**T4, "micro_batch_size": 1, "max_seq_length": 262144}
    msg = advise(LLAMA3_8B, big, 14.0)
    assert "--offload-activations" in msg and "--max-seq-length" in msg
    longest = int(msg.rsplit(" ", 1)[1])
    assert estimate_memory(LLAMA3_8B, {**big, "max_seq_length": longest, "lora_dropout": 0, "offload_activations": True}, 14.0)["fits"]
    assert "smaller base model" in advise(LLAMA3_8B, {**T4, "quantization": "none"}, 4.0)


def test_long_context_mode_reaches_32k_tokens_on_paper():
    """What the estimate promises for an 8B QLoRA in 14 GiB; bench/train_throughput.py --suite t4 measures it."""
    lean = {**T4, "lora_dropout": 0.0, "offload_activations": True, "gradient_checkpointing": "on"}
    assert longest_fitting_context(LLAMA3_8B, lean, 14.0) >= 32768
    assert longest_fitting_context(LLAMA3_8B, {**lean, "offload_activations": False}, 14.0) < 32768


def test_presets_per_gpu_class():
    t4, l4, a100 = preset_for_gpu(14.2, bf16=False), preset_for_gpu(21.5, bf16=True), preset_for_gpu(79.0, bf16=True)
    assert (t4["precision"], t4["micro_batch_size"], t4["gradient_accumulation_steps"]) == ("fp16", 4, 4)
    assert (l4["precision"], l4["micro_batch_size"], l4["gradient_accumulation_steps"]) == ("bf16", 8, 2)
    assert (a100["micro_batch_size"], a100["gradient_accumulation_steps"]) == (16, 1)
    for p in (t4, l4, a100):  # same examples per optimizer step whatever the GPU
        assert p["micro_batch_size"] * p["gradient_accumulation_steps"] == 16


def test_checkpointing_plan_follows_the_memory():
    big = {"quantization": "none", "precision": "bf16", "micro_batch_size": 16, "max_seq_length": 2048}
    assert plan_checkpointing(LLAMA32_1B, big, 139.0)["gradient_checkpointing"] == "off"  # a 1B fits an H200 without
    part = plan_checkpointing(LLAMA3_8B, {**big, "quantization": "4bit"}, 139.0)
    assert part["gradient_checkpointing"] == "on" and 0 < part["checkpoint_layers"] < 32  # only as many layers as needed
    t4 = plan_checkpointing(LLAMA3_8B, {**T4, "micro_batch_size": 4, "max_seq_length": 2048}, 14.0)
    assert t4 == {"gradient_checkpointing": "on", "checkpoint_layers": None, "offload_activations": False}
    long = plan_checkpointing(LLAMA3_8B, {**T4, "micro_batch_size": 1, "max_seq_length": 32768, "lora_dropout": 0.0}, 14.0)
    assert long["offload_activations"]


def _saved_units_per_token(dropout: float, packed: bool) -> float:
    """Bytes autograd keeps for backward inside decoder layer 1 of a LoRA'd CPU Llama, per token, in fp32 elements."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=1024)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"))
    model.train()
    T = 384
    pos = torch.cat([torch.arange(150), torch.arange(T - 150)])[None] if packed else torch.arange(T)[None]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    layer = model.get_base_model().model.layers[1]
    inside, seen = [False], {}

    def pack(t):
        st = t.untyped_storage()
        if inside[0] and st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    layer.register_forward_pre_hook(lambda *a: inside.__setitem__(0, True))
    layer.register_forward_hook(lambda *a: inside.__setitem__(0, False))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.get_base_model().model(input_ids=torch.randint(0, 128, (1, T)), position_ids=pos)
    return sum(seen.values()) / 4 / T, model_shape(cfg.to_dict())


@pytest.mark.parametrize("dropout,packed", [(0.0, False), (0.05, False), (0.0, True), (0.05, True)])
def test_activation_count_matches_what_autograd_keeps(dropout, packed):
    pytest.importorskip("peft")
    measured, shape = _saved_units_per_token(dropout, packed)
    # CPU fp32: HF's RMSNorm upcast is a no-op (no copy), dropout masks are floats
    predicted = layer_activation_units(shape, fused=False, dropout=dropout > 0, attention="sdpa_masked" if packed else "sdpa",
                                       norm_copy=False, mask_units=1.0)
    assert measured == pytest.approx(predicted, rel=0.10), (measured, predicted)
