"""Merge a LoRA adapter into its base model, streaming, on CPU.

The base checkpoint is read one tensor at a time; each targeted weight gets
`scale * B @ A` added in float32 (scale = alpha/r, or alpha/sqrt(r) with
rsLoRA; transposed for GPT-2's Conv1D; DoRA's magnitude rescale when present)
and is cast back; merged tensors go into output shards that are written as soon
as they fill up. Peak RAM is about one output shard (`max_shard_size`) plus the
adapter, whatever the model size, so an 8B model merges on a laptop. The result
is a normal Hugging Face folder (sharded safetensors + index, config, tokenizer,
generation config) that `AutoModelForCausalLM.from_pretrained` loads.

An adapter trained on a 4-bit (QLoRA) base learned to correct the NF4-rounded
weights, so by default (`dequantized_base="auto"`) it is merged into those
rounded weights (NF4 round-trip in torch, same numbers as bitsandbytes) rather
than into the original 16-bit ones; bench/merge_4bit_choice.py has the evidence.

Run as:
    clonekit merge --run-dir runs/me              # CLI
    python -m clonekit.merge runs/me [out_dir]    # same thing, no CLI

    >>> lora_scale(alpha=32, r=16), lora_scale(alpha=32, r=16, use_rslora=True)
    (2.0, 8.0)
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from . import storage
from .config import check, opt, save_config
from .errors import ClonekitError, InputError, require

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float16", "bfloat16", "float32")
DEFAULT_PROMPTS = (
    "Hey, are you coming to the party on Saturday?",
    "What did you think of the movie last night?",
    "Can you send me the notes from today's meeting?",
    "I just got back from the mountains, it was amazing.",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")
# Logit tolerance of the verification, relative to max(1, largest |logit|), by merged dtype. Measured on
# SmolLM2-135M + a random r8 LoRA (max |logit| 29): max diff 8e-5 (float32), 0.027 (float16), 0.37 (bfloat16).
VERIFY_RTOL = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}
# Tensor-probe verification: an adapter whose output on a tensor is below this fraction of the tensor's output
# is below what the merged dtype resolves there, so only VERIFY_RTOL applies to that tensor.
PROBE_RESOLUTION = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 8e-3}

# bitsandbytes' NF4 code book (QLoRA paper): 16 quantiles of N(0, 1), scaled to [-1, 1].
NF4_CODE = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
            -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
            0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
            0.7229568362236023, 1.0)


@dataclass
class MergeConfig:
    run_dir: str = opt("", "training run folder; its adapter/ and train_config.json are used")
    adapter_dir: str = opt("", "adapter folder (adapter_config.json + adapter_model.safetensors); default <run_dir>/adapter")
    base_model: str = opt("", "base model (folder, hub id or embedded name); default: the one the adapter was trained on")
    out_dir: str = opt("", "where the merged model goes; default <run_dir>/merged (or next to the adapter)")
    dtype: str = opt("auto", "merged weights dtype: auto (the base's dtype on disk), float16, bfloat16, float32")
    max_shard_size: str = opt("1GB", "largest output shard, e.g. 500MB or 2GB; peak RAM is about one shard")
    verify: bool = opt(True, "compare merged-model logits with base+adapter on validation prompts (one model at a time in RAM; "
                             "a model too big for RAM gets a per-tensor check on random inputs instead)")
    verify_prompts: int = opt(2, "how many prompts (validation conversations of the run, else built-in ones) the verification runs")
    dequantized_base: str = opt("auto", "merge into NF4-rounded base weights: auto (when trained on a 4-bit base), true, false")
    overwrite: bool = opt(False, "replace out_dir if it already exists")

    def __post_init__(self) -> None:
        self.dequantized_base = {True: "true", False: "false"}.get(self.dequantized_base, str(self.dequantized_base).lower())  # type: ignore[call-overload]
        problems = []
        if not self.run_dir and not self.adapter_dir:
            problems.append("pass run_dir (a training run folder) or adapter_dir (a PEFT adapter folder)")
        if self.dtype not in DTYPES:
            problems.append(f"dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        try:
            parse_size(self.max_shard_size)
        except ValueError as e:
            problems.append(str(e))
        if self.verify_prompts < 1:
            problems.append(f"verify_prompts={self.verify_prompts}: expected 1 or more (or verify=False)")
        if self.dequantized_base not in ("auto", "true", "false"):
            problems.append(f"dequantized_base={self.dequantized_base!r}: expected auto, true or false")
        check(problems, "MergeConfig")


@dataclass
class MergeResult:
    out_dir: str
    base_model: str
    adapter_dir: str
    dtype: str
    dequantized_base: bool
    quantization: dict | None
    tensors_total: int
    tensors_merged: int  # got a LoRA delta
    tensors_replaced: int  # taken from modules_to_save
    tensors_requantized: int  # NF4-rounded (dequantized_base)
    untied_embeddings: bool
    shards: int
    size_bytes: int
    peak_rss_mb: float  # of the merge itself (before verification)
    seconds: float
    verification: dict | None = None

    def __str__(self) -> str:
        base = "NF4-rounded " if self.dequantized_base else ""
        lines = [f"merged {self.adapter_dir} into {base}{self.base_model}: {self.out_dir}",
                 f"  {self.tensors_merged} of {self.tensors_total} tensors got the LoRA delta, {self.tensors_replaced} replaced (modules_to_save), "
                 f"{self.shards} shard(s), {self.size_bytes / 1e9:.2f} GB, peak RAM {self.peak_rss_mb / 1024:.2f} GiB, {self.seconds} s"]
        v = self.verification
        if v and v.get("method") == "tensor probes":
            lines.append(f"  verified tensor by tensor (model too big for RAM, or no tokenizer): largest relative difference {v['max_rel_diff']:.2g} "
                         f"(tolerance {v['tolerance']:.2g}, adapter effect {v['adapter_effect']:.2g}), {v['tensors_different']} unadapted tensors changed")
        elif v:
            lines.append(f"  verified on {v['prompts']} validation prompt(s): logits differ from base + adapter by max {v['max_abs_diff']:.2g}, "
                         f"mean {v['mean_abs_diff']:.2g} (tolerance {v['tolerance']:.2g}; the adapter itself moves them by {v['adapter_effect']:.2g} on average)")
        return "\n".join(lines)


@dataclass
class QuantSpec:
    """How the base was quantized for QLoRA training (bitsandbytes' Linear4bit defaults)."""

    quant_type: str = "nf4"
    double_quant: bool = True
    dtype: str = "bfloat16"  # the dtype the base was loaded in before quantizing
    blocksize: int = 64


@dataclass
class LoraWeights:
    """One adapted module: weight += scale * B @ A (transposed for Conv1D/embeddings)."""

    module: str
    A: Any = None
    B: Any = None
    scale: float = 1.0
    kind: str = "linear"  # "linear" | "conv1d" (fan_in_fan_out) | "embedding"
    magnitude: Any = None  # DoRA


@dataclass
class Adapter:
    path: Path
    config: dict
    loras: dict[str, LoraWeights] = field(default_factory=dict)  # module name -> weights
    replaced: dict[str, Any] = field(default_factory=dict)  # tensor name -> modules_to_save tensor


# ---------------------------------------------------------------- pure core


def parse_size(text: str | int) -> int:
    """'1GB' -> bytes (decimal units, like transformers).

    >>> parse_size("500MB"), parse_size("2GB"), parse_size(1024)
    (500000000, 2000000000, 1024)
    """
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*", str(text).upper())
    if not m:
        raise ValueError(f"max_shard_size={text!r}: expected a size like 500MB or 2GB")
    unit = (m.group(2) or "B").replace("IB", "B")
    return int(float(m.group(1)) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}[unit])


