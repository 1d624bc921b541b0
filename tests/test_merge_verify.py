"""clonekit.merge_verify: the tensor-probe check passes a right merge and catches wrong ones; prompts for the logit check.

The logit check itself (verify_merge) runs in tests/test_merge.py beside each merge it checks.
Tiny random-weight models come from tests/test_merge.py's helpers. Seconds each.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from clonekit.merge import MergeConfig, merge_adapter, run_merge  # noqa: E402
from clonekit.merge_verify import verification_prompts, verify_tensors  # noqa: E402
from test_merge import llama, save_adapter, save_base, shards  # noqa: E402, F401  (llama: a module-scoped fixture)


@pytest.mark.slow
def test_tensor_probe_verification_catches_a_wrong_merge(llama, tmp_path):
    """The bounded-memory check used when the model does not fit in RAM: passes a right merge (DoRA and
    rsLoRA included), fails a merge of another adapter and a changed unadapted tensor."""
    adapter = save_adapter(llama, tmp_path / "adapter", use_dora=True, use_rslora=True)
    merge_adapter(llama, adapter, tmp_path / "merged", progress=False)
    v = verify_tensors(llama, adapter, tmp_path / "merged")
    assert v["tensors_probed"] == 14 and v["tensors_equal"] == 7 and v["tensors_different"] == 0, v  # embed, 5 norms, lm_head
    assert v["max_rel_diff"] < 1e-5 and v["adapter_effect"] > 0.01, v
    assert v["max_err_over_adapter"] < 1e-3 and v["tensors_adapter_resolved"] == 14, v
    other = save_adapter(llama, tmp_path / "other", seed=2, use_dora=True, use_rslora=True)
    assert verify_tensors(llama, other, tmp_path / "merged")["max_err_over_adapter"] > 0.5  # another adapter's merge
    assert verify_tensors(llama, adapter, llama)["max_err_over_adapter"] > 0.9  # the adapter left out
    from safetensors.torch import load_file, save_file

    shard = next(p for p in shards(tmp_path / "merged") if "model.norm.weight" in load_file(p))
    tensors = load_file(shard)
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.01
    save_file(tensors, shard, metadata={"format": "pt"})
    assert verify_tensors(llama, adapter, tmp_path / "merged")["tensors_different"] == 1


@pytest.mark.slow
def test_run_merge_without_ram_for_the_model_uses_probes(tmp_path, monkeypatch):
    """An 8B merge on a 12 GB machine: no room to load the model for a logits check, so run_merge checks
    tensor by tensor (here GPT-2's Conv1D weights, merged into the NF4-rounded base of a QLoRA run)."""
    import clonekit.merge_verify as cmv

    base = save_base(tmp_path / "base", kind="gpt2")
    run = tmp_path / "run"
    save_adapter(base, run / "adapter", target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)
    (run / "train_config.json").write_text(json.dumps({"load_in_4bit": True}))
    monkeypatch.setattr(cmv, "_available_ram", lambda: 10**8)
    result = run_merge(MergeConfig(run_dir=str(run)))
    v = result.verification
    assert v["method"] == "tensor probes" and v["ok"] and result.dequantized_base, v
    assert v["tensors_probed"] == 4 and v["tensors_different"] == 0 and v["max_rel_diff"] < 1e-5 < v["adapter_effect"], v


def test_verification_prompts_come_from_the_validation_split(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "привет"}, {"role": "assistant", "content": "ку"}, {"role": "user", "content": "?"}]},
            {"text": "no messages"}]
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    got = verification_prompts({"data_dir": str(tmp_path)}, 2)
    assert got[0] == rows[0]["messages"][:2] and isinstance(got[1], str)  # cut after the first reply; then a built-in prompt
    assert all(isinstance(p, str) for p in verification_prompts({}, 3))
