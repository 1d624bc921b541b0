"""Read a GGUF's metadata without loading it: architecture, chat template, special tokens, sizes.

`inspect_gguf` parses the GGUF header directly (gguf.GGUFReader would build an
object per vocabulary entry), so it is fast even for a 150k-token vocabulary.
Used by `clonekit gguf` (Modelfile stop tokens, quality table) and the tests.

Run as:
    python -c "from clonekit.gguf_inspect import inspect_gguf; print(inspect_gguf('runs/me/gguf/clone-q8_0.gguf'))"
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import InputError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _read_gguf_header(path: Path, keep_arrays: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[tuple[str, list[int], int]]]:
    """(metadata, [(tensor name, ggml dims, ggml type)]) from a GGUF (little-endian, v2/v3).

    gguf.GGUFReader builds an object per vocabulary entry (seconds for a 50k vocab);
    this skips arrays not named in `keep_arrays`.
    """
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise InputError(f"{path} is not a GGUF file (no GGUF magic). Re-run the conversion.")
        pos = 8

        def take(fmt: str) -> Any:
            nonlocal pos
            (v,) = struct.unpack_from(fmt, m, pos)
            pos += struct.calcsize(fmt)
            return v

        def string() -> str:
            nonlocal pos
            n = take("<Q")
            pos += n
            return m[pos - n: pos].decode("utf-8", "replace")

        def value(vtype: int, keep: bool) -> Any:
            if vtype == 8:
                return string()
            if vtype != 9:
                return take(_SCALARS[vtype])
            etype, n = take("<I"), take("<Q")
            if not keep and etype in _SCALARS:
                nonlocal pos
                pos += n * struct.calcsize(_SCALARS[etype])
                return n
            items = [value(etype, keep) for _ in range(n)]
            return items if keep else n

        n_tensors, n_kv = take("<Q"), take("<Q")
        meta = {}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(take("<I"), key in keep_arrays)
        tensors = []
        for _ in range(n_tensors):
            name = string()
            dims = [take("<Q") for _ in range(take("<I"))]
            tensors.append((name, dims, take("<I")))
            pos += 8  # data offset
    return meta, tensors


def inspect_gguf(path: str | Path) -> dict[str, Any]:
    """Metadata that matters downstream: architecture, chat template, special tokens, sizes.

    `bpw` is bits per weight over all tensors; `tensor_types` counts matrices per ggml type.
    """
    import gguf

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist. Run `clonekit gguf` first or check the path.")
    meta, tensors = _read_gguf_header(path, keep_arrays=("tokenizer.ggml.tokens",))
    tokens = meta.get("tokenizer.ggml.tokens") or []
    info: dict[str, Any] = {"path": str(path), "architecture": meta.get("general.architecture"), "type": meta.get("general.type", "model"),
                            "file_type": meta.get("general.file_type"), "chat_template": meta.get("tokenizer.chat_template"),
                            "add_bos": meta.get("tokenizer.ggml.add_bos_token"), "size_bytes": path.stat().st_size}
    for kind in ("bos", "eos", "eot", "eom", "padding"):
        tid = meta.get(f"tokenizer.ggml.{kind}_token_id")
        info[f"{kind}_id"], info[f"{kind}_token"] = tid, tokens[tid] if tid is not None and tid < len(tokens) else None
    n_elem = n_bytes = 0
    types: Counter = Counter()
    for _, dims, t in tensors:
        qtype = gguf.GGMLQuantizationType(t)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n = math.prod(dims)
        n_elem, n_bytes = n_elem + n, n_bytes + n // block * size
        if len(dims) >= 2:
            types[qtype.name] += 1
    info.update(n_params=n_elem, bpw=8 * n_bytes / max(n_elem, 1), tensor_types=dict(types))
    return info