def lora_scale(alpha: float, r: int, use_rslora: bool = False) -> float:
    """PEFT's scaling: alpha/r, or alpha/sqrt(r) for rank-stabilized LoRA."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def match_pattern(patterns: dict, module: str, default: Any) -> Any:
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches the end of the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


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


def merge_weight(w: "torch.Tensor", lora: LoraWeights | None = None,
                 out_dtype: "torch.dtype | None" = None, chunk_elems: int = 1 << 24) -> "torch.Tensor":
    """One merged tensor: w + scale * delta (DoRA-rescaled if the adapter has magnitudes), in float32.

    Row chunks keep the float32 working copy small for big matrices (lm_head, embeddings).
    """
    import torch

    out_dtype = out_dtype or w.dtype
    if lora is None:
        return w if w.dtype == out_dtype else w.to(out_dtype)
    if lora.kind == "linear":  # W[out, in] += s * B[out, r] @ A[r, in]
        left, right = lora.B, lora.A
    else:  # Conv1D W[in, out] and Embedding W[vocab, dim] are stored transposed
        left, right = lora.A.T, lora.B.T
    if tuple(w.shape) != (left.shape[0], right.shape[1]):
        raise InputError(f"adapter module {lora.module}: LoRA delta is {left.shape[0]}x{right.shape[1]} but the base weight is "
                         f"{'x'.join(map(str, w.shape))}. The adapter was trained on a different base model; pass that one with --base-model.")
    if lora.magnitude is not None:  # DoRA: rescale each output row of W + delta to the learned magnitude
        x = w.float().clone() if w.dtype == torch.float32 else w.float()
        x.addmm_(left, right, alpha=lora.scale)
        rows = x if lora.kind == "linear" else x.T
        rows.mul_((lora.magnitude.float() / torch.linalg.norm(rows, dim=1)).view(-1, 1))
        return x.to(out_dtype)
    out = w if w.dtype == out_dtype == torch.float32 else torch.empty(w.shape, dtype=out_dtype)
    step = max(1, chunk_elems // max(1, w.shape[1]))
    for i in range(0, w.shape[0], step):
        x = w[i:i + step].float()  # a view when w is float32: updated in place
        x.addmm_(left[i:i + step], right, alpha=lora.scale)
        if out is not w:
            out[i:i + step] = x
    return out


# ---------------------------------------------------------------- adapter


def read_adapter(adapter_dir: str | Path) -> Adapter:
    """Load a PEFT LoRA adapter folder into LoraWeights (float32) and modules_to_save tensors."""
    import torch

    path = Path(adapter_dir)
    cfg = storage.read_json(path / "adapter_config.json") if (path / "adapter_config.json").exists() else None
    if cfg is None:
        raise InputError(f"{path}: no adapter_config.json. Pass the folder written by PeftModel.save_pretrained (a run's adapter/ folder).")
    where = path / "adapter_config.json"
    unsupported = {"layer_replication": "layer replication", "lora_bias": "lora_bias", "target_parameters": "target_parameters (LoRA on raw parameters)",
                   "trainable_token_indices": "trainable tokens"}
    if cfg.get("peft_type", "LORA") != "LORA":
        raise InputError(f"{where}: peft_type={cfg.get('peft_type')!r}; clonekit merges only LoRA adapters. Train with clonekit train (LoRA/QLoRA).")
    for key, what in unsupported.items():
        if cfg.get(key):
            raise InputError(f"{where}: {key}={cfg[key]!r} ({what}) is not supported by the merge. Retrain without it, or merge with PeftModel.merge_and_unload().")
    weights = path / "adapter_model.safetensors"
    if weights.exists():
        from safetensors.torch import load_file

        tensors = load_file(str(weights))
    elif (path / "adapter_model.bin").exists():
        weights = path / "adapter_model.bin"
        tensors = torch.load(weights, map_location="cpu", weights_only=True)
    else:
        raise InputError(f"{path}: no adapter_model.safetensors (or .bin). Training did not finish saving; re-save the adapter from the latest checkpoint.")
    adapter = Adapter(path, cfg)
    keep = cfg.get("modules_to_save") or []
    pattern = re.compile(r"^(?P<mod>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_embedding_A|lora_embedding_B|lora_magnitude_vector(\.weight)?)$")
    for key, t in tensors.items():
        name = key.removeprefix("base_model.model.")
        m = pattern.match(name)
        if m:
            lw = adapter.loras.setdefault(m["mod"], LoraWeights(m["mod"]))
            part = m["part"]
            if part.startswith("lora_magnitude"):
                lw.magnitude = t.float()
            elif part.startswith("lora_embedding"):
                lw.kind = "embedding"
                setattr(lw, part[-1], t.float())
            else:
                setattr(lw, part[5], t.float())
        elif any(re.search(rf"(^|\.){re.escape(k)}$", name.rsplit(".", 1)[0]) for k in keep):
            adapter.replaced[name] = t
        elif ".base_layer." in name:  # PEFT saves whole embedding layers it adapted (save_embedding_layers)
            adapter.replaced[name.replace(".base_layer.", ".")] = t
        else:
            raise InputError(f"{weights}: tensor {key!r} is neither a LoRA weight nor in modules_to_save {keep}; this adapter type is not supported by the merge.")
    fifo = bool(cfg.get("fan_in_fan_out"))
    for mod, lw in adapter.loras.items():
        if lw.A is None or lw.B is None:
            raise InputError(f"{weights}: module {mod} has only one of lora_A/lora_B. The adapter file is incomplete; save it again.")
        if lw.magnitude is not None and lw.kind == "embedding":
            raise InputError(f"{where}: DoRA on the embedding {mod} is not supported by the merge. Retrain without use_dora on embeddings.")
        if lw.kind == "linear" and fifo:
            lw.kind = "conv1d"
        r = lw.A.shape[0]  # A is [r, in] (linear) or [r, vocab] (embedding)
        alpha = match_pattern(cfg.get("alpha_pattern") or {}, mod, cfg.get("lora_alpha", 8))
        lw.scale = lora_scale(alpha, r, bool(cfg.get("use_rslora")))
    return adapter


# ---------------------------------------------------------------- reading the base


_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
              "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def read_safetensors_header(path: str | Path) -> tuple[dict[str, dict], int]:
    """{name: {"dtype", "shape", "data_offsets"}} and where the data starts, from the file's JSON header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def iter_safetensors(path: str | Path) -> Iterator[tuple[str, "torch.Tensor"]]:
    """Tensors of one file, one at a time, in file order.

    Plain reads instead of safe_open's mmap: pages of an open mmap count towards the
    process's RSS until the file is closed, i.e. a whole input shard would.
    """
    import torch

    header, start = read_safetensors_header(path)
    with open(path, "rb") as f:
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            t = torch.empty(info["shape"], dtype=getattr(torch, _ST_DTYPES[info["dtype"]]))
            begin, end = info["data_offsets"]
            if end > begin:
                f.seek(start + begin)
                if f.readinto(memoryview(t.reshape(-1).view(torch.uint8).numpy())) != end - begin:
                    raise InputError(f"{path}: tensor {name} is cut short (file truncated at byte {f.tell()}). Download the base model again.")
            yield name, t


def iter_torch_bin(path: str | Path) -> Iterator[tuple[str, "torch.Tensor"]]:
    """A pytorch_model*.bin shard, memory-mapped (peak RAM is one input shard for .bin bases)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for name in list(state):
        yield name, state.pop(name).clone()


def list_base_weights(base_dir: Path) -> tuple[str, list[Path]]:
    """("safetensors" | "bin", shard files in order) of a model folder."""
    for kind, index, single in (("safetensors", "model.safetensors.index.json", "model.safetensors"),
                                ("bin", "pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (base_dir / index).exists():
            files = sorted(set(storage.read_json(base_dir / index)["weight_map"].values()))
            return kind, [base_dir / f for f in files]
        if (base_dir / single).exists():
            return kind, [base_dir / single]
    files = sorted(p for p in base_dir.glob("*.safetensors") if not p.name.startswith("adapter_"))
    if files:
        return "safetensors", files
    raise InputError(f"{base_dir}: no model.safetensors, pytorch_model.bin or their index. Pass a Hugging Face model folder (from save_pretrained).")


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


def describe_base(base_dir: Path) -> tuple[dict[str, str], dict[str, bool]]:
    """({tied target: source} for tied weights not stored on disk, quantizable module names), from a meta-device model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base_dir)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        tied = dict(getattr(model, "all_tied_weights_keys", {}) or {})
        return tied, quantized_modules(model)
    except Exception:  # unknown architecture: fall back to the common names
        cfg = storage.read_json(base_dir / "config.json")
        tied = {"lm_head.weight": "model.embed_tokens.weight"} if cfg.get("tie_word_embeddings", True) else {}
        return tied, {}


