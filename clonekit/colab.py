"""Notebook helpers: where am I running, which GPU, which base model fits it, and how long it takes.

`describe_runtime()` reads the machine (Colab or not, GPU name and memory,
bf16); `gpu_advice()` turns that into one plain paragraph (how to switch the
Colab runtime to a T4 when there is no GPU). `RECOMMENDED_MODELS` lists hub
models that fine-tune on a free T4 (15 GB) with QLoRA, each with the settings
that fit it; `estimate_memory_gb` (clonekit.memory's model with T4 settings) and
`estimate_minutes` say how the numbers were obtained: they are formulas,
not measurements on a T4.

Run as: python -m clonekit.colab      (prints the runtime and the model table)
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from typing import Any

from . import storage

REPO_URL = "https://github.com/clonekit/clonekit"  # the repository the README's Colab badges point at
T4_MEMORY_GB = 15.0  # what torch reports for a Colab T4 (16 GB card, ECC on)
T4_BUDGET_GB = 14.0  # leave room for the CUDA context growth and fragmentation
T4_EFFECTIVE_TFLOPS = 10.0  # assumed sustained fp16 rate of QLoRA training on a T4 (65 peak; ~15% utilisation)


def small_mode() -> bool:
    """CLONEKIT_SMALL=1: tiny CPU settings so a notebook finishes in a few minutes (tests, nbmake)."""
    return os.environ.get("CLONEKIT_SMALL", "") not in ("", "0")


def install_command(extras: str = "colab", repo_url: str = REPO_URL, torch_version: str | None = None) -> str:
    """The pip line for Colab: clonekit from git, with torch pinned to the build already there.

    The pin is what leaves Colab's torch and CUDA libraries alone: without it
    a dependency asking for a newer torch would make pip download ~2 GB and
    replace them; with it pip keeps the installed build (or says why it can't).
    The notebooks' install cell is this line (scripts/check_notebooks.py checks).

    >>> install_command("colab,gguf", "https://github.com/me/clonekit", "2.8.0+cu126")
    'pip install -q "clonekit[colab,gguf] @ git+https://github.com/me/clonekit" "torch==2.8.0+cu126"'
    """
    pin = f' "torch=={torch_version}"' if torch_version else ""
    return f'pip install -q "clonekit[{extras}] @ git+{repo_url}"{pin}'


# ---------------------------------------------------------------- runtime


def describe_runtime() -> dict[str, Any]:
    """What this notebook runs on: Colab or not, Python, torch, GPU name/memory/bf16, CPU, RAM, free disk."""
    info: dict[str, Any] = {"colab": storage.is_colab(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
                            "ram_gb": _ram_gb(), "disk_free_gb": round(shutil.disk_usage(os.getcwd()).free / 2**30, 1),
                            "torch": None, "cuda": False, "gpu": None, "gpu_memory_gb": None, "bf16": False, "compute_capability": None,
                            "drive_mounted": storage.mounted_drive_dir() is not None}
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(cuda=True, gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    bf16=bool(torch.cuda.is_bf16_supported()), compute_capability=f"{props.major}.{props.minor}")
    return info


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def gpu_advice(runtime: dict[str, Any] | None = None) -> str:
    """One paragraph saying what this runtime can do and, without a GPU, how to get one."""
    rt = runtime if runtime is not None else describe_runtime()
    if rt.get("torch") is None:
        return "PyTorch is not installed: run the install cell first (on Colab it is already there)."
    if not rt.get("cuda"):
        if rt.get("colab"):
            return ("No GPU in this runtime. In the menu choose Runtime > Change runtime type > Hardware accelerator: "
                    "T4 GPU > Save, then run the notebook again from the top (the free tier includes a T4). "
                    "Without a GPU only the tiny embedded model trains, and slowly.")
        return ("No GPU here: clonekit trains the small embedded model (SmolLM2-135M) on the CPU in float32. "
                "That is enough to try every step; for a real clone open the notebook in Colab with a T4.")
    mem = rt.get("gpu_memory_gb") or 0
    dtype = "bf16" if rt.get("bf16") else "fp16 (this GPU has no bf16)"
    pick = pick_model(mem)
    fit = (f"Recommended base model: {pick.hub_id} (QLoRA 4-bit, micro batch {pick.micro_batch_size}, "
           f"max sequence length {pick.max_seq_length}, about {estimate_memory_gb(pick)['total']:.1f} GB at worst).") if pick else \
        "This GPU has less memory than any recommended model needs with QLoRA; use the embedded model."
    return f"GPU: {rt['gpu']} with {mem:.0f} GB; training runs in {dtype}. {fit}"


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class BaseModelChoice:
    """A hub model recommended for Colab, its architecture numbers (from its config.json) and T4 settings."""

    hub_id: str
    template: str  # chat template family the model ships
    params_b: float  # parameters, billions
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool
    max_seq_length: int  # T4 setting
    micro_batch_size: int  # T4 setting
    gradient_accumulation_steps: int
    gated: bool = False  # needs the license accepted on the hub and an HF token in Colab's secrets
    note: str = ""


RECOMMENDED_MODELS: tuple[BaseModelChoice, ...] = (
    BaseModelChoice("Qwen/Qwen2.5-1.5B-Instruct", "ChatML", 1.54, 1536, 28, 8960, 151936, 12, 2, 128, True, 1024, 4, 4,
                    note="default: fast, good Russian and English"),
    BaseModelChoice("Qwen/Qwen2.5-3B-Instruct", "ChatML", 3.09, 2048, 36, 11008, 151936, 16, 2, 128, True, 1024, 2, 8,
                    note="better replies, about twice as slow"),
    BaseModelChoice("Qwen/Qwen2.5-7B-Instruct", "ChatML", 7.62, 3584, 28, 18944, 152064, 28, 4, 128, False, 1024, 1, 16,
                    note="best quality that fits; plan on resuming across sessions"),
    BaseModelChoice("meta-llama/Llama-3.2-1B-Instruct", "Llama-3", 1.24, 2048, 16, 8192, 128256, 32, 8, 64, True, 1024, 4, 4, gated=True,
                    note="small and quick; weaker Russian"),
    BaseModelChoice("meta-llama/Llama-3.2-3B-Instruct", "Llama-3", 3.21, 3072, 28, 8192, 128256, 24, 8, 128, True, 1024, 2, 8, gated=True),
    BaseModelChoice("google/gemma-3-1b-it", "Gemma", 1.0, 1152, 26, 6912, 262144, 4, 1, 256, True, 1024, 2, 8, gated=True,
                    note="large vocabulary (262k); fp16 on a T4 can overflow, watch for NaN loss"),
    BaseModelChoice("google/gemma-3-4b-it", "Gemma", 4.3, 2560, 34, 10240, 262208, 8, 4, 256, True, 1024, 1, 16, gated=True,
                    note="text+image model (the vision tower is loaded too); fp16 on a T4 can overflow"),
    BaseModelChoice("mistralai/Mistral-7B-Instruct-v0.3", "Mistral [INST]", 7.25, 4096, 32, 14336, 32768, 32, 8, 128, False, 1024, 1, 16,
                    note="no system role in its template: the system prompt joins the first user turn"),
)

EMBEDDED_SPEC = BaseModelChoice("smollm2-135m-instruct", "ChatML", 0.135, 576, 30, 1536, 49152, 9, 3, 64, True, 1024, 4, 4,
                                note="embedded (ships in a PyPI package): CPU demo, no download")


def recommended_model(hub_id: str) -> BaseModelChoice | None:
    return next((m for m in (*RECOMMENDED_MODELS, EMBEDDED_SPEC) if m.hub_id == hub_id), None)


def pick_model(gpu_memory_gb: float, budget_fraction: float = T4_BUDGET_GB / T4_MEMORY_GB) -> BaseModelChoice | None:
    """The default model for a GPU of this size: the first listed one whose worst case fits."""
    for m in RECOMMENDED_MODELS:
        if estimate_memory_gb(m)["total"] <= gpu_memory_gb * budget_fraction:
            return m
    return None


# ---------------------------------------------------------------- estimates


def model_config(m: BaseModelChoice) -> dict[str, Any]:
    """The model's shape as the config.json keys clonekit.memory reads."""
    return {"vocab_size": m.vocab, "hidden_size": m.hidden, "intermediate_size": m.intermediate, "num_hidden_layers": m.layers,
            "num_attention_heads": m.heads, "num_key_value_heads": m.kv_heads, "head_dim": m.head_dim,
            "tie_word_embeddings": m.tied_embeddings}


def estimate_memory_gb(m: BaseModelChoice, max_seq_length: int | None = None, micro_batch_size: int | None = None,
                       lora_r: int = 16, quantization: str = "4bit", tokens_per_batch: int | None = None,
                       device: str = "cuda") -> dict[str, float]:
    """Memory for training `m` as clonekit.train does on a T4, in GB, by part; worst case unless `tokens_per_batch` is given.

    The worst case is every example `max_seq_length` tokens long. The numbers
    come from `clonekit.memory.estimate_memory` (the model that train.py
    prints before a run and bench/ checks against measured peaks) with a T4's
    settings: fp16, gradient checkpointing, no Liger kernels (Colab's install
    has none); on device "cpu", float32 without checkpointing. `total` adds
    the allocator slack and the CUDA context to what torch allocates.

    >>> round(estimate_memory_gb(RECOMMENDED_MODELS[0])["total"], 1) < T4_BUDGET_GB
    True
    """
    from .memory import CUDA_CONTEXT_GB, estimate_memory

    cuda = device == "cuda"
    train = {"quantization": quantization if cuda else "none", "precision": "fp16" if cuda else "fp32", "device": device,
             "micro_batch_size": micro_batch_size or m.micro_batch_size, "max_seq_length": max_seq_length or m.max_seq_length,
             "lora_r": lora_r, "gradient_checkpointing": "on" if cuda else "off", "fused_kernels": "off"}
    est = estimate_memory(model_config(m), train, tokens=tokens_per_batch)
    parts = {"weights": est["weights_gb"], "lora_and_optimizer": est["lora_and_optimizer_gb"], "activations": est["activations_gb"],
             "logits": est["loss_gb"], "overhead": est["needed_gb"] - est["allocated_gb"] + est["workspace_gb"] + (CUDA_CONTEXT_GB if cuda else 0)}
    parts["total"] = sum(parts.values())
    return {k: round(v, 2) for k, v in parts.items()}


TYPICAL_EXPORT = {"examples": 5000, "tokens_per_example": 200, "epochs": 3}  # a few years of one busy chat


def estimate_minutes(m: BaseModelChoice, tokens: int | None = None, tflops: float = T4_EFFECTIVE_TFLOPS) -> float:
    """Training time on a T4 for `tokens` (default: a typical export, 3 epochs).

    6 x params FLOPs per token (forward, backward through activations, and the
    forward again for gradient checkpointing; frozen weights need no weight
    gradients) at T4_EFFECTIVE_TFLOPS. An estimate, not a measurement.
    """
    if tokens is None:
        tokens = TYPICAL_EXPORT["examples"] * TYPICAL_EXPORT["tokens_per_example"] * TYPICAL_EXPORT["epochs"]
    return 6 * m.params_b * 1e9 * tokens / (tflops * 1e12) / 60


def models_table(models: tuple[BaseModelChoice, ...] = RECOMMENDED_MODELS) -> str:
    """A Markdown table of the recommended models with T4 settings, memory and time estimates."""
    rows = ["| model | template | params | T4 settings (seq x micro batch x accum) | GPU memory, worst case | "
            "typical batch | time on a T4* | note |", "|---|---|---|---|---|---|---|---|"]
    typical = TYPICAL_EXPORT["tokens_per_example"]
    for m in models:
        worst = estimate_memory_gb(m)["total"]
        usual = estimate_memory_gb(m, tokens_per_batch=typical * m.micro_batch_size)["total"]
        mins = estimate_minutes(m)
        gated = " (gated: accept the license, add HF_TOKEN)" if m.gated else ""
        rows.append(f"| `{m.hub_id}`{gated} | {m.template} | {m.params_b:.1f}B | {m.max_seq_length} x {m.micro_batch_size} x "
                    f"{m.gradient_accumulation_steps} | {worst:.1f} GB | {usual:.1f} GB | {mins / 60:.1f} h | {m.note} |")
    rows.append(f"\n*{TYPICAL_EXPORT['examples']} examples x {typical} tokens x {TYPICAL_EXPORT['epochs']} epochs, "
                f"at an assumed {T4_EFFECTIVE_TFLOPS:.0f} TFLOP/s; memory and time are formulas (clonekit.colab), not measurements.")
    return "\n".join(rows)


# ---------------------------------------------------------------- presets


GPU_PRESETS: dict[str, dict[str, Any]] = {
    "CPU (tiny demo)": {"base_model": "smollm2-135m-instruct", "max_seq_length": 512, "micro_batch_size": 4,
                        "gradient_accumulation_steps": 1, "lora_r": 16, "lora_alpha": 32, "gpu_memory_gb": None},
    "T4 15 GB (free Colab)": {"base_model": RECOMMENDED_MODELS[0].hub_id, "max_seq_length": 1024, "micro_batch_size": 4,
                              "gradient_accumulation_steps": 4, "lora_r": 16, "lora_alpha": 32, "gpu_memory_gb": T4_MEMORY_GB},
    "L4 22 GB": {"base_model": "Qwen/Qwen2.5-3B-Instruct", "max_seq_length": 1024, "micro_batch_size": 4,
                 "gradient_accumulation_steps": 4, "lora_r": 16, "lora_alpha": 32, "gpu_memory_gb": 22.0},
    "A100 40 GB": {"base_model": "Qwen/Qwen2.5-7B-Instruct", "max_seq_length": 2048, "micro_batch_size": 4,
                   "gradient_accumulation_steps": 4, "lora_r": 32, "lora_alpha": 64, "gpu_memory_gb": 40.0},
}


def preset_for_runtime(runtime: dict[str, Any] | None = None) -> str:
    """The preset name matching this machine's GPU (the CPU demo without one)."""
    rt = runtime if runtime is not None else describe_runtime()
    mem = rt.get("gpu_memory_gb")
    if not mem:
        return "CPU (tiny demo)"
    fitting = [name for name, p in GPU_PRESETS.items() if p["gpu_memory_gb"] and p["gpu_memory_gb"] <= mem + 1]
    return fitting[-1] if fitting else "T4 15 GB (free Colab)"


def estimate_for_settings(base_model: str, max_seq_length: int, micro_batch_size: int, lora_r: int,
                          quantization: str = "4bit") -> dict[str, float] | None:
    """Memory estimate for a base model by name (None for a model not in the list)."""
    m = recommended_model(base_model)
    if m is None:
        return None
    if m is EMBEDDED_SPEC and quantization == "4bit":
        quantization = "none"
    return estimate_memory_gb(m, max_seq_length, micro_batch_size, lora_r, quantization)


# ---------------------------------------------------------------- each notebook's input


def demo_config(work, stage: str):
    """The demo pipeline's config for one stage, writing into this work folder (small under CLONEKIT_SMALL)."""
    from .pipeline import demo_configs

    made = demo_configs(work.root, small=small_mode())[stage]
    return made() if callable(made) else made


def ensure_dataset(work, folder=None):
    """The dataset notebook 02 trains on: local, else pulled from Drive, else built from the demo export."""
    from . import drive

    if storage.dataset_paths(work.data)["train"].exists() or drive.pull(folder, "data", work.data):
        return work.data
    from .dataset import run_prepare

    print(f"No dataset in {work.data} or on Drive: building one from the demo export (run notebook 01 for yours).")
    run_prepare(demo_config(work, "prepare"))
    return work.data


def ensure_run(work, folder=None):
    """The trained adapter notebooks 03 and 04 need: local, else pulled from Drive (without checkpoints), else a short demo run."""
    from . import drive

    adapter = storage.run_paths(work.run).adapter / "adapter_config.json"
    if adapter.exists() or (drive.pull(folder, "clone", work.run, skip=lambda f: f.startswith("checkpoints/")) and adapter.exists()):
        return work.run
    from .train import describe, run_train

    ensure_dataset(work, folder)
    print(f"No trained clone in {work.run} or on Drive: a short demo run (run notebook 02 for a real one).")
    print(describe(run_train(demo_config(work, "train"))))
    return work.run


def ensure_merged(work, folder=None):
    """The merged model notebook 05 converts: local, else pulled from Drive, else merged from the adapter."""
    from . import drive

    if (work.merged / "config.json").exists() or (drive.pull(folder, "merged", work.merged) and (work.merged / "config.json").exists()):
        return work.merged
    from .merge import run_merge

    ensure_run(work, folder)
    print(f"No merged model in {work.merged} or on Drive: merging the adapter now (notebook 04 does this step).")
    run_merge(demo_config(work, "merge"))
    return work.merged


if __name__ == "__main__":
    rt = describe_runtime()
    print(rt)
    print(gpu_advice(rt))
    print(models_table())
