"""Fast training paths: packed loss == padded loss, chunked CE == full CE, varlen attention wiring, offloaded
checkpointing and tiled MLPs give the plain gradients, clean fallbacks without Liger or CUDA. Tiny random Llamas on CPU."""

from __future__ import annotations

import pytest

from conftest import requires_torch

pytestmark = requires_torch


def tiny_llama(attn: str = "sdpa", layers: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=72, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0)
    cfg._attn_implementation = attn
    model = LlamaForCausalLM(cfg).eval()
    model.config.use_cache = False
    return model


def features(lengths=(5, 17, 9, 30), train_on_inputs=False, seed=1):
    """Chat-shaped examples: context masked, loss on the reply at the end (or on everything)."""
    import random

    rng = random.Random(seed)
    out = []
    for n in lengths:
        ids = [rng.randrange(1, 97) for _ in range(n)]
        k = max(2, n // 3)
        labels = list(ids) if train_on_inputs else [-100] * (n - k) + ids[n - k:]
        out.append({"input_ids": ids, "labels": labels})
    return out


def padded_loss(model, feats):
    """The reference: right-padded batch, attention mask, HF's own loss."""
    import torch

    n = max(len(f["input_ids"]) for f in feats)
    ids = torch.tensor([f["input_ids"] + [0] * (n - len(f["input_ids"])) for f in feats])
    labels = torch.tensor([f["labels"] + [-100] * (n - len(f["labels"])) for f in feats])
    mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (n - len(f["input_ids"])) for f in feats])
    return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss


@pytest.mark.parametrize("train_on_inputs", [False, True])
def test_packed_loss_and_gradients_equal_padded(train_on_inputs):
    import torch

    from clonekit.fast import PackedCollator, lean_forward_loss

    feats = features(train_on_inputs=train_on_inputs)
    model = tiny_llama()
    ref = padded_loss(model, feats)
    ref_grad = torch.autograd.grad(ref, model.model.layers[0].mlp.up_proj.weight)[0]
    batch = PackedCollator()(feats)
    assert batch["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in feats))  # not one padding token
    loss, _ = lean_forward_loss(model, batch, use_liger=False)
    grad = torch.autograd.grad(loss, model.model.layers[0].mlp.up_proj.weight)[0]
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    # the check can fail: positions that do not restart let the examples see each other
    leaky = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1])[None])
    assert abs(lean_forward_loss(model, leaky, use_liger=False)[0].item() - ref.item()) > 1e-3


def test_num_items_divides_the_whole_accumulated_batch():
    from clonekit.fast import PackedCollator, lean_forward_loss

    feats = features()
    model = tiny_llama()
    a, b = PackedCollator()(feats[:2]), PackedCollator()(feats[2:])
    total = sum(int((x["labels"][:, 1:] != -100).sum()) for x in (a, b))
    split = sum(lean_forward_loss(model, x, num_items=total, use_liger=False)[0] for x in (a, b))
    whole = lean_forward_loss(model, PackedCollator()(feats), use_liger=False)[0]
    assert split.item() == pytest.approx(whole.item(), rel=1e-5)


def test_chunked_cross_entropy_equals_full_including_gradients():
    import torch
    import torch.nn.functional as F

    from clonekit.fast import causal_lm_loss

    torch.manual_seed(0)
    hidden = torch.randn(2, 23, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (2, 23))
    labels[0, :9] = -100
    labels[1, 20:] = -100
    loss = causal_lm_loss(hidden, weight, labels, chunk_tokens=7, use_liger=False)
    ref = F.cross_entropy((hidden[:, :-1] @ weight.t()).reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, ref.to(loss.dtype))
    g = torch.autograd.grad(loss, (hidden, weight))
    gr = torch.autograd.grad(ref, (hidden, weight))
    for x, y in zip(g, gr):
        torch.testing.assert_close(x, y)
    # a batch without any target gives a zero loss that still backpropagates
    empty = causal_lm_loss(hidden, weight, torch.full((2, 23), -100), use_liger=False)
    assert empty.item() == 0.0 and empty.requires_grad


