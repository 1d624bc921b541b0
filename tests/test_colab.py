"""Colab helpers: the runtime description, the advice, and the recommended-model list's consistency."""

from __future__ import annotations

import re

import pytest

from clonekit import colab

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def test_recommended_models_are_well_formed_and_fit_a_t4():
    ids = [m.hub_id for m in colab.RECOMMENDED_MODELS]
    assert len(ids) == len(set(ids)) >= 6
    for m in colab.RECOMMENDED_MODELS:
        assert HUB_ID.match(m.hub_id), m.hub_id
        assert 1.0 <= m.params_b <= 8.0, m  # "1-8B instruct models"
        assert re.search(r"(?i)instruct|-it$", m.hub_id), f"{m.hub_id} is not an instruct/chat model"
        assert m.template in ("ChatML", "Llama-3", "Gemma", "Mistral [INST]")
        assert m.heads % m.kv_heads == 0 and m.layers > 0 and m.vocab > 30_000
        # the architecture numbers add up to the stated size (embeddings + layers), within 12%
        q, kv = m.heads * m.head_dim, m.kv_heads * m.head_dim
        per_layer = m.hidden * (q + 2 * kv) + q * m.hidden + 3 * m.hidden * m.intermediate
        total = m.layers * per_layer + m.vocab * m.hidden * (1 if m.tied_embeddings else 2)
        assert total / 1e9 == pytest.approx(m.params_b, rel=0.12), (m.hub_id, total / 1e9)
        worst = colab.estimate_memory_gb(m)
        assert worst["total"] <= colab.T4_BUDGET_GB < colab.T4_MEMORY_GB, (m.hub_id, worst)
        assert m.max_seq_length >= 512 and m.micro_batch_size * m.gradient_accumulation_steps >= 8
    assert colab.RECOMMENDED_MODELS[0].hub_id == __import__("clonekit.models").models.RECOMMENDED_GPU_MODEL


def test_memory_estimate_is_clonekit_memory_with_t4_settings_and_can_say_no():
    from clonekit.memory import estimate_memory

    m = colab.recommended_model("Qwen/Qwen2.5-3B-Instruct")
    direct = estimate_memory(colab.model_config(m), {"quantization": "4bit", "precision": "fp16", "micro_batch_size": 2,
                                                      "max_seq_length": 1024, "fused_kernels": "off"})
    ours = colab.estimate_memory_gb(m)
    assert ours["weights"] == pytest.approx(direct["weights_gb"], abs=0.01) and ours["total"] > direct["needed_gb"]
    m = colab.recommended_model("Qwen/Qwen2.5-1.5B-Instruct")
    base = colab.estimate_memory_gb(m, 1024, 4)
    assert colab.estimate_memory_gb(m, 2048, 4)["total"] > base["total"]
    doubled = colab.estimate_memory_gb(m, 1024, 8)
    assert doubled["activations"] > 1.8 * base["activations"]
    assert doubled["logits"] < 1.2 * base["logits"]  # the chunked loss never holds all 151k-wide logits at once
    assert colab.estimate_memory_gb(m, 1024, 4, lora_r=64)["lora_and_optimizer"] > base["lora_and_optimizer"]
    assert colab.estimate_memory_gb(m, 4096, 16)["total"] > colab.T4_MEMORY_GB  # the form warns about this one
    # 4-bit weights are what makes a 7B model fit at all
    big = colab.recommended_model("Qwen/Qwen2.5-7B-Instruct")
    assert colab.estimate_memory_gb(big, quantization="none")["total"] > colab.T4_MEMORY_GB > colab.T4_BUDGET_GB > colab.estimate_memory_gb(big)["total"]


def test_time_estimate_scales_with_size_and_tokens():
    small, big = colab.recommended_model("Qwen/Qwen2.5-1.5B-Instruct"), colab.recommended_model("Qwen/Qwen2.5-7B-Instruct")
    assert colab.estimate_minutes(big) > 4 * colab.estimate_minutes(small)
    assert colab.estimate_minutes(small, tokens=2_000_000) == pytest.approx(2 * colab.estimate_minutes(small, tokens=1_000_000))
    assert 10 < colab.estimate_minutes(small) < 300


def test_models_table_lists_every_model_and_says_how_numbers_were_obtained():
    table = colab.models_table()
    for m in colab.RECOMMENDED_MODELS:
        assert m.hub_id in table and f"| {colab.estimate_memory_gb(m)['total']:.1f} GB |" in table
    assert "not measurements" in table and "gated" in table


def test_pick_model_and_presets_follow_gpu_memory():
    assert colab.pick_model(15.0).hub_id == colab.RECOMMENDED_MODELS[0].hub_id
    assert colab.pick_model(2.0) is None
    assert colab.preset_for_runtime({"gpu_memory_gb": None}) == "CPU (tiny demo)"
    assert colab.preset_for_runtime({"gpu_memory_gb": 14.7}) == "T4 15 GB (free Colab)"
    assert colab.preset_for_runtime({"gpu_memory_gb": 79.2}) == "A100 40 GB"
    for name, p in colab.GPU_PRESETS.items():
        if p["gpu_memory_gb"]:
            est = colab.estimate_for_settings(p["base_model"], p["max_seq_length"], p["micro_batch_size"], p["lora_r"])
            assert est["total"] <= p["gpu_memory_gb"] * colab.T4_BUDGET_GB / colab.T4_MEMORY_GB, (name, est)


def test_describe_runtime_and_advice_here():
    rt = colab.describe_runtime()
    assert rt["colab"] is False and rt["cpu_count"] >= 1 and rt["python"].count(".") == 2
    advice = colab.gpu_advice(rt)
    if not rt["cuda"]:
        assert "No GPU" in advice and "Colab" in advice


@pytest.mark.parametrize("rt, words", [
    ({"torch": "2.5", "cuda": False, "colab": True}, ["Runtime > Change runtime type", "T4 GPU"]),
    ({"torch": "2.5", "cuda": True, "colab": True, "gpu": "Tesla T4", "gpu_memory_gb": 14.7, "bf16": False}, ["fp16", "no bf16", "Qwen/Qwen2.5-1.5B-Instruct"]),
    ({"torch": "2.5", "cuda": True, "colab": True, "gpu": "NVIDIA A100", "gpu_memory_gb": 40.0, "bf16": True}, ["bf16"]),
    ({"torch": None}, ["install cell"]),
])
def test_gpu_advice_says_what_to_do(rt, words):
    advice = colab.gpu_advice(rt)
    for w in words:
        assert w in advice, advice


def test_install_command_and_small_mode(monkeypatch):
    cmd = colab.install_command("colab,gguf")
    assert cmd == f'pip install -q "clonekit[colab,gguf] @ git+{colab.REPO_URL}"' and "torch" not in cmd
    pinned = colab.install_command("train,cuda,colab", torch_version="2.8.0+cu126")
    assert pinned.endswith('"torch==2.8.0+cu126"') and pinned.count("torch") == 1
    monkeypatch.setenv("CLONEKIT_SMALL", "1")
    assert colab.small_mode()
    monkeypatch.setenv("CLONEKIT_SMALL", "0")
    assert not colab.small_mode()