def _resolve(name: str, keys: set[str]) -> str | None:
    """The base tensor for an adapter-side name (checkpoints may lack or add a top-level prefix)."""
    if name in keys:
        return name
    tail = name.split(".", 1)[1] if "." in name else None
    if tail in keys:
        return tail
    hits = [k for k in keys if k.endswith("." + name) and k.count(".") == name.count(".") + 1]
    return hits[0] if len(hits) == 1 else None


# ---------------------------------------------------------------- writing


class ShardWriter:
    """Collects tensors and writes a shard whenever the next tensor would overflow max_bytes."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.buffer: dict[str, Any] = {}
        self.size = self.total = 0
        self.files: list[tuple[Path, list[str]]] = []

    def add(self, name: str, t: "torch.Tensor") -> None:
        nbytes = t.numel() * t.element_size()
        if self.buffer and self.size + nbytes > self.max_bytes:
            self.flush()
        self.buffer[name] = t.contiguous()
        self.size += nbytes
        self.total += nbytes

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.buffer:
            return
        path = self.folder / f"shard-{len(self.files):05d}.partial"
        save_file(self.buffer, str(path), metadata={"format": "pt"})
        self.files.append((path, list(self.buffer)))
        self.buffer, self.size = {}, 0

    def finish(self) -> int:
        """Rename shards to model-0000i-of-0000n.safetensors (model.safetensors if one) and write the index."""
        self.flush()
        n = len(self.files)
        weight_map = {}
        for i, (path, names) in enumerate(self.files, 1):
            final = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            os.replace(path, self.folder / final)
            weight_map.update({k: final for k in names})
        if n > 1:
            storage.write_json(self.folder / "model.safetensors.index.json",
                               {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))})
        return n


# ---------------------------------------------------------------- the merge


def merge_adapter(base_dir: str | Path, adapter: Adapter | str | Path, out_dir: str | Path, dtype: str = "auto",
                  max_shard_size: str | int = "1GB", quant: QuantSpec | None = None, progress: bool = True) -> dict:
    """Stream-merge `adapter` into the base folder's weights and write an HF model folder to `out_dir`.

    Returns counts: tensors_total/merged/replaced/requantized, untied_embeddings, shards, size_bytes.
    """
    import torch
    from tqdm.auto import tqdm

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    adapter = adapter if isinstance(adapter, Adapter) else read_adapter(adapter)
    kind, files = list_base_weights(base_dir)
    reader = iter_safetensors if kind == "safetensors" else iter_torch_bin
    cfg = storage.read_json(base_dir / "config.json")
    if kind == "safetensors":
        keys = {k for f in files for k in read_safetensors_header(f)[0]}
    elif len(files) > 1:
        keys = set(storage.read_json(files[0].with_name("pytorch_model.bin.index.json"))["weight_map"])
    else:
        keys = set(torch.load(files[0], map_location="cpu", weights_only=True, mmap=True))
    if cfg.get("quantization_config") or any(k.endswith((".absmax", ".quant_map", ".SCB")) or ".quant_state." in k for k in keys):
        raise InputError(f"{base_dir} holds quantized (bitsandbytes/GPTQ/AWQ) weights; merging into them would lose the adapter. "
                         "Pass the original 16-bit model with --base-model (the repo it was quantized from).")
    tied, quantizable = describe_base(base_dir)
    tied = {t: s for t, s in tied.items() if _resolve(t, keys) is None and _resolve(s, keys) is not None}

    # Where each adapter piece lands: base tensor name -> LoRA / replacement.
    loras: dict[str, LoraWeights] = {}
    replaced: dict[str, Any] = {}
    virtual: dict[str, str] = {}  # untied output embedding -> the stored tensor it was tied to
    for pieces, sink, suffix in ((adapter.loras, loras, ".weight"), (adapter.replaced, replaced, "")):
        for name, value in pieces.items():
            target = name + suffix
            key = _resolve(target, keys)
            if key is None and target in tied:
                key, virtual[target] = target, _resolve(tied[target], keys)  # type: ignore[assignment]
            if key is None:
                close = sorted(keys, key=lambda k: -len(os.path.commonprefix([k, target])))[:3]
                raise InputError(f"{adapter.path}: adapter targets {target!r}, which is not a tensor of {base_dir} (closest: {', '.join(close)}). "
                                 "The adapter was trained on a different base model; pass that one with --base-model.")
            sink[key] = value
    tied_sources = {v: k for k, v in virtual.items()}
    untie = bool(virtual) or any(_resolve(s, keys) in loras or _resolve(s, keys) in replaced for s in tied.values())
    for target, source in tied.items():  # an adapted embedding must not change the (tied) output layer
        src = _resolve(source, keys)
        if untie and target not in virtual and src is not None:
            virtual[target], tied_sources[src] = src, target
    quant_keys = {k: conv for m, conv in quantizable.items() if (k := _resolve(m + ".weight", keys))} if quant else {}
    if quant and not quant_keys:
        raise InputError(f"{base_dir}: cannot tell which layers bitsandbytes quantized for this architecture, so the NF4 base "
                         "cannot be reproduced. Merge into the original weights with --dequantized-base false.")

    out_dtype = None if dtype == "auto" else getattr(torch, dtype)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writer = ShardWriter(tmp, parse_size(max_shard_size))
    counts = {"tensors_total": 0, "tensors_merged": 0, "tensors_replaced": 0, "tensors_requantized": 0}

    def finish(name: str, w: "torch.Tensor", original: "torch.Tensor") -> None:
        target_dtype = out_dtype if (out_dtype is not None and w.is_floating_point()) else original.dtype
        lora = loras.get(name)
        if name in replaced:
            w = replaced[name]
            if tuple(w.shape) != tuple(original.shape):
                raise InputError(f"{adapter.path}: modules_to_save tensor {name} is {tuple(w.shape)} but the base has {tuple(original.shape)}. "
                                 "Pass the base model the adapter was trained on (--base-model).")
            counts["tensors_replaced"] += 1
        elif quant is not None and name in quant_keys:
            w = nf4_round_trip(w, quant, transposed=quant_keys[name])
            counts["tensors_requantized"] += 1
        counts["tensors_merged"] += lora is not None
        writer.add(name, merge_weight(w, lora, target_dtype))
        counts["tensors_total"] += 1

    try:
        with tqdm(total=len(keys) + len(virtual), desc="merge", unit="tensor", disable=not progress) as bar:
            for path in files:
                for name, w in reader(path):
                    if name in tied_sources:  # write the untied output layer from the original values first
                        finish(tied_sources[name], w.clone(), w)
                        bar.update()
                    finish(name, w, w)
                    del w
                    _release_freed_memory()
                    bar.update()
        n_shards = writer.finish()
        _copy_side_files(base_dir, adapter.path, tmp, cfg, dtype, untie)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave half a model behind
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return {**counts, "untied_embeddings": untie, "shards": n_shards, "size_bytes": writer.total}


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc). Freed read buffers sit between the tensors kept
    for the current shard, and glibc keeps such holes resident: +70% peak RSS without this."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


def _copy_side_files(base_dir: Path, adapter_dir: Path, out: Path, cfg: dict, dtype: str, untie: bool) -> None:
    """config (dtype, untied embeddings), generation config, tokenizer (the adapter's own, if it saved one)."""
    for p in base_dir.iterdir():
        if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES) and not p.name.endswith(".index.json") and p.name != "config.json":
            shutil.copy2(p, out / p.name)
    for name in TOKENIZER_FILES:
        if (adapter_dir / name).exists():
            shutil.copy2(adapter_dir / name, out / name)
    cfg = dict(cfg)
    if dtype != "auto":
        cfg["torch_dtype" if "torch_dtype" in cfg and "dtype" not in cfg else "dtype"] = dtype
    if untie:
        cfg["tie_word_embeddings"] = False
        if isinstance(cfg.get("text_config"), dict):
            cfg["text_config"] = {**cfg["text_config"], "tie_word_embeddings": False}
    storage.write_json(out / "config.json", cfg)