def _fake_varlen(new_api: bool):
    """CPU stand-in for torch.nn.attention.varlen.varlen_attn (CUDA only): SDPA per packed sequence."""
    import torch
    import torch.nn.functional as F

    def attend(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale=None, gqa=False):
        outs = []
        for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            qq, kk, vv = (x[a:b].transpose(0, 1) for x in (q, k, v))
            if kk.shape[0] != qq.shape[0]:
                assert gqa, "GQA shapes passed without enable_gqa"
                kk, vv = (x.repeat_interleave(qq.shape[0] // x.shape[0], dim=0) for x in (kk, vv))
            outs.append(F.scaled_dot_product_attention(qq, kk, vv, is_causal=causal, scale=scale).transpose(0, 1))
        return torch.cat(outs)

    if new_api:
        def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
            return attend(q, k, v, cu_q, cu_k, max_q, max_k, window_size == (-1, 0), scale, enable_gqa)
    else:  # torch 2.10/2.11: positional is_causal, no GQA
        def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, return_aux=None):
            return attend(q, k, v, cu_q, cu_k, max_q, max_k, is_causal)
    return varlen_attn


@pytest.mark.parametrize("new_api", [True, False])
def test_varlen_attention_is_wired_through_transformers(monkeypatch, new_api):
    """cu_seq_lens reach the registered attention and give the padded loss (the kernel itself needs CUDA)."""
    from clonekit import fast

    monkeypatch.setattr(fast, "_varlen_fn", lambda: _fake_varlen(new_api))
    assert fast.register_varlen_attention()
    feats = features()
    ref = padded_loss(tiny_llama("sdpa"), feats).item()
    model = tiny_llama(fast.VARLEN_NAME)
    loss, _ = fast.lean_forward_loss(model, fast.PackedCollator()(feats), use_liger=False)
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def _lora(model, dropout=0.0):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", init_lora_weights=False))


def _loss_and_lora_grads(model, batch):
    from clonekit.fast import lean_forward_loss

    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = lean_forward_loss(model, batch, use_liger=False)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("mode", ["checkpoint", "partial", "offload_tiled"])
def test_checkpointing_offload_and_tiled_mlp_keep_the_gradients(mode):
    import torch

    from clonekit.fast import PackedCollator, enable_checkpointing, tile_mlp

    batch = PackedCollator()(features(lengths=(20, 33, 11)))
    plain = _lora(tiny_llama(layers=3))
    ref_loss, ref = _loss_and_lora_grads(plain, batch)
    model = tiny_llama(layers=3)
    n = enable_checkpointing(model, offload=mode == "offload_tiled", layers=2 if mode == "partial" else None)
    assert n == (2 if mode == "partial" else 3)
    if mode == "offload_tiled":
        assert tile_mlp(model, tokens=16) == 3  # 64 tokens: four tiles per MLP
    model = _lora(model)
    model.load_state_dict(plain.state_dict())
    loss, grads = _loss_and_lora_grads(model, batch)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert grads.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(grads[k], ref[k], rtol=1e-5, atol=1e-7)


def test_fallbacks_without_liger_or_cuda(monkeypatch):
    import sys

    from clonekit import fast

    model = tiny_llama()
    assert fast.choose_attention("cpu") == "sdpa"
    assert fast.choose_attention("cpu", want="eager") == "eager"
    assert fast.apply_fused_kernels(model, "cpu") == []
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # liger-kernel not installed
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", None)
    assert not fast.have_liger()
    assert fast.apply_fused_kernels(model, "cuda") == []
    loss, _ = fast.lean_forward_loss(model, fast.PackedCollator()(features()))  # use_liger=None: decides by itself
    assert loss.item() == pytest.approx(padded_loss(model, features()).item(), rel=1e-5)


def test_real_tokens_never_counts_padding():
    import torch

    from clonekit.fast import PackedCollator, real_tokens

    feats = features()
    assert real_tokens(PackedCollator()(feats)) == sum(len(f["input_ids"]) for f in feats)
    padded = {"input_ids": torch.tensor([[5, 6, 0], [7, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}
    assert real_tokens(padded) == 3
    assert real_tokens({"input_ids": padded["input_ids"]}, pad_token_id=0) == 3
