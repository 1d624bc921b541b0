"""GPU memory: estimate a LoRA/QLoRA run before it starts, and pick settings per GPU class.

Pure functions on a model config (a dict, a transformers config or a folder
with config.json) and a TrainConfig (or a dict of its fields); no GPU needed.

    >>> cfg = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    ...        "num_attention_heads": 32, "num_key_value_heads": 8}
    >>> est = estimate_memory(cfg, {"quantization": "4bit", "micro_batch_size": 1, "max_seq_length": 2048}, gpu_gb=15)
    >>> est["fits"], round(est["weights_gb"], 1)
    (True, 5.3)

`allocated_gb` predicts `torch.cuda.max_memory_allocated()` of the run (what
bench/train_throughput.py measures against it); `fits` compares it, plus
allocator slack, with the memory torch can use on the GPU (`usable_gpu_gb`).

Activation bytes per token and decoder layer are counted tensor by tensor from
what autograd keeps for backward (RMSNorm, q/k/v, attention, SwiGLU, LoRA
inputs, dropout copies and masks); tests/test_memory.py checks the count on a
CPU model against the tensors autograd really saves.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

GiB = 2**30
CUDA_CONTEXT_GB = 0.5  # CUDA context + cuBLAS/cuDNN handles: outside torch's allocator
ALLOCATOR_SLACK = 1.05  # fragmentation of the caching allocator
FIXED_WORKSPACE_GB = 0.15  # cuBLAS workspace, RNG and optimizer scratch
CHUNKED_LOSS_BYTES = 2**28 * 2.5  # clonekit.fast.causal_lm_loss without Liger: fp32 chunk + 16-bit chunk + grad
MLP_TILE_TOKENS = 4096  # clonekit.fast.tile_mlp: MLP activations for this many tokens at a time (long-context mode)

TRAIN_DEFAULTS: dict[str, Any] = {
    "quantization": "4bit", "precision": "bf16", "micro_batch_size": 4, "max_seq_length": 1024, "lora_r": 16,
    "lora_dropout": 0.05, "gradient_checkpointing": "on", "checkpoint_layers": None, "offload_activations": False,
    "fused_kernels": "auto", "device": "cuda", "attention": "auto",
}


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        return json.loads((path / "config.json" if path.is_dir() else path).read_text(encoding="utf-8"))
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return dict(vars(obj))


def model_shape(model_config: Any) -> dict[str, int]:
    """The sizes the estimate needs, from any Llama/Qwen/Mistral-style config."""
    c = _as_dict(model_config)
    c = c.get("text_config", c) if "hidden_size" not in c else c
    h, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    return {"vocab": int(c["vocab_size"]), "hidden": h, "inter": int(c["intermediate_size"]), "layers": int(c["num_hidden_layers"]),
            "heads": heads, "kv_heads": int(c.get("num_key_value_heads") or heads), "head_dim": int(c.get("head_dim") or h // heads),
            "tied": bool(c.get("tie_word_embeddings", False))}


def count_params(s: dict[str, int], lora_r: int = 16) -> dict[str, int]:
    """Linear (quantizable) weights, embeddings + head, and LoRA weights on all linear layers."""
    h, i, q, kv = s["hidden"], s["inter"], s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    shapes = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    linear = s["layers"] * sum(a * b for a, b in shapes)
    lora = s["layers"] * sum(lora_r * (a + b) for a, b in shapes)
    embed = s["vocab"] * h * (1 if s["tied"] else 2)
    return {"linear": linear, "embed": embed, "lora": lora, "total": linear + embed, "largest_linear": h * i}


def layer_activation_units(s: dict[str, int], fused: bool, dropout: bool, attention: str = "varlen",
                           mlp_tokens_share: float = 1.0, with_input: bool = True, norm_copy: bool | None = None,
                           mask_units: float = 0.5) -> float:
    """Elements kept for backward per token by one decoder layer, in units of one 16-bit element.

    fused: Liger RMSNorm (keeps its input, not an fp32 copy) and SwiGLU (keeps gate and up, not silu(gate)).
    dropout: LoRA dropout keeps a copy and a 1-byte mask of every adapted layer's input.
    attention: "varlen" (q, k, v and output kept once), "sdpa" (one sequence: + a contiguous copy of the
    output), "sdpa_masked" (packed: k and v repeated to all query heads as well).
    mlp_tokens_share: share of the tokens whose MLP activations are alive at once (tiled MLP).
    with_input: count the layer's input (a checkpointed layer keeps it as the checkpoint's input instead).
    norm_copy: HF RMSNorm keeps an fp32 copy of its input (16-bit training without Liger); default: not fused.
    mask_units: a dropout mask element (CUDA: 1-byte bool = 0.5 of a 16-bit unit; CPU: a float like the activations).
    """
    d = 1 + mask_units  # a dropout copy and its mask
    h, i, q, kv = s["hidden"], s["inter"], s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    norm_copy = (not fused) if norm_copy is None else norm_copy
    units = 0.0
    units += 2 * h if norm_copy else (h if with_input else 0)  # input RMSNorm: x itself, or HF's fp32 copy of it
    units += 3 * d * h if dropout else h  # q/k/v LoRA input: three dropout copies + masks, or the shared normed input
    units += q + (2 * q if attention == "sdpa_masked" else 2 * kv) + q  # q, k, v and output, kept by the kernel
    if dropout:
        units += d * q  # o_proj LoRA input: dropout copy + mask
    elif attention != "varlen":
        units += q  # HF's transpose(1, 2).contiguous() copy of the output is what o_proj's LoRA keeps
    units += 2 * h if norm_copy else h  # post-attention RMSNorm
    mlp = (2 * d * h if dropout else h) + (2 * i if fused else 3 * i) + (d * i if dropout else i)  # gate/up input, act, down input
    if mlp_tokens_share < 1:
        mlp = h + (mlp - h) * mlp_tokens_share  # tiles: the normed input is kept, the rest lives one tile at a time
    return units + mlp


def attention_kind(t: dict[str, Any]) -> str:
    """How the attention keeps q/k/v: "varlen" (torch flash varlen), "sdpa_masked" (packed batch), "sdpa" (one sequence)."""
    att = t.get("attention", "auto")
    if att in ("varlen", "sdpa", "sdpa_masked"):
        return att
    if att == "clonekit_varlen" or (att == "auto" and t.get("device") == "cuda" and t.get("precision") == "bf16"):
        return "varlen"
    return "sdpa_masked" if int(t.get("micro_batch_size", 1)) > 1 else "sdpa"


def estimate_memory(model_config: Any, train_config: Any = None, gpu_gb: float | None = None, tokens: int | None = None) -> dict[str, Any]:
    """Peak GPU memory of a training run, by part, in GiB; `fits` and `advice` when `gpu_gb` (usable) is given.

    `tokens` per micro batch defaults to the worst case micro_batch_size x max_seq_length
    (a packed batch of examples at the length limit).
    """
    t = {**TRAIN_DEFAULTS, **{k: v for k, v in _as_dict(train_config).items() if k in TRAIN_DEFAULTS}}
    s = model_shape(model_config)
    n = count_params(s, int(t["lora_r"]))
    b = 4 if t["precision"] == "fp32" or t["device"] == "cpu" else 2
    tok = int(tokens or int(t["micro_batch_size"]) * int(t["max_seq_length"]))
    h, i, L = s["hidden"], s["inter"], s["layers"]
    quant = t["quantization"]
    fused = t["fused_kernels"] in ("auto", True, "on") and t["device"] == "cuda"
    gc = t["gradient_checkpointing"] in ("on", True) or bool(t["offload_activations"])
    offload = bool(t["offload_activations"]) and gc
    ck = L if t["checkpoint_layers"] is None else max(0, min(L, int(t["checkpoint_layers"])))
    ck = ck if gc else 0
    dropout = float(t["lora_dropout"]) > 0

    per_linear = {"4bit": 0.5 + 1 / 64 + 4 / (64 * 256), "8bit": 1.0 + 4 / 64}.get(quant, b)
    weights = n["linear"] * per_linear + n["embed"] * b
    # LoRA: weights + grads (fp32) + Adam moments (8-bit paged for quantized runs, fp32 otherwise)
    lora = n["lora"] * (4 + 4 + (2 if quant in ("4bit", "8bit") else 8))
    workspace = FIXED_WORKSPACE_GB * GiB + (2 * n["largest_linear"] * 2 if quant in ("4bit", "8bit") else 0)  # dequantized weights

    attention = attention_kind(t)
    norm_copy = not fused and b == 2
    share = min(1.0, MLP_TILE_TOKENS / tok) if offload else 1.0
    mask_units = 0.5 if t["device"] == "cuda" else 1.0
    full = layer_activation_units(s, fused, dropout, attention, norm_copy=norm_copy, mask_units=mask_units)
    recomputed = layer_activation_units(s, fused, dropout, attention, share, with_input=False, norm_copy=norm_copy, mask_units=mask_units)
    transient = 2 * i * (share if offload else 1.0) + 4 * h  # gradients in flight inside one layer's backward
    if ck:
        kept = (2 if offload else ck) * h  # checkpointed layer inputs (offloaded: only the ones in transit)
        per_token = (L - ck) * full + kept + recomputed + transient
    else:
        per_token = L * full + transient
    head = 4 * h if fused else 3 * h  # final norm input/output, the target rows; Liger adds its input-grad buffer
    activations = tok * b * per_token
    if attention == "sdpa_masked":  # transformers' bool block mask, and SDPA's additive copy kept by each live layer
        activations += tok * tok * (1 + b * ((L - ck) + (1 if ck else 0)))
    if fused:
        logits = tok * b * 2 * h  # Liger's chunk of logits grows with the tokens (chunk = tokens * hidden / vocab)
    else:
        logits = min(CHUNKED_LOSS_BYTES, tok * s["vocab"] * 10)
    logits += tok * b * head
    parts = {"weights_gb": weights / GiB, "lora_and_optimizer_gb": lora / GiB, "activations_gb": activations / GiB,
             "loss_gb": logits / GiB, "workspace_gb": workspace / GiB}
    allocated = sum(parts.values())
    out: dict[str, Any] = {**{k: round(v, 3) for k, v in parts.items()}, "allocated_gb": round(allocated, 3),
                           "needed_gb": round(allocated * ALLOCATOR_SLACK, 3), "tokens_per_micro_batch": tok,
                           "params_b": round(n["total"] / 1e9, 3), "lora_params_m": round(n["lora"] / 1e6, 2),
                           "checkpointed_layers": ck, "layers": L}
    if gpu_gb is not None:
        out["gpu_gb"] = round(gpu_gb, 2)
        out["fits"] = allocated * ALLOCATOR_SLACK <= gpu_gb
        out["advice"] = "" if out["fits"] else advise(model_config, t, gpu_gb)
    return out


def _fits(model_config: Any, t: dict[str, Any], gpu_gb: float, **change) -> bool:
    return estimate_memory(model_config, {**t, **change})["needed_gb"] <= gpu_gb


def advise(model_config: Any, t: dict[str, Any], gpu_gb: float) -> str:
    """The first single change (in order of least harm) that makes the run fit, as a CLI flag."""
    t = {**TRAIN_DEFAULTS, **t}
    steps: list[tuple[str, dict[str, Any]]] = []
    if t["quantization"] in ("none", "8bit"):
        steps.append(("--quantization 4bit", {"quantization": "4bit"}))
    if t["gradient_checkpointing"] in ("off", False) or t.get("checkpoint_layers") is not None:
        steps.append(("--gradient-checkpointing on", {"gradient_checkpointing": "on", "checkpoint_layers": None}))
    if t["micro_batch_size"] > 1:
        for mbs in sorted({max(1, t["micro_batch_size"] // 2), 1}, reverse=True):
            steps.append((f"--micro-batch-size {mbs} (raise --gradient-accumulation-steps to keep the batch)", {"micro_batch_size": mbs}))
    if float(t["lora_dropout"]) > 0:
        steps.append(("--lora-dropout 0", {"lora_dropout": 0.0}))
    if not t["offload_activations"]:
        steps.append(("--offload-activations (slower, keeps layer inputs in CPU RAM)", {"offload_activations": True}))
    for flag, change in steps:
        if _fits(model_config, t, gpu_gb, **change):
            return f"does not fit in {gpu_gb:.1f} GB: try {flag}"
    lean = {"quantization": "4bit", "gradient_checkpointing": "on", "checkpoint_layers": None, "micro_batch_size": 1,
            "lora_dropout": 0.0, "offload_activations": True}
    if not _fits(model_config, t, gpu_gb, **lean, max_seq_length=256):
        return f"does not fit in {gpu_gb:.1f} GB even at 256 tokens: pick a smaller base model"
    longest = longest_fitting_context(model_config, {**t, **lean}, gpu_gb, limit=int(t["max_seq_length"]), step=256)
    return (f"does not fit in {gpu_gb:.1f} GB: use --micro-batch-size 1 --lora-dropout 0 --offload-activations "
            f"--max-seq-length {longest}")


def preset_for_gpu(usable_gb: float, bf16: bool) -> dict[str, Any]:
    """TrainConfig overrides for a GPU class: T4-like (< 20 GB, fp16), 24 GB, 40-80 GB and larger.

    >>> preset_for_gpu(14.0, bf16=False)["precision"], preset_for_gpu(79.0, bf16=True)["micro_batch_size"]
    ('fp16', 16)
    """
    precision = "bf16" if bf16 else "fp16"
    if usable_gb < 20:
        return {"quantization": "4bit", "precision": precision, "micro_batch_size": 4, "gradient_accumulation_steps": 4}
    if usable_gb < 32:
        return {"quantization": "4bit", "precision": precision, "micro_batch_size": 8, "gradient_accumulation_steps": 2}
    return {"quantization": "4bit", "precision": precision, "micro_batch_size": 16, "gradient_accumulation_steps": 1}


def plan_checkpointing(model_config: Any, train_config: Any, usable_gb: float, headroom: float = 0.9) -> dict[str, Any]:
    """For gradient_checkpointing 'auto': checkpoint as few layers as fit (less recompute = faster).

    Returns {"gradient_checkpointing": "on"/"off", "checkpoint_layers": k or None, "offload_activations": bool}.
    Checkpoints everything, then offloads, when even that does not fit (the estimate then carries the advice).
    """
    t = {**TRAIN_DEFAULTS, **{k: v for k, v in _as_dict(train_config).items() if k in TRAIN_DEFAULTS}}
    budget = usable_gb * headroom
    L = model_shape(model_config)["layers"]
    if _fits(model_config, t, budget, gradient_checkpointing="off", checkpoint_layers=None, offload_activations=False):
        return {"gradient_checkpointing": "off", "checkpoint_layers": None, "offload_activations": False}
    for k in range(1, L + 1):
        if _fits(model_config, t, budget, gradient_checkpointing="on", checkpoint_layers=k, offload_activations=False):
            return {"gradient_checkpointing": "on", "checkpoint_layers": None if k == L else k, "offload_activations": False}
    offload = bool(t["offload_activations"]) or not _fits(model_config, t, usable_gb, gradient_checkpointing="on", checkpoint_layers=None)
    return {"gradient_checkpointing": "on", "checkpoint_layers": None,
            "offload_activations": offload and _fits(model_config, t, usable_gb, gradient_checkpointing="on", checkpoint_layers=None, offload_activations=True)}


def longest_fitting_context(model_config: Any, train_config: Any, gpu_gb: float, limit: int = 262144, step: int = 1024) -> int:
    """Longest single example (micro batch 1) the estimate says fits, in multiples of `step` tokens."""
    t = {**_as_dict(train_config), "micro_batch_size": 1}
    lo, hi = 0, limit // step
    while lo < hi:  # the estimate grows with the length: bisect
        mid = (lo + hi + 1) // 2
        if _fits(model_config, {**t, "max_seq_length": mid * step}, gpu_gb):
            lo = mid
        else:
            hi = mid - 1
    return lo * step


def describe_estimate(est: dict[str, Any]) -> str:
    """One line for the user before training starts.

    >>> describe_estimate({"weights_gb": 5.0, "activations_gb": 1.0, "needed_gb": 6.3, "allocated_gb": 6.0, "gpu_gb": 14.0, "fits": True, "advice": ""})
    'memory estimate 6.3 GB (weights 5.0, activations 1.0) on a 14.0 GB GPU: fits'
    """
    skip = ("needed_gb", "allocated_gb", "gpu_gb")
    parts = ", ".join(f"{k[:-3]} {v:.1f}" for k, v in est.items() if k.endswith("_gb") and k not in skip)
    head = f"memory estimate {est['needed_gb']:.1f} GB ({parts})"
    if "fits" in est:
        head += f" on a {est['gpu_gb']:.1f} GB GPU: " + ("fits" if est["fits"] else est["advice"])
    return head