# ---------------------------------------------------------------- verification


def verify_merge(base: str | Path, adapter_dir: str | Path, merged_dir: str | Path, prompts: list | tuple,
                 quant: QuantSpec | None = None, compute_dtype: str = "float32") -> dict:
    """Max/mean |logit difference| of the merged model vs base + adapter (PeftModel) on `prompts`
    (texts, or conversations rendered with the merged folder's chat template).

    Both models load in the merged folder's dtype (so the base is rounded as the merge rounded it)
    and run in `compute_dtype`. With `quant`, the reference base is NF4-rounded first (what a
    QLoRA-trained adapter saw). `adapter_effect` (base alone vs base + adapter) shows the check
    is not vacuous.
    """
    import gc

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = storage.read_json(Path(merged_dir) / "config.json")
    weights_dtype = getattr(torch, str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"))
    compute = getattr(torch, compute_dtype)
    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    texts = [p if isinstance(p, str) else tok.apply_chat_template(p, tokenize=False) if tok.chat_template else
             "\n".join(m["content"] for m in p) for p in prompts]
    inputs = [tok(t, return_tensors="pt").input_ids[:, :256] for t in texts]

    def logits(model: Any) -> list:
        with torch.no_grad():
            return [model(ids).logits.float() for ids in inputs]

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=weights_dtype)
    if quant is not None:
        names = quantized_modules(model)
        with torch.no_grad():
            for name, mod in model.named_modules():
                if name in names:
                    mod.weight.data = nf4_round_trip(mod.weight, quant, transposed=names[name])
    model = PeftModel.from_pretrained(model.to(compute), str(adapter_dir)).eval()
    ref = logits(model)
    with model.disable_adapter():
        plain = logits(model)
    del model
    gc.collect()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=weights_dtype).to(compute).eval()
    got = logits(merged)
    del merged
    diffs = torch.cat([(a - b).abs().flatten() for a, b in zip(got, ref)])
    effect = torch.cat([(a - b).abs().flatten() for a, b in zip(plain, ref)])
    return {"max_abs_diff": float(diffs.max()), "mean_abs_diff": float(diffs.mean()), "adapter_effect": float(effect.mean()),
            "max_abs_logit": max(float(r.abs().max()) for r in ref), "prompts": len(prompts),
            "weights_dtype": str(weights_dtype).removeprefix("torch."), "compute_dtype": compute_dtype}


