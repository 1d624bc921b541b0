"""Speed features for training: packed batches, varlen attention, fused kernels, lean loss and memory.

Every feature has a plain fallback, so the same code trains on an H100, a free
Colab T4 (fp16, no FlashAttention-2) and a CPU:

- `PackedCollator`: examples laid end to end in one row, position ids restart
  per example and `cu_seq_lens_*` mark the boundaries; no padding token is
  ever computed. The loss equals the padded loss (tests/test_fast.py).
- `choose_attention`: PyTorch's own flash varlen kernel (`torch.nn.attention.varlen`,
  registered with transformers as "clonekit_varlen") where it exists and
  checks out against SDPA; SDPA elsewhere (transformers then builds a
  block-diagonal mask from the restarting position ids).
- `apply_fused_kernels`: Liger's RMSNorm, RoPE and SwiGLU when liger-kernel is
  installed on a CUDA GPU; nothing otherwise.
- `causal_lm_loss`: cross-entropy that never holds the full logits (Liger's
  fused linear cross-entropy on CUDA, else chunks recomputed in backward).
- `enable_checkpointing`: gradient checkpointing on all or some decoder layers,
  optionally parking each layer's input in pinned CPU memory; `tile_mlp` runs the
  MLPs in checkpointed 4096-token tiles. Together: an 8B QLoRA trains on 49k-token
  examples in 14 GiB (bench/results/train_t4.md).

Used by clonekit/train.py; measured by bench/train_throughput.py.
"""

from __future__ import annotations

import inspect
from typing import Any

VARLEN_NAME = "clonekit_varlen"
IGNORE = -100


# ---------------------------------------------------------------- packed batches


def pack_features(features: list[dict[str, list[int]]]) -> dict[str, Any]:
    """Lay examples end to end: one row, positions restarting per example, boundaries as cu_seqlens.

    The first label of each example is masked: in a padded batch nothing predicts
    it either, so the packed loss is the padded loss.

    >>> b = pack_features([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}])
    >>> b["position_ids"].tolist(), b["labels"].tolist(), b["cu_seq_lens_q"].tolist()
    ([[0, 1, 2, 0, 1]], [[-100, 6, 7, -100, 9]], [0, 3, 5])
    """
    import torch

    assert features and all(len(f["input_ids"]) > 0 for f in features), "empty example in a packed batch"
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    cu = [0]
    for f in features:
        n = len(f["input_ids"])
        lab = list(f.get("labels", f["input_ids"]))
        assert len(lab) == n, f"labels ({len(lab)}) and input_ids ({n}) differ in length"
        lab[0] = IGNORE
        ids.extend(f["input_ids"])
        labels.extend(lab)
        pos.extend(range(n))
        cu.append(cu[-1] + n)
    cu_t = torch.tensor(cu, dtype=torch.int32)
    longest = max(b - a for a, b in zip(cu, cu[1:]))
    return {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([pos]),
        "cu_seq_lens_q": cu_t,
        "cu_seq_lens_k": cu_t,
        "max_length_q": longest,
        "max_length_k": longest,
    }


class PackedCollator:
    """Data collator for the trainer: `pack_features` on each micro batch."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return pack_features([{"input_ids": f["input_ids"], "labels": f.get("labels", f["input_ids"])} for f in features])


def real_tokens(batch: dict[str, Any], pad_token_id: int | None = None) -> int:
    """Tokens that are not padding: what tokens/s must count (numel() counts padding too).

    >>> import torch
    >>> real_tokens({"input_ids": torch.ones(2, 5), "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1] * 5])})
    8
    """
    ids = batch["input_ids"]
    if batch.get("attention_mask") is not None:
        return int(batch["attention_mask"].sum())
    if "cu_seq_lens_q" in batch:  # packed: no padding at all
        return int(ids.numel())
    if pad_token_id is None:
        return int(ids.numel())
    return int((ids != pad_token_id).sum())


# ---------------------------------------------------------------- attention


def _varlen_fn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except Exception:  # torch < 2.10, or built without it
        return None
    return varlen_attn


def _varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    """transformers attention function over torch's flash varlen kernel; q/k/v arrive as (B, H, T, D).

    Causal within each packed example (cu_seq_lens_q), nothing across examples.
    Handles both the torch 2.10/2.11 signature (positional is_causal) and the later one (window_size, enable_gqa).
    """
    import torch

    varlen_attn = _varlen_fn()
    b, hq, t, d = query.shape
    hk = key.shape[1]
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:  # an unpacked batch: each row is one sequence
        cu = torch.arange(0, (b + 1) * t, t, dtype=torch.int32, device=query.device)
        max_len = t
    else:
        cu = cu.to(device=query.device, dtype=torch.int32)
        max_len = int(kwargs.get("max_length_q") or t)
    out_dtype = query.dtype
    if out_dtype not in (torch.float16, torch.bfloat16):  # flash needs 16-bit; fp32 can only come from upcasts
        half = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
        query, key, value = query.to(half), key.to(half), value.to(half)
    q = query.transpose(1, 2).reshape(b * t, hq, d)
    k = key.transpose(1, 2).reshape(b * t, hk, d)
    v = value.transpose(1, 2).reshape(b * t, hk, d)
    params = inspect.signature(varlen_attn).parameters
    extra: dict[str, Any] = {}
    if scaling is not None and abs(scaling - d**-0.5) > 1e-9:
        assert "scale" in params, "this torch's varlen_attn has no scale argument"
        extra["scale"] = scaling
    if hk != hq:
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            k = k.repeat_interleave(hq // hk, dim=1)
            v = v.repeat_interleave(hq // hk, dim=1)
    if "window_size" in params:
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len, window_size=(-1, 0), **extra)
    else:
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len, True, **extra)
    return out.reshape(b, t, hq, d).to(out_dtype), None


def register_varlen_attention() -> bool:
    """Register "clonekit_varlen" with transformers (no mask is built for it: boundaries come as cu_seqlens)."""
    if _varlen_fn() is None:
        return False
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_NAME, _varlen_attention_forward)
    try:
        from transformers.masking_utils import AttentionMaskInterface

        AttentionMaskInterface.register(VARLEN_NAME, lambda *a, **k: None)
    except ImportError:  # pragma: no cover - older transformers build no mask for unknown implementations
        pass
    return True


def _varlen_matches_sdpa(dtype) -> bool:
    """Two packed sequences (GQA, as in Llama 3) through the varlen kernel, forward and backward, vs SDPA one at a time."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator(device="cuda").manual_seed(0)
    lens = [37, 91]
    hq, hk, d = 8, 2, 64
    q, k, v = (torch.randn(1, h, sum(lens), d, device="cuda", dtype=dtype, generator=gen).requires_grad_() for h in (hq, hk, hk))
    cu = torch.tensor([0, lens[0], sum(lens)], dtype=torch.int32, device="cuda")
    out, _ = _varlen_attention_forward(None, q, k, v, None, scaling=d**-0.5, cu_seq_lens_q=cu, max_length_q=max(lens))
    grad = torch.randn(out.shape, device="cuda", dtype=out.dtype, generator=gen)
    dq, dk = torch.autograd.grad(out, (q, k), grad)
    q32, k32, v32 = (x.detach().double().requires_grad_() for x in (q, k, v))
    refs = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        kk = k32[:, :, a:b].repeat_interleave(hq // hk, dim=1)
        vv = v32[:, :, a:b].repeat_interleave(hq // hk, dim=1)
        refs.append(F.scaled_dot_product_attention(q32[:, :, a:b], kk, vv, is_causal=True).transpose(1, 2))
    ref = torch.cat(refs, dim=1)
    rq, rk = torch.autograd.grad(ref, (q32, k32), grad.double())

    def rel(x, y):
        return ((x.double() - y).norm() / y.norm()).item()

    return max(rel(out, ref), rel(dq, rq), rel(dk, rk)) < 2e-2


def choose_attention(device: str, dtype=None, want: str = "auto") -> str:
    """'clonekit_varlen' on a GPU where torch's flash varlen kernel works (sm80+, 16-bit), else 'sdpa'.

    >>> choose_attention("cpu")
    'sdpa'
    """
    if want not in ("auto", VARLEN_NAME):
        return want
    if device != "cuda":
        return "sdpa"
    import torch

    if dtype not in (torch.float16, torch.bfloat16) or torch.cuda.get_device_capability()[0] < 8:
        return "sdpa"  # a T4 (sm75) has no flash kernel: SDPA's memory-efficient kernel takes the packed mask
    try:
        if register_varlen_attention() and _varlen_matches_sdpa(dtype):
            return VARLEN_NAME
        print("torch varlen attention unavailable or inexact here; using sdpa")
    except Exception as e:  # pragma: no cover - depends on the torch build
        print(f"torch varlen attention unavailable ({type(e).__name__}: {e}); using sdpa")
    return "sdpa"


# ---------------------------------------------------------------- fused kernels


def have_liger() -> bool:
    try:
        import liger_kernel.transformers  # noqa: F401
    except Exception:
        return False
    return True


def apply_fused_kernels(model, device: str) -> list[str]:
    """Liger RMSNorm/RoPE/SwiGLU on the model in place when liger-kernel is installed on CUDA; returns what was applied.

    Call before wrapping the model with PEFT. The loss side (fused linear cross-entropy) is `causal_lm_loss`.
    """
    if device != "cuda" or not have_liger():
        return []
    import liger_kernel.transformers as lk

    model_type = getattr(getattr(model, "config", None), "model_type", "")
    fn = getattr(lk, f"apply_liger_kernel_to_{model_type}", None)
    if fn is None:
        return []
    kwargs = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False, "fused_linear_cross_entropy": False, "model": model}
    accepted = inspect.signature(fn).parameters
    try:
        fn(**{k: v for k, v in kwargs.items() if k in accepted})
    except Exception as e:  # pragma: no cover - a liger/transformers version mismatch must not stop training
        print(f"liger kernels not applied ({type(e).__name__}: {e})")
        return []
    return [f"liger_{k}" for k in ("rope", "rms_norm", "swiglu") if k in accepted]


# ---------------------------------------------------------------- loss


def _chunk_ce_sum(h, weight, target):
    import torch.nn.functional as F

    logits = (h @ weight.t()).float()
    return F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum")


def loss_chunk_tokens(vocab_size: int, budget_bytes: int = 2**28) -> int:
    """Tokens per chunk so one chunk's fp32 logits stay near `budget_bytes` (256 MB: 523 tokens of a 128k vocab).

    >>> loss_chunk_tokens(128256), loss_chunk_tokens(49152)
    (523, 1365)
    """
    return max(64, budget_bytes // (4 * vocab_size))


def causal_lm_loss(hidden, weight, labels, num_items=None, chunk_tokens: int | None = None, use_liger: bool | None = None):
    """Next-token cross-entropy from the last hidden states, without materializing all logits.

    Only positions with a target go through the vocab-sized product. Sum over the
    target tokens divided by `num_items` (all target tokens of the accumulated
    batch, as the trainer passes it), else by this batch's count.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    target = labels[:, 1:].reshape(-1).to(h.device)
    keep = target != IGNORE
    h, target = h[keep], target[keep]
    denom = num_items if num_items is not None else keep.sum()
    if isinstance(denom, torch.Tensor):
        denom = denom.to(h.device)
    if h.shape[0] == 0:
        return hidden.sum() * 0.0
    if use_liger is None:
        use_liger = h.is_cuda and have_liger()
    if use_liger:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        total = LigerFusedLinearCrossEntropyLoss(reduction="sum")(weight, h.to(weight.dtype), target)
        return total.float() / denom
    chunk = chunk_tokens or loss_chunk_tokens(weight.shape[0])
    total = h.new_zeros((), dtype=torch.float32)
    for i in range(0, h.shape[0], chunk):
        part = (h[i:i + chunk], weight, target[i:i + chunk])
        total = total + (checkpoint(_chunk_ce_sum, *part, use_reentrant=False) if torch.is_grad_enabled() and h.requires_grad else _chunk_ce_sum(*part))
    return total / denom


def split_causal_lm(model):
    """(decoder stack, lm_head) of a causal LM, through a PEFT wrapper if any."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    inner = getattr(base, base.base_model_prefix, None) if getattr(base, "base_model_prefix", "") else None
    if inner is None or inner is base:
        inner = getattr(base, "model", None)
    assert head is not None and inner is not None, f"not a causal LM with a decoder and an lm_head: {type(base).__name__}"
    return inner, head


MODEL_KEYS = ("input_ids", "position_ids", "attention_mask", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def lean_forward_loss(model, inputs: dict[str, Any], num_items=None, use_liger: bool | None = None):
    """Decoder forward (no KV cache: packed boundaries hold) + `causal_lm_loss`; returns (loss, hidden)."""
    inner, head = split_causal_lm(model)
    out = inner(**{k: inputs[k] for k in MODEL_KEYS if inputs.get(k) is not None}, use_cache=False)
    hidden = out.last_hidden_state
    return causal_lm_loss(hidden, head.weight, inputs["labels"], num_items=num_items, use_liger=use_liger), hidden


# ---------------------------------------------------------------- memory


def enable_checkpointing(model, offload: bool = False, layers: int | None = None) -> int:
    """Gradient checkpointing on the last `layers` decoder layers (all when None); returns how many.

    `offload` parks each checkpointed layer's input in pinned CPU memory until
    backward, so GPU memory no longer grows with the number of layers.
    """
    import functools

    import torch
    import torch.utils.checkpoint

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # the offloaded function needs a grad-carrying input at layer 0
    func = offloaded_checkpoint if offload else functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # pragma: no cover - older transformers: every module that took the setting
        GradientCheckpointingLayer = torch.nn.Module
    wired = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)
             and getattr(m, "gradient_checkpointing", False) and hasattr(m, "_gradient_checkpointing_func")]
    keep_from = 0 if layers is None else max(0, len(wired) - layers)
    for i, module in enumerate(wired):
        if i < keep_from:
            module.gradient_checkpointing = False  # early layers keep their activations: less recompute
        else:
            module._gradient_checkpointing_func = func
    return len(wired) - keep_from


def tile_mlp(model, tokens: int = 4096) -> int:
    """Run each decoder layer's MLP over tiles of `tokens` tokens, each checkpointed; returns the layers patched.

    The MLP's activations (gate, up and their product: ~3.5x the hidden size per token)
    then live one tile at a time instead of for the whole sequence: the long-context
    mode's biggest saving, for one extra MLP forward. Short batches run untouched.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    count = 0
    for module in model.modules():
        mlp = getattr(module, "mlp", None)
        if mlp is None or not hasattr(module, "self_attn") or getattr(mlp, "_clonekit_tiled", False):
            continue
        inner = mlp.forward

        def forward(x, _inner=inner):
            if x.shape[-2] <= tokens or not torch.is_grad_enabled():
                return _inner(x)
            return torch.cat([checkpoint(_inner, part, use_reentrant=False) for part in x.split(tokens, dim=-2)], dim=-2)

        mlp.forward = forward
        mlp._clonekit_tiled = True
        count += 1
    return count


def offloaded_checkpoint(fn, hidden, *rest):
    """Checkpoint `fn(hidden, *rest)` keeping only a CPU copy of `hidden` until backward."""
    return _OffloadedCheckpoint.apply(fn, hidden, *rest)


def _make_offload_cls():
    import torch

    class OffloadedCheckpoint(torch.autograd.Function):
        @staticmethod
        def forward(ctx, fn, hidden, *rest):
            dev = hidden.device
            ctx.fn, ctx.rest, ctx.device = fn, rest, dev
            ctx.autocast = (torch.is_autocast_enabled(dev.type), torch.get_autocast_dtype(dev.type))
            if hidden.is_cuda:
                ctx.rng = torch.cuda.get_rng_state(dev)
                ctx.saved = torch.empty(hidden.shape, dtype=hidden.dtype, pin_memory=True)
                ctx.saved.copy_(hidden.detach(), non_blocking=True)
            else:
                ctx.rng, ctx.saved = torch.get_rng_state(), hidden.detach().clone()
            with torch.no_grad():
                return fn(hidden, *rest)

        @staticmethod
        def backward(ctx, *grads):
            h = ctx.saved.to(ctx.device, non_blocking=True).requires_grad_(True)
            ctx.saved = None
            devices = [ctx.device] if ctx.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                if devices:
                    torch.cuda.set_rng_state(ctx.rng, ctx.device)
                else:
                    torch.set_rng_state(ctx.rng)
                with torch.enable_grad(), torch.autocast(ctx.device.type, enabled=ctx.autocast[0], dtype=ctx.autocast[1]):
                    out = ctx.fn(h, *ctx.rest)
            outs = out if isinstance(out, tuple) else (out,)
            pairs = [(o, g) for o, g in zip(outs, grads) if isinstance(o, torch.Tensor) and o.requires_grad and g is not None]
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
            return (None, h.grad) + (None,) * len(ctx.rest)

    return OffloadedCheckpoint


class _Lazy:
    """Builds the autograd.Function on first use, so importing clonekit.fast needs no torch."""

    cls = None

    def apply(self, *a):
        if _Lazy.cls is None:
            _Lazy.cls = _make_offload_cls()
        return _Lazy.cls.apply(*a)


_OffloadedCheckpoint = _Lazy()
