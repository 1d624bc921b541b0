"""Write a PEFT LoRA adapter (not merged) as a llama.cpp LoRA GGUF.

The adapter GGUF is small and runs on top of the base model's GGUF:
`llama-cli -m base-f16.gguf --lora adapter.gguf`. Tensor names and row permutations
come from llama.cpp's converter class for the base model, so the pair lines up with
the base GGUF that `clonekit gguf` (convert_to_gguf) writes.

Run as:
    python -c "from clonekit.gguf_lora import convert_lora_to_gguf; convert_lora_to_gguf('runs/me/adapter', 'base_model_dir', 'runs/me/gguf/adapter.gguf')"
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from .errors import InputError, require


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

    from .gguf import _partial

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
