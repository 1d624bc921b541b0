"""Stage 2: LoRA / QLoRA fine-tuning on the persona's replies.

Loss only on the assistant (persona) tokens, end-of-turn included, with the
base model's own chat template. On a CUDA GPU the base is loaded in 4-bit nf4
(QLoRA) with fp16 compute on GPUs without bf16 (T4) and bf16 elsewhere; on CPU
a plain LoRA trains in float32. Batches are padding-free: examples are laid
end to end with position ids restarting per example, so no compute is spent
on padding.

Checkpoints go to RUN/checkpoints every `save_steps` (at most
`save_total_limit` kept); re-running the same command resumes from the newest.

Run as: clonekit train runs/data --out runs/clone --max-steps 20
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import storage
from .config import check, opt, save_config
from .errors import ClonekitError, InputError


@dataclass
class TrainConfig:
    data_dir: str = opt("runs/data", "folder with train.jsonl and validation.jsonl (from `clonekit prepare`)")
    out_dir: str = opt("runs/clone", "run folder: adapter, checkpoints, loss history, configs")
    base_model: str = opt("auto", "hub id, local folder, or 'auto' (embedded SmolLM2-135M on CPU, a recommended model on GPU)")
    max_seq_length: int = opt(1024, "longest example in tokens; longer ones lose their oldest context turns, then are dropped")
    micro_batch_size: int = opt(4, "examples per forward pass (lower it if the GPU runs out of memory)")
    gradient_accumulation_steps: int = opt(4, "micro batches per optimizer step: effective batch = micro batch x this, same memory")
    epochs: float = opt(3.0, "passes over the training data")
    max_steps: int = opt(-1, "stop after this many optimizer steps (-1: run all epochs)")
    learning_rate: float = opt(2e-4, "peak learning rate (the articles use 3e-4 for LoRA)")
    lr_scheduler: str = opt("cosine", "learning-rate schedule: cosine, linear or constant")
    warmup_ratio: float = opt(0.03, "share of steps spent warming the learning rate up")
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = opt(0.05, "dropout on the LoRA path")
    target_modules: list[str] = opt(["all-linear"], "layers that get LoRA adapters ('all-linear' or names like q_proj v_proj)")
    train_on_inputs: bool = opt(False, "also learn the other person's messages (the articles' 'Train on Inputs')")
    quantization: str = opt("auto", "'auto' (4-bit on CUDA, none on CPU), '4bit' (QLoRA nf4), '8bit' or 'none'")
    precision: str = opt("auto", "'auto' (bf16 if the GPU has it, else fp16; fp32 on CPU), 'bf16', 'fp16' or 'fp32'")
    gradient_checkpointing: str = opt("auto", "recompute activations to save memory: 'auto' (on GPU: as few layers as the memory estimate needs), 'on', 'off'")
    padding_free: bool = opt(True, "lay examples end to end instead of padding them (same loss, no wasted tokens)")
    attention: str = opt("auto", "'auto' (torch flash varlen on sm80+ GPUs, else sdpa), 'sdpa', 'eager' or 'clonekit_varlen'")
    fused_kernels: str = opt("auto", "'auto' (Liger RMSNorm/RoPE/SwiGLU + fused cross-entropy when liger-kernel is installed on a GPU) or 'off'")
    offload_activations: bool = opt(False, "long-context mode: checkpointed layer inputs wait in CPU RAM and MLPs run in 4096-token tiles (slower, far less GPU memory)")
    preset: str = opt("auto", "'auto': settings for the GPU found (T4 15 GB, 24 GB, 40-80 GB) where you left the default; 'none'")
    save_steps: int = opt(200, "save a checkpoint every N optimizer steps")
    save_total_limit: int = opt(3, "keep at most this many checkpoints")
    eval_steps: int = opt(200, "validation loss every N steps (0: only at the end)")
    logging_steps: int = opt(10, "log the training loss every N steps")
    resume: str = opt("auto", "'auto' (newest checkpoint in the run folder), 'no', or a checkpoint folder")
    seed: int = opt(42, "seed for LoRA init and data order")

    def __post_init__(self):
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        p = []
        for name in ("max_seq_length", "micro_batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha", "save_steps", "save_total_limit", "logging_steps"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0 and self.max_steps <= 0:
            p.append("set epochs > 0 or max_steps > 0")
        if not 0 < self.learning_rate < 1:
            p.append(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.lora_dropout < 1:
            p.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        choices = {"quantization": ("auto", "4bit", "8bit", "none"), "precision": ("auto", "bf16", "fp16", "fp32"),
                   "gradient_checkpointing": ("auto", "on", "off"), "lr_scheduler": ("cosine", "linear", "constant"),
                   "attention": ("auto", "sdpa", "eager", "clonekit_varlen"), "fused_kernels": ("auto", "off"), "preset": ("auto", "none")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                p.append(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        check(p, "TrainConfig")


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None
    history: list[dict[str, Any]]
    stats: dict[str, Any]


# ---------------------------------------------------------------- data (pure)


def fit_example(tokenizer, messages: list[dict[str, Any]], max_len: int, train_on_inputs: bool = False) -> tuple[list[int], list[int], str]:
    """Tokenize one example within `max_len`: drop the oldest context turns until it fits.

    Returns (ids, labels, status) with status "ok", "truncated" or "too_long"
    (the last turn alone does not fit: the example is dropped).
    """
    from .chat_template import render_conversation

    msgs = list(messages)
    status = "ok"
    while True:
        ids, mask = render_conversation(tokenizer, msgs, train_on_inputs=train_on_inputs)
        if len(ids) <= max_len:
            labels = [t if m else -100 for t, m in zip(ids, mask)]
            return ids, labels, status
        head = 1 if msgs and msgs[0]["role"] == "system" else 0
        body = msgs[head:]
        if len(body) <= 2:
            return [], [], "too_long"
        # drop the oldest user turn and whatever precedes the next user turn
        cut = 1
        while cut < len(body) - 1 and body[cut]["role"] != "user":
            cut += 1
        msgs = msgs[:head] + body[cut:]
        status = "truncated"


def tokenize_examples(tokenizer, rows: list[dict[str, Any]], max_len: int, train_on_inputs: bool = False) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
    """Tokenize rows of train.jsonl; counts what the length limit truncated or dropped."""
    out, counts = [], {"examples": len(rows), "truncated": 0, "dropped_too_long": 0, "dropped_no_target": 0}
    for row in rows:
        ids, labels, status = fit_example(tokenizer, row["messages"], max_len, train_on_inputs)
        if status == "too_long":
            counts["dropped_too_long"] += 1
            continue
        if all(x == -100 for x in labels):
            counts["dropped_no_target"] += 1
            continue
        counts["truncated"] += status == "truncated"
        out.append({"input_ids": ids, "labels": labels})
    counts["kept"] = len(out)
    counts["tokens"] = sum(len(x["input_ids"]) for x in out)
    counts["target_tokens"] = sum(sum(t != -100 for t in x["labels"]) for x in out)
    return out, counts


# ---------------------------------------------------------------- model (edges)


def resolve_runtime(config: TrainConfig) -> dict[str, Any]:
    """Device, dtype and quantization actually used, from the config and the hardware."""
    import torch

    from .fast import have_liger

    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    precision = config.precision
    if precision == "auto":
        precision = ("bf16" if bf16_ok else "fp16") if cuda else "fp32"
    if precision == "bf16" and cuda and not bf16_ok:
        raise ClonekitError("This GPU has no bf16 (a T4 hasn't): use --precision fp16 or auto.")
    quant = config.quantization
    if quant == "auto":
        quant = "4bit" if cuda else "none"
    if quant != "none" and not cuda:
        raise ClonekitError(f"--quantization {quant} needs a CUDA GPU (bitsandbytes). On CPU use --quantization none.")
    if config.offload_activations and not cuda:
        raise ClonekitError("--offload-activations needs a CUDA GPU (it moves activations from GPU to CPU memory). Drop it on CPU.")
    gc = config.gradient_checkpointing == "on" or (config.gradient_checkpointing == "auto" and cuda) or config.offload_activations
    return {"device": "cuda" if cuda else "cpu", "precision": precision, "quantization": quant, "gradient_checkpointing": gc,
            "checkpoint_layers": None, "offload_activations": bool(config.offload_activations and gc), "attention": config.attention,
            "fused_kernels": config.fused_kernels == "auto" and cuda and have_liger()}


def gpu_memory_gb() -> float:
    """GPU memory torch may allocate, in GiB: the card minus the CUDA context, or CLONEKIT_GPU_MEMORY_GB.

    Setting CLONEKIT_GPU_MEMORY_GB=14 caps PyTorch's allocator there (torch.cuda.set_per_process_memory_fraction):
    a 15 GB T4 emulated on a bigger GPU, or room left for other programs.
    """
    import os

    import torch

    from .memory import CUDA_CONTEXT_GB

    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    cap = os.environ.get("CLONEKIT_GPU_MEMORY_GB")
    if cap:
        gb = float(cap)
        if not 0 < gb <= total:
            raise ClonekitError(f"CLONEKIT_GPU_MEMORY_GB={cap} must be between 0 and this GPU's {total:.1f} GB.")
        torch.cuda.set_per_process_memory_fraction(gb / total, 0)
        return gb
    return total - CUDA_CONTEXT_GB


def plan_memory(config: TrainConfig, runtime: dict[str, Any], base: str) -> dict[str, Any]:
    """Before loading: settle checkpointing from the memory estimate, print the estimate and whether it fits.

    'auto' checkpointing keeps as many layers un-checkpointed as fit (less recompute); it offloads
    when even full checkpointing does not fit. Returns the estimate (also stored in runtime).
    """
    from transformers import AutoConfig

    from .memory import describe_estimate, estimate_memory, plan_checkpointing

    if runtime["device"] != "cuda":
        return {}
    base = AutoConfig.from_pretrained(base).to_dict()  # a local folder or a cached hub id
    usable = gpu_memory_gb()
    fields = {**vars(config), **runtime, "gradient_checkpointing": "on" if runtime["gradient_checkpointing"] else "off"}
    if config.gradient_checkpointing == "auto" and not config.offload_activations:
        plan = plan_checkpointing(base, fields, usable)
        runtime["gradient_checkpointing"] = plan["gradient_checkpointing"] == "on"
        runtime["checkpoint_layers"], runtime["offload_activations"] = plan["checkpoint_layers"], plan["offload_activations"]
        fields.update(plan)
    est = estimate_memory(base, fields, usable)
    runtime["memory_estimate"] = est
    print(describe_estimate(est))
    return est


def apply_gpu_preset(config: TrainConfig) -> dict[str, Any]:
    """Fill the fields the user left at their defaults from `memory.preset_for_gpu`; returns what changed."""
    import dataclasses

    import torch

    from .memory import preset_for_gpu

    if config.preset != "auto" or not torch.cuda.is_available():
        return {}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changed = {}
    for key, value in preset_for_gpu(gpu_memory_gb(), torch.cuda.is_bf16_supported()).items():
        if getattr(config, key) == defaults.get(key) and value != defaults.get(key):
            setattr(config, key, value)
            changed[key] = value
    return changed


def load_model_for_training(base: str, runtime: dict[str, Any], add_pad: bool, tokenizer):
    """The base model ready for LoRA: quantized on CUDA, attention and fused kernels chosen, checkpointing wired."""
    import torch
    from transformers import AutoModelForCausalLM

    from .fast import apply_fused_kernels, choose_attention, enable_checkpointing, tile_mlp

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[runtime["precision"]]
    kwargs: dict[str, Any] = {"dtype": dtype if runtime["device"] == "cuda" else torch.float32}
    if runtime["quantization"] != "none":
        from transformers import BitsAndBytesConfig

        if runtime["quantization"] == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    if runtime["device"] == "cuda":
        kwargs["device_map"] = {"": 0}
    attn = choose_attention(runtime["device"], kwargs["dtype"], runtime.get("attention", "auto"))
    runtime["attention"] = attn
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation=attn, **kwargs)
    if add_pad:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    # No KV cache in training: with one, transformers stops honouring packed-example boundaries.
    model.config.use_cache = False
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Frozen base: everything stays 16-bit. (peft's prepare_model_for_kbit_training would upcast norms,
    # embeddings and head to fp32: +2 GB on an 8B model and an fp32 residual stream; the norms compute in fp32 anyway.)
    for p in model.parameters():
        p.requires_grad_(False)
    runtime["fused"] = apply_fused_kernels(model, runtime["device"]) if runtime.get("fused_kernels") else []
    if runtime["gradient_checkpointing"]:
        runtime["checkpointed_layers"] = enable_checkpointing(model, offload=runtime.get("offload_activations", False),
                                                              layers=runtime.get("checkpoint_layers"))
    if runtime.get("offload_activations"):
        tile_mlp(model)
    return model


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    targets: Any = config.target_modules[0] if config.target_modules == ["all-linear"] else list(config.target_modules)
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", bias="none")


def find_resume_checkpoint(config: TrainConfig) -> str | None:
    if config.resume == "no":
        return None
    if config.resume != "auto":
        if not Path(config.resume).is_dir():
            raise InputError(f"Checkpoint {config.resume} does not exist. Pass a checkpoint-N folder, or --resume auto.")
        return config.resume
    ckpt = storage.latest_checkpoint(storage.run_paths(config.out_dir).checkpoints)
    return str(ckpt) if ckpt else None


def build_trainer(config: TrainConfig, runtime: dict[str, Any], model, tokenizer, train_data, val_data, output_dir: str, callbacks: list):
    """The trainer clonekit trains with: packed batches, lean loss (never all logits), real tokens/s in the logs."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from .fast import PackedCollator, lean_forward_loss

    class CloneTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # accelerate autocasts only through model.forward, which the lean path does not call
            with self.accelerator.autocast():
                loss, _ = lean_forward_loss(model, inputs, num_items=num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss

    args = SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if val_data and config.eval_steps > 0 else "no",
        eval_steps=config.eval_steps or None,
        bf16=runtime["precision"] == "bf16",
        fp16=runtime["precision"] == "fp16",
        gradient_checkpointing=False,  # already wired per layer by load_model_for_training (optionally offloaded)
        optim="paged_adamw_8bit" if runtime["quantization"] != "none" else ("adamw_torch_fused" if runtime["device"] == "cuda" else "adamw_torch"),
        padding_free=False,  # clonekit's own collator packs (PackedCollator)
        max_length=None,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        prediction_loss_only=True,
        use_cpu=runtime["device"] == "cpu",
        include_num_input_tokens_seen="non_padding",  # real tokens: padding never counts
    )
    trainer = CloneTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_data),
        eval_dataset=Dataset.from_list(val_data) if val_data else None,
        processing_class=tokenizer,
        data_collator=PackedCollator() if config.padding_free else None,
        callbacks=[TokensPerSecondCallback(), *callbacks],
    )
    trainer.model_accepts_loss_kwargs = True  # compute_loss divides by the whole accumulated batch's target count
    keep_adapters_fp32(model, autocast=runtime["device"] == "cuda" and runtime["precision"] != "fp32")
    return trainer


def keep_adapters_fp32(model, autocast: bool) -> None:
    """LoRA weights in fp32 (TRL casts them to bf16 for quantized bases: fp16 loss scaling needs fp32, and small
    updates survive); under autocast, peft must not cast each LoRA input to fp32 (a copy per adapted layer, kept
    for backward): autocast already runs the LoRA matmuls in 16-bit."""
    import torch

    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if autocast:
        for m in model.modules():
            if hasattr(m, "lora_A"):
                m.cast_input_dtype_enabled = False


class _CallbackBase:
    pass


def _callback_base():
    try:
        from transformers import TrainerCallback
    except ImportError:  # pragma: no cover
        return _CallbackBase
    return TrainerCallback


class TokensPerSecondCallback(_callback_base()):
    """Adds real (non-padding) tokens/s and peak GPU memory to every log line the progress bar prints."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0, self.tok0 = time.time(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not hasattr(self, "t0"):
            return
        dt = time.time() - self.t0
        if dt > 0:
            logs["real_tokens_per_s"] = round((state.num_input_tokens_seen - self.tok0) / dt, 1)
        try:
            import torch

            if torch.cuda.is_available():
                logs["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        except ImportError:  # pragma: no cover
            pass


def run_train(config: TrainConfig, callbacks: list | None = None) -> TrainResult:
    """Fine-tune a LoRA adapter on DATA_DIR and save it in OUT_DIR/adapter."""
    import torch
    from peft import get_peft_model

    from .chat_template import ensure_pad_token
    from .models import resolve_base_model
    from .progress import HistoryCallback, plot_history

    paths = storage.run_paths(config.out_dir)
    preset = apply_gpu_preset(config)
    if preset:
        print("GPU preset: " + ", ".join(f"{k}={v}" for k, v in preset.items()))
    runtime = resolve_runtime(config)
    base = resolve_base_model(config.base_model, device=runtime["device"])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    add_pad = ensure_pad_token(tokenizer)
    data = storage.dataset_paths(config.data_dir)
    train_rows = storage.read_jsonl(data["train"])
    val_rows = storage.read_jsonl(data["validation"]) if data["validation"].exists() else []
    train_data, train_counts = tokenize_examples(tokenizer, train_rows, config.max_seq_length, config.train_on_inputs)
    val_data, val_counts = tokenize_examples(tokenizer, val_rows, config.max_seq_length, False)
    if not train_data:
        raise ClonekitError(f"All {len(train_rows)} training examples are longer than --max-seq-length {config.max_seq_length}. Raise it.")
    print(f"examples: {train_counts['kept']} train ({train_counts['truncated']} truncated, {train_counts['dropped_too_long']} dropped as too long), {val_counts['kept']} validation")

    torch.manual_seed(config.seed)
    plan_memory(config, runtime, base)
    model = load_model_for_training(base, runtime, add_pad, tokenizer)
    model = get_peft_model(model, lora_config(config))
    history_cb = HistoryCallback(paths.history)
    trainer = build_trainer(config, runtime, model, tokenizer, train_data, val_data, str(paths.checkpoints), [history_cb, *(callbacks or [])])
    resume = find_resume_checkpoint(config)
    if resume:
        print(f"resuming from {resume}")
    save_config(config, paths.train_config)
    ds_cfg = storage.dataset_paths(config.data_dir)["config"]
    if ds_cfg.exists():
        storage.atomic_write_text(paths.dataset_config, ds_cfg.read_text(encoding="utf-8"))
    start = time.time()
    if runtime["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.time() - start
    # tokens of this session only (a resumed run restores the earlier count)
    session_tokens = trainer.state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0)
    evals = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == trainer.state.global_step]
    final_eval = evals[-1] if evals else (trainer.evaluate() if val_data else {})
    history_cb.record(trainer.state)
    model.save_pretrained(paths.adapter)
    tokenizer.save_pretrained(paths.adapter)
    storage.write_json(paths.adapter / "clonekit_base.json", {"base_model": base, "base_model_arg": config.base_model, "runtime": runtime})
    plot_history(history_cb.history, paths.loss_plot)
    stats = {
        **runtime,
        "data": {"train": train_counts, "validation": val_counts},
        "train_runtime_s": round(elapsed, 1),
        "real_tokens": session_tokens,
        "real_tokens_per_s": round(session_tokens / elapsed, 1) if elapsed > 0 else None,
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if runtime["device"] == "cuda" else None,
        "resumed_from": resume,
    }
    train_losses = [h["loss"] for h in history_cb.history if "loss" in h]
    result = TrainResult(paths.root, paths.adapter, trainer.state.global_step, out.training_loss if out else None,
                         final_eval.get("eval_loss"), history_cb.history, stats)
    storage.write_json(paths.result, {"steps": result.steps, "train_loss": result.train_loss, "eval_loss": result.eval_loss,
                                      "first_logged_loss": train_losses[0] if train_losses else None,
                                      "last_logged_loss": train_losses[-1] if train_losses else None, **stats})
    return result


def describe(result: TrainResult) -> str:
    s = result.stats
    ev = f", validation loss {result.eval_loss:.3f}" if result.eval_loss is not None else ""
    tr = f"training loss {result.train_loss:.3f}" if result.train_loss is not None and not math.isnan(result.train_loss) else "no loss logged"
    peak = f", peak GPU memory {s['peak_gpu_memory_gb']} GB" if s.get("peak_gpu_memory_gb") is not None else ""
    return (f"trained {result.steps} steps in {s['train_runtime_s']} s ({s['real_tokens_per_s']} real tokens/s{peak}, {s['device']}, {s['precision']}, "
            f"quantization {s['quantization']}): {tr}{ev}. Adapter: {result.adapter_dir}")
