"""GPU memory: estimate a LoRA/QLoRA run before it starts, and pick settings per GPU class.

Pure functions on a model config (a dict, a transformers config or a folder
with config.json) and a TrainConfig (or a dict of its fields); no GPU needed.

    >>> cfg = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    ...        "num_attention_heads": 32, "num_key_value_heads": 8}
    >>> est = estimate_memory(cfg, {"quantization": "4bit", "micro_batch_size": 1, "max_seq_length": 2048}, gpu_gb=15)
    >>> est["fits"], round(est["weights_gb"], 1)
    (True, 5.4)

The numbers are for `torch.cuda.max_memory_allocated` (`allocated_gb`); `total_gb`
adds the CUDA context and allocator slack, and is what `fits` compares with the
GPU. bench/train_throughput.py prints estimate against measurement.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

GiB = 2**30
CUDA_CONTEXT_GB = 0.45  # driver + cuBLAS workspace: outside torch's allocator
ALLOCATOR_SLACK = 1.07  # fragmentation of the caching allocator
FP32_LOGIT_CHUNK_BYTES = 2**29  # the chunked loss keeps about this much fp32 logits at once

TRAIN_DEFAULTS = {"quantization": "4bit", "precision": "bf16", "micro_batch_size": 4, "max_seq_length": 1024, "lora_r": 16,
                  "lora_dropout": 0.05, "target_modules": ["all-linear"], "gradient_checkpointing": "on", "offload_activations": False,
                  "padding_free": True, "chunked_loss": True, "fused_kernels": "auto"}


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        return json.loads((path / "config.json" if path.is_dir() else path).read_text())
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
    return {"linear": linear, "embed": embed, "lora": lora, "total": linear + embed}


def _gpu_state(t: dict[str, Any]) -> dict[str, Any]:
    gc = t.get("gradient_checkpointing", "on")
    return {"gc": gc in ("on", "auto", True), "offload": t.get("offload_activations") in (True, "on"),
            "bytes": 4 if t.get("precision") == "fp32" else 2}


def estimate_memory(model_config: Any, train_config: Any = None, gpu_gb: float | None = None, tokens: int | None = None) -> dict[str, Any]:
    """Peak GPU memory of a training run, by part, in GiB; `fits` and `advice` when `gpu_gb` is given.

    `tokens` per micro batch defaults to the worst case micro_batch_size x max_seq_length
    (a packed batch of long examples).
    """
    t = {**TRAIN_DEFAULTS, **{k: v for k, v in _as_dict(train_config).items() if k in TRAIN_DEFAULTS}}
    s = model_shape(model_config)
    n = count_params(s, int(t["lora_r"]))
    st = _gpu_state(t)
    b = st["bytes"]
    tok = int(tokens or t["micro_batch_size"] * t["max_seq_length"])
    h, i = s["hidden"], s["inter"]
    quant = t["quantization"]
    per_linear = {"4bit": 0.5 + 1 / 64 + 4 / (64 * 256), "8bit": 1.0 + 4 / 64}.get(quant, b)
    weights = n["linear"] * per_linear + n["embed"] * b
    # LoRA: fp32 weights + fp32 grads + Adam moments (8-bit paged for quantized runs)
    opt_bytes = 2 if quant in ("4bit", "8bit") else 8
    lora = n["lora"] * (4 + 4 + opt_bytes)
    # Saved activations of one decoder layer per token (16-bit): attention ~22h, MLP ~8i (gate, up, product);
    # LoRA dropout keeps a dropped copy of each layer input.
    layer_tok = b * (11 * h + 4 * i)
    if t["lora_dropout"] > 0:
        layer_tok += b * (4 * h + 1.5 * i)
    kept_inputs = 0 if st["offload"] else s["layers"] * tok * h * b  # checkpointed layer inputs
    if st["gc"]:
        activations = kept_inputs + tok * layer_tok  # plus one layer recomputed at a time
    else:
        activations = s["layers"] * tok * layer_tok
    if t["chunked_loss"]:
        logits = min(tok * s["vocab"] * 4, FP32_LOGIT_CHUNK_BYTES) * 2.5 + tok * h * 4
    else:
        logits = tok * s["vocab"] * (b + 4 + 4)  # 16-bit logits, fp32 upcast, fp32 grad
    parts = {"weights_gb": weights / GiB, "lora_and_optimizer_gb": lora / GiB, "activations_gb": activations / GiB, "logits_gb": logits / GiB}
    allocated = sum(parts.values())
    total = allocated * ALLOCATOR_SLACK + CUDA_CONTEXT_GB
    out: dict[str, Any] = {**{k: round(v, 3) for k, v in parts.items()}, "allocated_gb": round(allocated, 3), "total_gb": round(total, 3),
                           "tokens_per_micro_batch": tok, "params_b": round(n["total"] / 1e9, 3), "lora_params_m": round(n["lora"] / 1e6, 2)}
    if gpu_gb is not None:
        out["gpu_gb"] = gpu_gb
        out["fits"] = total <= gpu_gb
        out["advice"] = "" if out["fits"] else advise(model_config, t, gpu_gb)
    return out


def advise(model_config: Any, t: dict[str, Any], gpu_gb: float) -> str:
    """The first single change (in order of least harm) that makes the run fit, as a CLI flag."""
    def fits(**change):
        return estimate_memory(model_config, {**t, **change}, None)["total_gb"] <= gpu_gb

    steps: list[tuple[str, dict[str, Any]]] = []
    if t["quantization"] in ("none", "8bit"):
        steps.append(("--quantization 4bit", {"quantization": "4bit"}))
    if t["gradient_checkpointing"] == "off":
        steps.append(("--gradient-checkpointing on", {"gradient_checkpointing": "on"}))
    if t["micro_batch_size"] > 1:
        for mbs in sorted({max(1, t["micro_batch_size"] // 2), 1}, reverse=True):
            steps.append((f"--micro-batch-size {mbs} (raise --gradient-accumulation-steps to keep the batch)", {"micro_batch_size": mbs}))
    if not t["offload_activations"]:
        steps.append(("--offload-activations (slower, keeps layer inputs in CPU RAM)", {"offload_activations": True}))
    for flag, change in steps:
        if fits(**change):
            return f"does not fit in {gpu_gb:g} GB: try {flag}"
    for name, change in (("combined", {"quantization": "4bit", "gradient_checkpointing": "on", "micro_batch_size": 1, "offload_activations": True}),):
        lo, hi = 64, t["max_seq_length"]
        if not fits(**change, max_seq_length=lo):
            return f"does not fit in {gpu_gb:g} GB even at 64 tokens: pick a smaller base model"
        while hi - lo > 64:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(**change, max_seq_length=mid) else (lo, mid)
        return f"does not fit in {gpu_gb:g} GB: use --micro-batch-size 1 --offload-activations and --max-seq-length {lo // 64 * 64}"
    return ""


def preset_for_gpu(total_gb: float, bf16: bool) -> dict[str, Any]:
    """TrainConfig overrides for a GPU class: T4-like (<= 16 GB, fp16), 24 GB, 40-80 GB.

    >>> preset_for_gpu(15.0, bf16=False)["precision"]
    'fp16'
    """
    precision = "bf16" if bf16 else "fp16"
    if total_gb < 20:
        return {"quantization": "4bit", "precision": precision, "micro_batch_size": 4, "gradient_accumulation_steps": 4,
                "max_seq_length": 1024, "gradient_checkpointing": "on", "padding_free": True}
    if total_gb < 32:
        return {"quantization": "4bit", "precision": precision, "micro_batch_size": 8, "gradient_accumulation_steps": 2,
                "max_seq_length": 2048, "gradient_checkpointing": "on", "padding_free": True}
    return {"quantization": "4bit" if total_gb < 60 else "none", "precision": precision, "micro_batch_size": 16,
            "gradient_accumulation_steps": 1, "max_seq_length": 4096, "gradient_checkpointing": "on", "padding_free": True}


def longest_fitting_context(model_config: Any, train_config: Any, gpu_gb: float, limit: int = 262144) -> int:
    """Longest single example (micro batch 1) the estimate says fits, in steps of 1024 tokens."""
    t = {**_as_dict(train_config), "micro_batch_size": 1}
    best = 0
    n = 1024
    while n <= limit and estimate_memory(model_config, {**t, "max_seq_length": n}, gpu_gb)["fits"]:
        best, n = n, n + 1024
    return best


def describe_estimate(est: dict[str, Any]) -> str:
    parts = ", ".join(f"{k[:-3]} {v:.1f}" for k, v in est.items() if k.endswith("_gb") and k not in ("total_gb", "allocated_gb", "gpu_gb"))
    head = f"memory estimate {est['total_gb']:.1f} GB ({parts})"
    if "fits" in est:
        head += f" on a {est['gpu_gb']:g} GB GPU: " + ("fits" if est["fits"] else est["advice"])
    return head


_ = math  # (kept for callers doing their own arithmetic on the result)
