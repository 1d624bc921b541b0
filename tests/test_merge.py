"""clonekit.merge: the streaming merge gives the same logits as PeftModel(base) + adapter.

Tiny random-weight models (Llama hidden 64 x 2 layers, GPT-2) are built in tmp folders,
saved in several shards, given a LoRA with nonzero B, merged and compared. Seconds each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from clonekit.config import load_config  # noqa: E402
from clonekit.errors import ConfigError, InputError  # noqa: E402
from clonekit.merge import (  # noqa: E402
    MergeConfig,
    merge_adapter,
    read_adapter,
    run_merge,
)
from clonekit.merge_nf4 import QuantSpec, nf4_round_trip  # noqa: E402
from clonekit.merge_verify import verify_merge  # noqa: E402

PROMPTS = ["hello there, how are you?", "see you at 7 tomorrow!"]


def byte_tokenizer():
    """A 256-token byte-level tokenizer, so verify_merge can tokenize text for the tiny models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=alphabet[0])


def save_base(folder: Path, kind: str = "llama", tie: bool = False, layers: int = 2, shard: str = "40KB", **save_kw) -> Path:
    from transformers import AutoModelForCausalLM, GenerationConfig, GPT2Config, LlamaConfig

    torch.manual_seed(0)
    if kind == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=64, n_head=4, vocab_size=256, n_positions=64, bos_token_id=0, eos_token_id=0)
    else:
        config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=256, tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0, pad_token_id=None)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(max_new_tokens=5, eos_token_id=0)
    model.save_pretrained(folder, max_shard_size=shard, **save_kw)
    byte_tokenizer().save_pretrained(folder)
    return folder


def save_adapter(base: Path, folder: Path, seed: int = 1, **lora_kw) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    kw = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "init_lora_weights": False, **lora_kw}
    get_peft_model(model, LoraConfig(**kw)).save_pretrained(folder)
    return folder


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return save_base(tmp_path_factory.mktemp("llama") / "base")


@pytest.mark.slow
def test_sharded_llama_merge_matches_peft(llama, tmp_path):
    adapter = save_adapter(llama, tmp_path / "adapter")
    counts = merge_adapter(llama, adapter, tmp_path / "merged", max_shard_size="60KB", progress=False)
    assert len(shards(llama)) >= 3 and counts["shards"] == len(shards(tmp_path / "merged")) >= 3
    assert counts["tensors_merged"] == 14  # 7 linear layers x 2 blocks
    index = json.loads((tmp_path / "merged" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards(tmp_path / "merged")}
    v = verify_merge(llama, adapter, tmp_path / "merged", PROMPTS)
    assert v["adapter_effect"] > 0.05, v  # the adapter changes the output, so the comparison means something
    assert v["max_abs_diff"] < 1e-4, v
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "merged" / name).exists(), name


@pytest.mark.slow
def test_rslora_dora_and_patterns(llama, tmp_path):
    adapter = save_adapter(llama, tmp_path / "adapter", use_rslora=True, use_dora=True, r=4,
                           rank_pattern={"o_proj": 2}, alpha_pattern={"down_proj": 3})
    ad = read_adapter(adapter)
    assert ad.loras["model.layers.0.self_attn.o_proj"].scale == pytest.approx(8 / 2**0.5)
    assert ad.loras["model.layers.1.mlp.down_proj"].scale == pytest.approx(3 / 2)
    merge_adapter(llama, ad, tmp_path / "merged", progress=False)
    v = verify_merge(llama, adapter, tmp_path / "merged", PROMPTS)
    assert v["adapter_effect"] > 0.05 and v["max_abs_diff"] < 1e-4, v


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"modules_to_save": ["lm_head"]}, {"target_modules": ["q_proj", "embed_tokens"]}])
def test_tied_embeddings(tmp_path, extra):
    base = save_base(tmp_path / "base", tie=True)
    adapter = save_adapter(base, tmp_path / "adapter", **extra)
    counts = merge_adapter(base, adapter, tmp_path / "merged", progress=False)
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    # The output layer must stay the original embedding when only the input side changes (and vice versa).
    assert counts["untied_embeddings"] == bool(extra) and config["tie_word_embeddings"] == (not extra)
    v = verify_merge(base, adapter, tmp_path / "merged", PROMPTS)
    assert v["adapter_effect"] > 0.05 and v["max_abs_diff"] < 1e-4, v


