"""Read a PEFT LoRA adapter folder for the merge: LoRA pairs, scales and modules_to_save.

`read_adapter` turns adapter_config.json + adapter_model.safetensors (or .bin) into
`LoraWeights` per adapted module (float32 A and B, PEFT's scale with rsLoRA and
rank/alpha patterns, DoRA magnitudes, Conv1D/embedding layout) and the tensors that
replace whole modules (modules_to_save); anything it cannot merge raises InputError.

Run as (library only; `clonekit merge` calls it):
    from clonekit.merge_lora import read_adapter
    adapter = read_adapter("runs/me/adapter")   # adapter.loras, adapter.replaced
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import storage
from .errors import InputError


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


def lora_scale(alpha: float, r: int, use_rslora: bool = False) -> float:
    """PEFT's scaling: alpha/r, or alpha/sqrt(r) for rank-stabilized LoRA."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def match_pattern(patterns: dict, module: str, default: Any) -> Any:
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches the end of the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


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
