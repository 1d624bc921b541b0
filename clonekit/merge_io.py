"""Tensor-at-a-time I/O for the streaming merge: read base checkpoints, write output shards.

Safetensors shards are read with plain file reads, one tensor at a time (an open
mmap would count a whole shard towards RSS); pytorch_model*.bin shards are
memory-mapped. `describe_base` builds the model on the meta device to learn its tied
weights and which layers 4-bit loading quantizes. `ShardWriter` writes a shard as soon
as it fills up, and `_release_freed_memory` hands freed read buffers back to the OS,
so peak RAM stays about one output shard.

Run as (library only; `clonekit merge` and its verification call it):
    from clonekit.merge_io import ShardWriter, iter_safetensors
    for name, tensor in iter_safetensors("model.safetensors"): ...
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from . import storage
from .errors import InputError
from .merge_nf4 import quantized_modules

if TYPE_CHECKING:
    import torch

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


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc). Freed read buffers sit between the tensors kept
    for the current shard, and glibc keeps such holes resident: +70% peak RSS without this."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass
