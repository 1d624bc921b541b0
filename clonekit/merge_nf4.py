"""Reproduce bitsandbytes' 4-bit (NF4) rounding on CPU, for merging a QLoRA adapter.

An adapter trained on a 4-bit base learned to correct the NF4-rounded weights, so
`clonekit merge` merges it into those rounded weights: `nf4_round_trip` quantizes a
weight to NF4 and back with the same arithmetic as bitsandbytes (blockwise absmax,
double quant), `quantized_modules` names the layers transformers would have
quantized, and `quant_spec_from_train_config` reads how a run quantized its base.
bench/merge_4bit_choice.py has the evidence for merging into the rounded weights.

Run as (library only; `clonekit merge` calls it):
    from clonekit.merge_nf4 import QuantSpec, nf4_round_trip
    w_seen_in_training = nf4_round_trip(w, QuantSpec())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    import torch

# bitsandbytes' NF4 code book (QLoRA paper): 16 quantiles of N(0, 1), scaled to [-1, 1].
NF4_CODE = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
            -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
            0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
            0.7229568362236023, 1.0)


@dataclass
class QuantSpec:
    """How the base was quantized for QLoRA training (bitsandbytes' Linear4bit defaults)."""

    quant_type: str = "nf4"
    double_quant: bool = True
    dtype: str = "bfloat16"  # the dtype the base was loaded in before quantizing
    blocksize: int = 64


def nf4_round_trip(w: "torch.Tensor", spec: QuantSpec = QuantSpec(), transposed: bool = False,
                   chunk_blocks: int = 1 << 15) -> "torch.Tensor":
    """What bitsandbytes' Linear4bit computes with: w quantized to NF4 and back, in `spec.dtype`.

    Same arithmetic as bnb's quantize_4bit/dequantize_4bit (blockwise absmax, 16-value code
    book; double quant stores the absmaxes as 8-bit with blocks of 256): bit-identical to bnb's
    CUDA kernels (bench/results/merge_4bit_choice_cuda.json). Works in chunks of blocks, so the
    float32 scratch stays small. `transposed`: a Conv1D weight [in, out], quantized as [out, in].
    """
    import torch

    if spec.quant_type != "nf4":
        raise InputError(f"quant_type={spec.quant_type!r}: only nf4 bases can be reproduced; merge into the original weights (--dequantized-base false).")
    if transposed:
        return nf4_round_trip(w.T.contiguous(), spec).T.contiguous()
    dtype, bs = getattr(torch, spec.dtype), spec.blocksize
    code = torch.tensor(NF4_CODE)
    mids = ((code[:-1] + code[1:]) / 2).tolist()
    x = w.to(dtype).reshape(-1)
    n = x.numel()
    x = torch.nn.functional.pad(x, (0, -n % bs)).view(-1, bs)  # a short last block keeps its own absmax
    absmax = x.abs().amax(dim=1).float()
    inv = 1.0 / absmax.clamp(min=1e-38)
    if spec.double_quant:
        absmax = _blockwise_8bit_round_trip(absmax - absmax.mean()) + absmax.mean()
    out = torch.empty(x.shape, dtype=dtype)
    for i in range(0, x.shape[0], chunk_blocks):
        scaled = torch.clamp(x[i:i + chunk_blocks].float() * inv[i:i + chunk_blocks].view(-1, 1), -1, 1)
        idx = torch.zeros(scaled.shape, dtype=torch.uint8)
        for m in mids:  # 15 comparisons beat torch.bucketize ~4x; same result (count of midpoints below)
            idx += scaled > m
        out[i:i + chunk_blocks] = code[idx.long()] * absmax[i:i + chunk_blocks].view(-1, 1)
    return out.view(-1)[:n].view(w.shape)


def _dynamic_map() -> "torch.Tensor":
    """bitsandbytes' signed 8-bit dynamic code (create_dynamic_map), used for double quant."""
    import torch

    data: list[float] = []
    for i in range(7):
        bounds = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = ((bounds[:-1] + bounds[1:]) / 2.0) * 10 ** (-6 + i)
        data += means.tolist() + (-means).tolist()
    return torch.tensor(sorted(data + [0.0, 1.0]), dtype=torch.float32)


def _blockwise_8bit_round_trip(a: "torch.Tensor", blocksize: int = 256) -> "torch.Tensor":
    import torch

    code = _dynamic_map()
    n = a.numel()
    x = torch.nn.functional.pad(a.float(), (0, -n % blocksize)).view(-1, blocksize)
    scale = x.abs().amax(dim=1).clamp(min=1e-38).view(-1, 1)
    idx = torch.bucketize(torch.clamp(x * (1.0 / scale), -1, 1), (code[:-1] + code[1:]) / 2)
    return (code[idx] * scale).reshape(-1)[:n]


def quantized_modules(model: Any) -> dict[str, bool]:
    """{module name: is Conv1D} of the modules transformers replaces by bnb Linear4bit in 4-bit loading."""
    import torch
    from transformers.pytorch_utils import Conv1D

    try:
        from transformers.quantizers.base import get_keys_to_not_convert
        from transformers.quantizers.quantizers_utils import should_convert_module

        skip = get_keys_to_not_convert(model)
    except ImportError:  # older/newer transformers: keep its usual default, the output embedding
        skip, should_convert_module = ["lm_head"], (lambda name, pats: not any(name.endswith(p) for p in pats))
    return {name: isinstance(mod, Conv1D) for name, mod in model.named_modules()
            if (type(mod) is torch.nn.Linear or isinstance(mod, Conv1D)) and should_convert_module(name, skip)}


def quant_spec_from_train_config(train_cfg: dict) -> QuantSpec | None:
    """The QuantSpec a run trained with, or None if it trained on a 16/32-bit base.

    Reads `quantization_config` (BitsAndBytesConfig.to_dict()) or flat keys:
    load_in_4bit / qlora / quantization ("4bit", "nf4"); bnb_4bit_quant_type; bnb_4bit_use_double_quant;
    the load dtype from dtype / torch_dtype / bnb_4bit_compute_dtype / bf16 / fp16.
    """
    q = {**train_cfg, **(train_cfg.get("quantization_config") or {})}
    four_bit = q.get("load_in_4bit") or q.get("qlora") or q.get("use_qlora") or str(q.get("quantization", "")).lower() in ("4bit", "nf4", "qlora")
    if not four_bit:
        return None
    names = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16"}
    dtype = next((str(q[k]).removeprefix("torch.") for k in ("dtype", "torch_dtype", "bnb_4bit_compute_dtype")
                  if q.get(k) and str(q[k]) != "auto"), "float16" if q.get("fp16") else "bfloat16")
    return QuantSpec(quant_type=q.get("bnb_4bit_quant_type", "nf4"), double_quant=bool(q.get("bnb_4bit_use_double_quant", True)),
                     dtype=names.get(dtype, dtype))