@pytest.mark.slow
def test_gpt2_conv1d_fan_in_fan_out(tmp_path):
    base = save_base(tmp_path / "base", kind="gpt2")
    adapter = save_adapter(base, tmp_path / "adapter", target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    counts = merge_adapter(base, adapter, tmp_path / "merged", progress=False)
    assert counts["tensors_merged"] == 8
    v = verify_merge(base, adapter, tmp_path / "merged", PROMPTS)
    assert v["adapter_effect"] > 0.05 and v["max_abs_diff"] < 1e-4, v


@pytest.mark.slow
def test_missing_key_names_it(llama, tmp_path):
    adapter = save_adapter(llama, tmp_path / "adapter")
    smaller = save_base(tmp_path / "one_layer", layers=1)
    with pytest.raises(InputError, match=r"model\.layers\.1\.[a-z_]+\.[a-z_]+_proj\.weight.*--base-model"):
        merge_adapter(smaller, adapter, tmp_path / "merged", progress=False)
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
def test_run_merge_bf16_reloads(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    save_adapter(llama, run / "adapter")
    (run / "train_config.json").write_text(json.dumps({"base_model": "nonexistent/model"}))
    result = run_merge(MergeConfig(run_dir=str(run), dtype="bfloat16", max_shard_size="100KB", verify_prompts=2))
    out = Path(result.out_dir)
    assert out == run / "merged" and result.base_model == str(llama)  # from adapter_config.json
    assert result.verification["ok"] and result.verification["adapter_effect"] > 0.05
    assert result.peak_rss_mb > 0 and result.shards == len(shards(out)) >= 2
    model = AutoModelForCausalLM.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert load_config(MergeConfig, out / "merge_config.json").dtype == "bfloat16"
    with pytest.raises(InputError, match="--overwrite"):
        run_merge(MergeConfig(run_dir=str(run), verify=False))


@pytest.mark.slow
def test_bin_only_base(tmp_path):
    from safetensors.torch import load_file

    base = save_base(tmp_path / "base", shard="1GB")
    torch.save(load_file(base / "model.safetensors"), base / "pytorch_model.bin")  # transformers 5 no longer writes .bin
    (base / "model.safetensors").unlink()
    adapter = save_adapter(base, tmp_path / "adapter")
    merge_adapter(base, adapter, tmp_path / "merged", progress=False)
    assert verify_merge(base, adapter, tmp_path / "merged", PROMPTS)["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_dequantized_base_matches_nf4_reference(llama, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    save_adapter(llama, run / "adapter", target_modules=["q_proj", "v_proj"])
    spec = {"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}, "dtype": "float16"}
    (run / "train_config.json").write_text(json.dumps(spec))
    result = run_merge(MergeConfig(run_dir=str(run), max_shard_size="10MB"))
    assert result.dequantized_base and result.quantization["dtype"] == "float16"
    assert result.tensors_requantized == 14 and result.tensors_merged == 4  # every linear but lm_head; LoRA on q/v
    assert result.verification["ok"], result.verification
    merged = {k: v for p in shards(Path(result.out_dir)) for k, v in load_file(p).items()}
    original = {k: v for p in shards(llama) for k, v in load_file(p).items()}
    key = "model.layers.0.mlp.up_proj.weight"  # not adapted: exactly the NF4-rounded weight
    assert torch.equal(merged[key], nf4_round_trip(original[key], QuantSpec(dtype="float16")).float())
    assert torch.equal(merged["model.norm.weight"], original["model.norm.weight"])


def test_config_checks_collected():
    with pytest.raises(ConfigError) as e:
        MergeConfig(dtype="int8", max_shard_size="huge", dequantized_base="maybe", verify_prompts=0)
    assert len(e.value.problems) == 5  # no run_dir/adapter_dir either
    assert MergeConfig(adapter_dir="a", dequantized_base=True).dequantized_base == "true"


def test_unsupported_adapter_is_rejected(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(InputError, match="only LoRA"):
        read_adapter(tmp_path)


@pytest.mark.slow
def test_embedded_model_run_merge(tmp_path):
    """The real default base (SmolLM2-135M, tied embeddings, chat template): merged folder verifies and chats."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clonekit.errors import DependencyError
    from clonekit.models import resolve_base_model

    try:
        base = resolve_base_model("smollm2-135m-instruct")
    except DependencyError as e:
        pytest.skip(str(e))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.save_pretrained(tmp_path / "run" / "adapter")
    (tmp_path / "run" / "dataset_config.json").write_text(json.dumps({"system_prompt": "Reply as Alex."}))
    result = run_merge(MergeConfig(run_dir=str(tmp_path / "run"), verify_prompts=1))
    assert json.loads((Path(result.out_dir) / "dataset_config.json").read_text())["system_prompt"] == "Reply as Alex."
    assert "verified on 1 validation prompt(s)" in str(result)  # what `clonekit merge` prints
    assert result.tensors_merged == 60 and not result.untied_embeddings and result.verification["ok"]
    assert result.verification["max_abs_diff"] < 1e-3 < result.verification["adapter_effect"]
    tok = AutoTokenizer.from_pretrained(result.out_dir)
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
