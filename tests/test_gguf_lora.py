"""clonekit.gguf_lora: a LoRA adapter GGUF on top of the base GGUF gives the merged model's logits in llama.cpp."""

from __future__ import annotations

import numpy as np
import pytest

from clonekit.gguf import convert_to_gguf
from clonekit.gguf_inspect import inspect_gguf
from clonekit.gguf_lora import convert_lora_to_gguf
from test_gguf import REL_TOL, _bpe_tokenizer, _gguf_logits, _hf_logits, build_tiny, needs_gguf


@needs_gguf
@pytest.mark.slow
@pytest.mark.parametrize("rslora", [False, True])
def test_lora_adapter_gguf_matches_merged(tmp_path, rslora):
    import torch
    from peft import LoraConfig, get_peft_model

    model, ids = build_tiny("llama3", tmp_path / "base")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, use_rslora=rslora, init_lora_weights=False, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.1)
    peft_model.save_pretrained(tmp_path / "adapter")
    with_adapter = _hf_logits(peft_model, ids)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    _bpe_tokenizer(tmp_path / "merged")

    base_gguf = convert_to_gguf(tmp_path / "base", tmp_path / "base.gguf", "f32")
    merged_gguf = convert_to_gguf(tmp_path / "merged", tmp_path / "merged.gguf", "f32")
    lora_gguf = convert_lora_to_gguf(tmp_path / "adapter", tmp_path / "base", tmp_path / "lora.gguf")
    info = inspect_gguf(lora_gguf)
    assert info["type"] == "adapter" and info["architecture"] == "llama"

    base, via_lora, via_merged = _gguf_logits(base_gguf, ids), _gguf_logits(base_gguf, ids, lora_gguf), _gguf_logits(merged_gguf, ids)
    scale = np.abs(via_merged).max()
    assert np.abs(via_lora - via_merged).max() / scale < REL_TOL
    assert np.abs(via_lora - with_adapter).max() / scale < REL_TOL
    assert np.abs(base - via_merged).max() / scale > 50 * REL_TOL  # the adapter really changes the output
