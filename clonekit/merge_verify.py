"""Check a merged model against base + adapter, and refuse a wrong merge.

Two checks, chosen by `_verify` from the RAM available:
- logits (`verify_merge`): the merged model and PeftModel(base) + adapter run the
  run's validation prompts (`verification_prompts`), one model in RAM at a time;
- tensor probes (`verify_tensors`), for a model too big for RAM or without a
  tokenizer: every merged weight against base + adapter on random inputs, one
  tensor at a time.
Tolerances per merged dtype are VERIFY_RTOL and PROBE_RESOLUTION; a merge outside
them raises ClonekitError.

Run as (`clonekit merge` runs it unless --no-verify):
    from clonekit.merge_verify import verify_tensors
    verify_tensors("base_dir", "runs/me/adapter", "runs/me/merged")["max_rel_diff"]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import storage
from .errors import ClonekitError
from .merge_io import _ST_DTYPES, _release_freed_memory, describe_base, iter_safetensors, iter_torch_bin, list_base_weights, read_safetensors_header
from .merge_lora import Adapter, read_adapter
from .merge_nf4 import QuantSpec, nf4_round_trip, quantized_modules

if TYPE_CHECKING:
    import torch

    from .merge import MergeConfig

DEFAULT_PROMPTS = (
    "Hey, are you coming to the party on Saturday?",
    "What did you think of the movie last night?",
    "Can you send me the notes from today's meeting?",
    "I just got back from the mountains, it was amazing.",
)
# Logit tolerance of the verification, relative to max(1, largest |logit|), by merged dtype. Measured on
# SmolLM2-135M + a random r8 LoRA (max |logit| 29): max diff 8e-5 (float32), 0.027 (float16), 0.37 (bfloat16).
VERIFY_RTOL = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}
# Tensor-probe verification: an adapter whose output on a tensor is below this fraction of the tensor's output
# is below what the merged dtype resolves there, so only VERIFY_RTOL applies to that tensor.
PROBE_RESOLUTION = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 8e-3}


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


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


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
