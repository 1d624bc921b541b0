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

The pieces live beside this module: merge_lora.py reads the adapter, merge_io.py
reads the base tensor by tensor, merge_nf4.py reproduces the 4-bit rounding and
merge_verify.py checks the result.

Run as:
    clonekit merge --run-dir runs/me              # CLI
    python -m clonekit.merge runs/me [out_dir]    # same thing, no CLI

    >>> from clonekit.merge_lora import lora_scale
    >>> lora_scale(alpha=32, r=16), lora_scale(alpha=32, r=16, use_rslora=True)
    (2.0, 8.0)
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import storage
from .config import check, opt, save_config
from .errors import InputError, require
from .merge_io import (ShardWriter, _release_freed_memory, _resolve, describe_base, iter_safetensors, iter_torch_bin,
                       list_base_weights, read_safetensors_header)
from .merge_lora import Adapter, LoraWeights, read_adapter
from .merge_nf4 import QuantSpec, nf4_round_trip, quant_spec_from_train_config
from .merge_verify import _verify

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float16", "bfloat16", "float32")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")


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


# ---------------------------------------------------------------- entry point


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


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m clonekit.merge RUN_DIR [OUT_DIR]")
    r = run_merge(MergeConfig(run_dir=sys.argv[1], out_dir=sys.argv[2] if len(sys.argv) > 2 else ""))
    print(json.dumps(asdict(r), indent=2, default=str))
