"""Base models: the embedded default is built once into a normal HF folder; names resolve clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clonekit.errors import InputError
from clonekit.models import resolve_base_model


def test_hub_ids_pass_through_and_bad_folders_are_named(tmp_path):
    assert resolve_base_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
    assert resolve_base_model("auto", device="cuda") == "Qwen/Qwen2.5-1.5B-Instruct"
    with pytest.raises(InputError, match="no config.json"):
        resolve_base_model(str(tmp_path))
    with pytest.raises(InputError, match="neither a folder"):
        resolve_base_model("./no/such/model/here")


@pytest.mark.slow
def test_embedded_model_is_a_plain_cached_hf_folder(embedded_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from clonekit.models import load_tokenizer

    folder = Path(embedded_model_dir)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert resolve_base_model("auto", device="cpu") == embedded_model_dir  # cached: no rebuild
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = load_tokenizer(embedded_model_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:])