def _tensor_index(folder: Path) -> dict[str, tuple[Path, dict, int]]:
    """{tensor name: (file, header entry, data start)} over a folder's safetensors shards."""
    index = {}
    for f in sorted(folder.glob("*.safetensors")):
        header, start = read_safetensors_header(f)
        index.update({name: (f, info, start) for name, info in header.items()})
    return index


def _read_tensor(entry: tuple[Path, dict, int]) -> "torch.Tensor":
    import torch

    path, info, start = entry
    t = torch.empty(info["shape"], dtype=getattr(torch, _ST_DTYPES[info["dtype"]]))
    begin, end = info["data_offsets"]
    with open(path, "rb") as f:
        f.seek(start + begin)
        f.readinto(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return t


def _matvec(w: "torch.Tensor", x: "torch.Tensor", chunk_elems: int = 1 << 24) -> "torch.Tensor":
    """w @ x in float32, a block of rows at a time (w may be bf16/fp16)."""
    import torch

    step = max(1, chunk_elems // max(1, w.shape[1]))
    return torch.cat([w[i:i + step].float() @ x for i in range(0, w.shape[0], step)])


def verify_tensors(base_dir: str | Path, adapter: "Adapter | str | Path", merged_dir: str | Path, quant: QuantSpec | None = None,
                   probes: int = 4, seed: int = 0) -> dict:
    """Bounded-memory verification for a model too big to load: every merged weight against base + adapter,
    one tensor at a time.

    Each LoRA-adapted weight M must map random inputs x like the base does with the adapter on top:
    M @ x vs W @ x + scale * B @ (A @ x), in float32 (W NF4-rounded with `quant`; DoRA rescaled);
    `max_rel_diff` is the largest |difference| over the largest |reference| of any tensor. Every other
    tensor must equal the base's (or the modules_to_save replacement) cast to the merged dtype.
    `adapter_effect` (mean |scale * B @ A @ x| / max |W @ x|) shows the check is not vacuous, and
    `max_err_over_adapter` (largest error / largest adapter output, over tensors where the merged dtype resolves
    the adapter) catches a merge that lost or mis-scaled the adapter even when that is within dtype tolerance.
    """
    import torch

    base_dir, merged_dir = Path(base_dir), Path(merged_dir)
    adapter = adapter if isinstance(adapter, Adapter) else read_adapter(adapter)
    kind, files = list_base_weights(base_dir)
    reader = iter_safetensors if kind == "safetensors" else iter_torch_bin
    merged = _tensor_index(merged_dir)
    quantizable = describe_base(base_dir)[1] if quant is not None else {}
    loras = {m + ".weight": lw for m, lw in adapter.loras.items()}
    gen = torch.Generator().manual_seed(seed)
    rel, effect, ratios = [], [], []
    counts = {"tensors_probed": 0, "tensors_equal": 0, "tensors_different": 0, "not_in_merged": 0}
    worst = ("", 0.0)
    for path in files:
        for name, w in reader(path):
            key = name if name in merged else next((k for k in (name.split(".", 1)[-1], f"model.{name}") if k in merged), None)
            if key is None:
                counts["not_in_merged"] += 1
                continue
            m = _read_tensor(merged[key])
            short = name.removesuffix(".weight")
            conv = next((c for mod, c in quantizable.items() if short == mod or short.endswith("." + mod)), None)
            if conv is not None:
                w = nf4_round_trip(w, quant, transposed=conv)
            lw = loras.get(name) or next((v for k, v in loras.items() if name.endswith("." + k) or k.endswith("." + name)), None)
            if lw is None:
                expect = adapter.replaced.get(name, w)
                same = torch.equal(m, expect.to(m.dtype)) if tuple(m.shape) == tuple(expect.shape) else False
                counts["tensors_equal" if same else "tensors_different"] += 1
                continue
            left, right = (lw.B, lw.A) if lw.kind == "linear" else (lw.A.T, lw.B.T)
            x = torch.randn(m.shape[1], probes, generator=gen)
            base_y, delta_y = _matvec(w, x), lora_delta_y(left, right, x, lw.scale)
            ref = base_y + delta_y
            if lw.magnitude is not None:  # DoRA: rows of W + delta rescaled to the learned magnitude
                full = w.float() + lw.scale * left @ right
                rows = full if lw.kind == "linear" else full.T
                scale_rows = lw.magnitude.float() / torch.linalg.norm(rows, dim=1)
                ref = ref * scale_rows.view(-1, 1) if lw.kind == "linear" else (full * scale_rows.view(1, -1)) @ x
                del full, rows
            got = _matvec(m, x)
            top = ref.abs().max().clamp(min=1e-30)
            r, delta_max = float((got - ref).abs().max() / top), float(delta_y.abs().max() / top)
            rel.append(r)
            effect.append(float(delta_y.abs().mean() / base_y.abs().max().clamp(min=1e-30)))
            if delta_max >= PROBE_RESOLUTION.get(str(m.dtype).removeprefix("torch."), 1e-2):
                ratios.append(r / delta_max)
            counts["tensors_probed"] += 1
            worst = max(worst, (name, r), key=lambda t: t[1])
            del m, w
            _release_freed_memory()
    return {"method": "tensor probes", "max_rel_diff": max(rel, default=0.0), "mean_rel_diff": sum(rel) / max(len(rel), 1),
            "worst_tensor": worst[0], "adapter_effect": sum(effect) / max(len(effect), 1), "probes": probes,
            "max_err_over_adapter": max(ratios, default=0.0), "tensors_adapter_resolved": len(ratios), **counts}


def lora_delta_y(left: "torch.Tensor", right: "torch.Tensor", x: "torch.Tensor", scale: float) -> "torch.Tensor":
    """scale * left @ (right @ x): the adapter's output on x without forming the full delta matrix."""
    return scale * (left @ (right @ x))


# ---------------------------------------------------------------- entry point


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


def _pick_base_model(config: MergeConfig, adapter_cfg: dict, train_cfg: dict) -> str:
    from .models import EMBEDDED

    for name in (config.base_model, adapter_cfg.get("base_model_name_or_path"), train_cfg.get("base_model")):
        if not name or name == "auto":
            continue
        p = Path(name).expanduser()
        if p.is_absolute() and not p.exists():  # trained elsewhere (e.g. Colab): the embedded model by its folder name
            if p.name in EMBEDDED:
                return p.name
            continue
        return name
    raise InputError(f"{config.adapter_dir or config.run_dir}: cannot tell which base model the adapter was trained on "
                     "(adapter_config.json has no usable base_model_name_or_path). Pass it with --base-model.")


def _local_base(name: str) -> Path:
    from .models import resolve_base_model

    resolved = resolve_base_model(name, device="cpu")
    if Path(resolved).is_dir():
        return Path(resolved)
    hub: Any = require("huggingface_hub", "train")  # a hub id: fetch config, tokenizer and weights
    patterns = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    folder = Path(hub.snapshot_download(resolved, allow_patterns=patterns + ["*.safetensors"]))
    if not list(folder.glob("*.safetensors")):
        folder = Path(hub.snapshot_download(resolved, allow_patterns=patterns + ["*.bin"]))
    return folder


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_merge(config: MergeConfig) -> MergeResult:
    """Merge a run's adapter into its base, write the HF folder, verify it; returns the numbers."""
    start = time.time()
    run = storage.run_paths(config.run_dir) if config.run_dir else None
    adapter_dir = Path(config.adapter_dir) if config.adapter_dir else run.adapter  # type: ignore[union-attr]
    train_json = run.train_config if run else adapter_dir.parent / "train_config.json"
    train_cfg = storage.read_json(train_json) if train_json.exists() else {}
    adapter = read_adapter(adapter_dir)
    base_name = _pick_base_model(config, adapter.config, train_cfg)
    base_dir = _local_base(base_name)
    out_dir = Path(config.out_dir) if config.out_dir else (run.root if run else adapter_dir.parent) / "merged"
    if out_dir.exists() and any(out_dir.iterdir()) and not config.overwrite:
        raise InputError(f"{out_dir} already exists. Pass --overwrite to replace it, or another --out-dir.")
    trained_quant = quant_spec_from_train_config(train_cfg)
    use_dq = config.dequantized_base == "true" or (config.dequantized_base == "auto" and trained_quant is not None)
    quant = (trained_quant or QuantSpec()) if use_dq else None
    counts = merge_adapter(base_dir, adapter, out_dir, config.dtype, config.max_shard_size, quant)
    dataset_config = run.dataset_config if run else adapter_dir.parent / "dataset_config.json"
    if dataset_config.exists():  # the training system prompt, for `clonekit chat` and `clonekit gguf`'s Modelfile
        shutil.copy2(dataset_config, out_dir / "dataset_config.json")
    result = MergeResult(str(out_dir), str(base_name), str(adapter_dir), config.dtype, use_dq, asdict(quant) if quant else None,
                         peak_rss_mb=round(_peak_rss_mb(), 1), seconds=0.0, **counts)
    if config.verify:
        result.verification = _verify(base_dir, adapter_dir, out_dir, config, quant, train_cfg)
    result.seconds = round(time.time() - start, 2)
    save_config(config, out_dir / "merge_config.json")
    storage.write_json(out_dir / "merge_result.json", asdict(result))
    return result


def verification_prompts(train_cfg: dict, n: int) -> list:
    """The first `n` conversations of the run's validation.jsonl (cut to their first reply), else built-in texts."""
    path = storage.dataset_paths(train_cfg["data_dir"])["validation"] if train_cfg.get("data_dir") else None
    convs = []
    if path is not None and path.exists():
        for row in storage.read_jsonl(path):
            msgs = row.get("messages") if isinstance(row, dict) else None
            if isinstance(msgs, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs):
                first = next((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), len(msgs) - 1)
                convs.append(msgs[: first + 1])
            if len(convs) == n:
                return convs
    return convs + [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(n - len(convs))]


def _verify(base_dir: Path, adapter_dir: Path, out_dir: Path, config: MergeConfig, quant: QuantSpec | None,
            train_cfg: dict | None = None) -> dict:
    """Verify, then raise when off. Logits in float32 when a float32 copy fits in RAM (2.5x headroom), else in the
    merged dtype when one copy fits, else (an 8B model on a 12 GB machine, or no tokenizer to encode prompts with)
    per-tensor probes that never hold more than one tensor."""
    cfg = storage.read_json(out_dir / "config.json")
    weights_dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    n_bytes = sum(p.stat().st_size for p in out_dir.glob("*.safetensors"))
    as_fp32 = n_bytes * (2 if weights_dtype in ("bfloat16", "float16") else 1)
    available = _available_ram()
    has_tokenizer = any((out_dir / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))
    if 1.5 * n_bytes + 1e9 > available or not has_tokenizer:
        v = verify_tensors(base_dir, adapter_dir, out_dir, quant)
        v["tolerance"] = VERIFY_RTOL.get(weights_dtype, 0.05)
        v["ok"] = (v["max_rel_diff"] <= v["tolerance"] and v["max_err_over_adapter"] <= 0.5 and v["tensors_different"] == 0
                   and v["tensors_probed"] > 0)
        if not v["ok"]:
            raise ClonekitError(f"{out_dir}: merged weights differ from base + adapter (largest relative difference {v['max_rel_diff']:.4g} in "
                                f"{v['worst_tensor'] or '-'}, tolerance {v['tolerance']:.4g}; error up to {v['max_err_over_adapter']:.2g} x the "
                                f"adapter's own output; {v['tensors_different']} unadapted tensors changed). "
                                f"Merge again with --overwrite; if it persists, report it with {adapter_dir}/adapter_config.json.")
        return v
    compute = "float32" if 2.5 * as_fp32 < available else weights_dtype
    prompts = verification_prompts(train_cfg or {}, config.verify_prompts)
    v = verify_merge(base_dir, adapter_dir, out_dir, prompts, quant, compute)
    v["method"] = "logits"
    v["tolerance"] = VERIFY_RTOL.get(weights_dtype if compute == "float32" else compute, 0.05) * max(1.0, v["max_abs_logit"])
    v["ok"] = v["max_abs_diff"] <= v["tolerance"]
    if weights_dtype != "bfloat16" and v["adapter_effect"] > 0:  # bf16 rounding of W + delta alone is ~1/3 of a small adapter's effect
        v["ok"] = v["ok"] and v["mean_abs_diff"] <= 0.5 * v["adapter_effect"]
    if not v["ok"]:
        raise ClonekitError(f"{out_dir}: merged model differs from base + adapter by {v['max_abs_diff']:.4g} (tolerance {v['tolerance']:.4g}, "
                            f"adapter effect {v['adapter_effect']:.4g}). Re-run with --dtype float32; if it persists, report it with {adapter_dir}/adapter_config.json.")
    return v


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m clonekit.merge RUN_DIR [OUT_DIR]")
    r = run_merge(MergeConfig(run_dir=sys.argv[1], out_dir=sys.argv[2] if len(sys.argv) > 2 else ""))
    print(json.dumps(asdict(r), indent=2, default=str))
