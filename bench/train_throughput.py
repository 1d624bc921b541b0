"""Training speed and memory on chat-shaped data: plain TRL (padded) vs clonekit, side by side, same GPU.

Models are real architectures with random weights (no hub): a Llama-3.2-1B-shaped model (bf16 LoRA) and a
Llama-3-8B-shaped model (QLoRA nf4), written once into --work. Data is synthetic and chat-shaped: lengths
log-normal with median ~180 tokens and a long tail to the 2048-token limit, loss on the last ~35% of each
example (the persona's reply). Both trainers get the same examples in the same order, the same LoRA
(r16, alpha 32, dropout 0.05, all linear layers), the same learning rate and 16 examples per optimizer step.

  trl_padded  TRL SFTTrainer + PEFT as tutorials use it: padded batches (micro 8 x accumulation 2), SDPA,
              gradient checkpointing (TRL's default), QLoRA via prepare_model_for_kbit_training + paged AdamW 8-bit
  clonekit    clonekit.train: GPU preset, memory plan, packed batches, varlen attention, Liger kernels, lean loss

Each case runs in its own process (Liger patches transformers globally). Throughput counts real tokens
(non-padding), never input_ids.numel(), over a timed window after warm-up steps.

Suites:
  speed   1B and 8B QLoRA, trl_padded vs clonekit, bf16                          -> train_throughput.{json,md}
  t4      emulated T4 (CLONEKIT_GPU_MEMORY_GB=14: PyTorch capped at 14 GiB, fp16, SDPA): 8B QLoRA at 2048 tokens
          with the T4 preset, then single examples of growing length in long-context mode until one does not
          fit; each probe's measured peak against clonekit.memory's estimate          -> train_t4.{json,md}
  unsloth Unsloth (FastLanguageModel + its patched SFTTrainer, its defaults, same data and LoRA) vs clonekit.
          Unsloth pins transformers <= 5.17, trl <= 1.15, datasets < 5: its workers import from their own site
          folder (UNSLOTH_SITE, default /tmp/uns), the clonekit workers from the normal one -> train_unsloth.{json,md}
  smoke   tiny model on CPU: every code path in seconds (no results written unless --out is given)

Run as (on a GPU; the device call copies $OUT back; bench/results/train_*.md record the exact commands):
    python bench/train_throughput.py --suite speed --out $OUT
    python bench/train_throughput.py --suite t4 --out $OUT
    python bench/train_throughput.py --suite unsloth --out $OUT      # after installing Unsloth into /tmp/uns
    python bench/train_throughput.py --suite smoke                   # CPU, ~1 minute
The missing packages travel as wheels (.whl/, see the closing note of issue 6 for the exact list).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
PAD = 0  # the synthetic tokenizer's pad id: never in the data, so (ids != PAD) counts real tokens exactly

MODELS = {
    "tiny": {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False},
}
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
EXAMPLES_PER_STEP = 16


# ---------------------------------------------------------------- data and models


def chat_lengths(n: int, max_len: int, seed: int = 0, median: int = 180, sigma: float = 1.0) -> list[int]:
    """Log-normal example lengths (median `median`), clipped to [16, max_len]: most short, a long tail."""
    import random

    rng = random.Random(seed)
    return [max(16, min(max_len, int(rng.lognormvariate(__import__("math").log(median), sigma)))) for _ in range(n)]


def make_examples(lengths: list[int], vocab: int, seed: int = 0, reply_share: float = 0.35) -> list[dict]:
    """Random token ids (never PAD) with the loss on the last `reply_share` of each example."""
    import random

    rng = random.Random(seed + 1)
    out = []
    for n in lengths:
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        k = max(4, int(n * reply_share))
        out.append({"input_ids": ids, "labels": [-100] * (n - k) + ids[n - k:]})
    return out


def make_tokenizer(vocab: int):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, vocab)}}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="<unk>")),
                                  pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    return tok


def make_model(name: str, work: Path) -> Path:
    """Random-weight Llama of a real shape, saved as bf16 safetensors (built on the GPU when there is one)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = work / f"llama_{name}"
    if (path / "config.json").exists():
        return path
    cfg = LlamaConfig(**MODELS[name], max_position_embeddings=131072, rope_theta=500000.0, bos_token_id=1, eos_token_id=1, pad_token_id=PAD)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if dev == "cuda" else torch.float32)
    model.save_pretrained(path, max_shard_size="50GB")
    make_tokenizer(cfg.vocab_size).save_pretrained(path)
    return path


# ---------------------------------------------------------------- one case (in its own process)


def _meter(counter: dict, warmup: int, seconds: float, min_steps: int):
    import torch
    from transformers import TrainerCallback

    class Meter(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            now, step = time.perf_counter(), state.global_step
            if step == warmup:
                counter["t0"], counter["tok0"], counter["pad0"] = now, counter["real"], counter["computed"]
            if step > warmup and "t0" in counter:
                counter.update(t1=now, tok1=counter["real"], pad1=counter["computed"], steps=step - warmup)
                if now - counter["t0"] >= seconds and step - warmup >= min_steps:
                    control.should_training_stop = True

    return Meter()


def _count_tokens(trainer, counter: dict) -> None:
    """Count real and computed tokens of every micro batch the trainer trains on (before it moves to the GPU)."""
    inner = trainer.training_step

    def training_step(model, inputs, *a, **k):
        ids = inputs["input_ids"]
        counter["real"] += int((ids != PAD).sum())
        counter["computed"] += int(ids.numel())
        return inner(model, inputs, *a, **k)

    trainer.training_step = training_step


def _train_args(case: dict) -> dict:
    return dict(learning_rate=2e-4, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, max_steps=case["max_steps"],
                seed=42, data_seed=42, report_to="none", save_strategy="no", dataloader_num_workers=0, max_length=case["max_len"],
                include_num_input_tokens_seen="non_padding")


def run_trl_padded(case: dict, model_dir: Path, data: list[dict], counter: dict):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if case["precision"] == "bf16" else torch.float16 if case["precision"] == "fp16" else torch.float32
    kw = {"dtype": dtype, "attn_implementation": "sdpa"}
    if case["quantization"] == "4bit":
        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                                       bnb_4bit_compute_dtype=dtype)
    if cuda:
        kw["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
    if case["quantization"] == "4bit":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    args = SFTConfig(output_dir=str(case["work"] / "trl_out"), per_device_train_batch_size=8, gradient_accumulation_steps=2,
                     gradient_checkpointing=cuda, bf16=case["precision"] == "bf16", fp16=case["precision"] == "fp16",
                     optim="paged_adamw_8bit" if case["quantization"] == "4bit" else "adamw_torch", use_cpu=not cuda,
                     packing=False, padding_free=False, **_train_args(case))
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tok, peft_config=lora)
    settings = {"micro_batch_size": 8, "gradient_accumulation_steps": 2, "gradient_checkpointing": cuda, "attention": "sdpa",
                "optim": args.optim, "padding": "longest in micro batch"}
    return trainer, settings, None


def run_unsloth(case: dict, model_dir: Path, data: list[dict], counter: dict):
    """Unsloth's FastLanguageModel + its patched TRL SFTTrainer with its defaults (padding-free where it enables it)."""
    import unsloth  # noqa: F401  (must come before transformers/trl/peft)
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    dtype = torch.bfloat16 if case["precision"] == "bf16" else torch.float16
    model, tok = FastLanguageModel.from_pretrained(str(model_dir), max_seq_length=case["max_len"], dtype=dtype,
                                                   load_in_4bit=case["quantization"] == "4bit", local_files_only=True)
    model = FastLanguageModel.get_peft_model(model, r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                             use_gradient_checkpointing="unsloth", random_state=42)
    args = SFTConfig(output_dir=str(case["work"] / "uns_out"), per_device_train_batch_size=16, gradient_accumulation_steps=1,
                     bf16=case["precision"] == "bf16", fp16=case["precision"] == "fp16",
                     optim="adamw_8bit" if case["quantization"] == "4bit" else "adamw_torch", **_train_args(case))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tok)
    settings = {"micro_batch_size": 16, "gradient_accumulation_steps": 1, "use_gradient_checkpointing": "unsloth",
                "padding_free": getattr(trainer.args, "padding_free", None), "optim": args.optim, "unsloth": unsloth.__version__}
    return trainer, settings, None


def run_clonekit(case: dict, model_dir: Path, data: list[dict], counter: dict):
    from peft import get_peft_model
    from transformers import AutoTokenizer

    from clonekit.train import (TrainConfig, apply_gpu_preset, build_trainer, load_model_for_training, lora_config, plan_memory,
                                resolve_runtime)

    cfg = TrainConfig(data_dir=str(case["work"]), out_dir=str(case["work"] / "ck_out"), max_seq_length=case["max_len"],
                      max_steps=case["max_steps"], learning_rate=2e-4, lr_scheduler="constant", warmup_ratio=0.0, lora_r=LORA["r"],
                      lora_alpha=LORA["alpha"], lora_dropout=case.get("lora_dropout", LORA["dropout"]), quantization=case["quantization"],
                      precision=case["precision"], logging_steps=1, save_steps=10**6, eval_steps=0, resume="no",
                      attention=case.get("attention", "auto"), offload_activations=case.get("offload", False),
                      micro_batch_size=case.get("micro_batch_size", 4), gradient_accumulation_steps=case.get("gradient_accumulation_steps", 4))
    preset = apply_gpu_preset(cfg) if case.get("preset", True) else {}
    runtime = resolve_runtime(cfg)
    est = plan_memory(cfg, runtime, str(model_dir))
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load_model_for_training(str(model_dir), runtime, add_pad=False, tokenizer=tok)
    model = get_peft_model(model, lora_config(cfg))
    trainer = build_trainer(cfg, runtime, model, tok, data, [], str(case["work"] / "ck_out"), [])
    trainer.args.save_strategy = "no"
    settings = {"preset": preset, "micro_batch_size": cfg.micro_batch_size, "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
                **{k: v for k, v in runtime.items() if k != "memory_estimate"}}
    return trainer, settings, est


def run_case(case: dict) -> dict:
    """Train one case for a timed window; returns its numbers."""
    import torch

    case["work"] = Path(case["work"])
    cuda = torch.cuda.is_available()
    model_dir = make_model(case["model"], case["work"])
    n = case.get("n_examples", 6000)
    data = make_examples(chat_lengths(n, case["max_len"], seed=1), MODELS[case["model"]]["vocab_size"])
    counter = {"real": 0, "computed": 0}
    t_load = time.perf_counter()
    runner = {"clonekit": run_clonekit, "trl_padded": run_trl_padded, "unsloth": run_unsloth}[case["trainer"]]
    trainer, settings, est = runner(case, model_dir, data, counter)
    load_s = time.perf_counter() - t_load
    _count_tokens(trainer, counter)
    trainer.add_callback(_meter(counter, case["warmup_steps"], case["seconds"], case["min_steps"]))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    dt = counter.get("t1", 0) - counter.get("t0", 0)
    real = counter.get("tok1", 0) - counter.get("tok0", 0)
    computed = counter.get("pad1", 0) - counter.get("pad0", 0)
    out = {
        "case": case["name"], "trainer": case["trainer"], "model": case["model"], "quantization": case["quantization"],
        "precision": case["precision"], "settings": settings, "load_s": round(load_s, 1), "train_wall_s": round(wall, 1),
        "measured_steps": counter.get("steps", 0), "measured_s": round(dt, 2),
        "real_tokens_per_s": round(real / dt, 1) if dt > 0 else None,
        "computed_tokens_per_s": round(computed / dt, 1) if dt > 0 else None,
        "padding_share": round(1 - real / computed, 3) if computed else None,
        "s_per_step": round(dt / counter["steps"], 3) if counter.get("steps") else None,
        "trainer_counted_tokens": int(trainer.state.num_input_tokens_seen), "our_counted_tokens": counter["real"],
        "losses": [round(x, 4) for x in losses[:40]], "loss_step1": losses[0] if losses else None,
        "any_nan": any(x != x for x in losses),
    }
    if cuda:
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        out["gpu"] = torch.cuda.get_device_name(0)
    if est:
        out["estimate"] = est
    return out


def run_context_probes(case: dict) -> dict:
    """Fixed-size micro batches on one loaded model, one optimizer step each, growing until one does not fit.

    Long-context mode (default): single examples, offloaded checkpoints, tiled MLPs, LoRA dropout 0.
    With "micro_batch_size" > 1 and "offload": false: the worst case of a preset (every example at the limit).
    """
    import gc

    import torch
    from peft import get_peft_model
    from transformers import AutoTokenizer

    from clonekit.memory import estimate_memory
    from clonekit.train import TrainConfig, build_trainer, gpu_memory_gb, load_model_for_training, lora_config, resolve_runtime

    work = Path(case["work"])
    model_dir = make_model(case["model"], work)
    usable = gpu_memory_gb()
    vocab = MODELS[case["model"]]["vocab_size"]
    mbs = case.get("micro_batch_size", 1)
    cfg = TrainConfig(data_dir=str(work), out_dir=str(work / "ctx_out"), max_seq_length=max(case["lengths"]), micro_batch_size=mbs,
                      gradient_accumulation_steps=1, max_steps=case.get("steps_per_probe", 1), learning_rate=2e-4, lr_scheduler="constant",
                      warmup_ratio=0.0, lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=case.get("lora_dropout", 0.0), quantization="4bit",
                      precision=case["precision"], attention=case.get("attention", "sdpa"), offload_activations=case.get("offload", True),
                      gradient_checkpointing="on", logging_steps=1, save_steps=10**6, eval_steps=0, resume="no", preset="none")
    runtime = resolve_runtime(cfg)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = get_peft_model(load_model_for_training(str(model_dir), runtime, add_pad=False, tokenizer=tok), lora_config(cfg))
    fields = {**vars(cfg), **runtime, "gradient_checkpointing": "on"}
    probes = []
    for length in case["lengths"]:
        data = make_examples([length] * cfg.max_steps * mbs, vocab, seed=length, reply_share=0.3)
        est = estimate_memory(str(model_dir), fields, usable, tokens=length * mbs)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        rec = {"tokens": length * mbs, "examples": mbs, "estimate_allocated_gb": est["allocated_gb"], "estimate_fits": est["fits"]}
        t = time.perf_counter()
        try:
            trainer = build_trainer(cfg, runtime, model, tok, data, [], str(work / "ctx_out"), [])
            trainer.args.save_strategy = "no"
            trainer.train()
            torch.cuda.synchronize()
            losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            rec.update(ok=True, loss=losses[-1] if losses else None, nan=any(x != x for x in losses))
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if "out of memory" not in str(e).lower():
                raise
            rec.update(ok=False, error=str(e).splitlines()[0][:200])
        rec["seconds"] = round(time.perf_counter() - t, 1)
        rec["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rec["estimate_error"] = round(est["allocated_gb"] / rec["peak_gpu_gb"] - 1, 3) if rec.get("ok") else None
        trainer = None
        model.zero_grad(set_to_none=True)
        gc.collect()
        probes.append(rec)
        print("PROBE " + json.dumps(rec), flush=True)
        if not rec["ok"]:
            break
    ok = [p["tokens"] for p in probes if p.get("ok")]
    return {"case": case["name"], "trainer": "clonekit", "model": case["model"], "precision": case["precision"], "usable_gpu_gb": usable,
            "settings": {k: v for k, v in runtime.items()}, "probes": probes, "longest_ok_tokens": max(ok) if ok else 0,
            "gpu": torch.cuda.get_device_name(0)}


def worker(spec: str) -> None:
    case = json.loads(spec)
    if case.get("trainer") == "unsloth":
        import unsloth  # noqa: F401  Unsloth patches transformers only when imported before it
    result = run_context_probes(case) if case.get("kind") == "context" else run_case(case)
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- suites (parent process)


def suite_cases(suite: str, work: Path) -> list[dict]:
    base = {"work": str(work), "max_len": 2048, "warmup_steps": 3, "min_steps": 8, "max_steps": 100000}
    if suite == "smoke":
        s = {**base, "model": "tiny", "max_len": 256, "quantization": "none", "precision": "fp32", "seconds": 2, "min_steps": 2,
             "warmup_steps": 1, "n_examples": 400}
        return [{**s, "name": "tiny trl_padded", "trainer": "trl_padded"},
                {**s, "name": "tiny clonekit", "trainer": "clonekit", "micro_batch_size": 16, "gradient_accumulation_steps": 1}]
    if suite == "speed":
        b1 = {**base, "model": "1b", "quantization": "none", "precision": "bf16", "seconds": 25}
        b8 = {**base, "model": "8b", "quantization": "4bit", "precision": "bf16", "seconds": 35, "warmup_steps": 2, "n_examples": 3000}
        return [{**b1, "name": "1B LoRA bf16 trl_padded", "trainer": "trl_padded"},
                {**b1, "name": "1B LoRA bf16 clonekit", "trainer": "clonekit"},
                {**b8, "name": "8B QLoRA trl_padded", "trainer": "trl_padded"},
                {**b8, "name": "8B QLoRA clonekit", "trainer": "clonekit"}]
    if suite == "t4":
        t4 = {**base, "model": "8b", "quantization": "4bit", "precision": "fp16", "attention": "sdpa", "seconds": 45, "warmup_steps": 2,
              "min_steps": 6, "n_examples": 2000, "env": {"CLONEKIT_GPU_MEMORY_GB": "14"}}
        return [{**t4, "name": "8B QLoRA T4-emulated 2048 clonekit", "trainer": "clonekit"},
                {**t4, "name": "8B QLoRA T4-emulated worst case 4 x 2048", "kind": "context", "micro_batch_size": 4, "offload": False,
                 "lora_dropout": LORA["dropout"], "lengths": [2048]},
                {**t4, "name": "8B QLoRA T4-emulated long context", "kind": "context",
                 "lengths": [8192, 16384, 24576, 32768, 40960, 49152, 57344, 65536, 81920, 98304]}]
    if suite == "unsloth":  # Unsloth pins older transformers/trl/datasets: its own site dir (bench README / report)
        uns = {"env": {"PYTHONPATH": os.environ.get("UNSLOTH_SITE", "/tmp/uns"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}}
        b1 = {**base, "model": "1b", "quantization": "none", "precision": "bf16", "seconds": 25}
        b8 = {**base, "model": "8b", "quantization": "4bit", "precision": "bf16", "seconds": 35, "warmup_steps": 2, "n_examples": 3000}
        return [{**b1, **uns, "name": "1B LoRA bf16 unsloth", "trainer": "unsloth"},
                {**b1, "name": "1B LoRA bf16 clonekit", "trainer": "clonekit"},
                {**b8, **uns, "name": "8B QLoRA unsloth", "trainer": "unsloth"},
                {**b8, "name": "8B QLoRA clonekit", "trainer": "clonekit"}]
    raise SystemExit(f"unknown suite {suite}")


def run_worker(case: dict, timeout: float) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **case.get("env", {})}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(case)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    result, probes, tail = None, [], []
    for line in proc.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
            continue
        if line.startswith("PROBE "):
            probes.append(json.loads(line[6:]))
        sys.stdout.write("    " + line)
        tail = (tail + [line.rstrip()])[-15:]
    proc.wait()
    if result is None:
        result = {"case": case["name"], "trainer": case.get("trainer"), "failed": True, "returncode": proc.returncode, "log_tail": tail}
        if probes:
            result["probes"] = probes
            result["longest_ok_tokens"] = max([p["tokens"] for p in probes if p.get("ok")] or [0])
    result["case_wall_s"] = round(time.perf_counter() - t, 1)
    return result


def ratios(results: list[dict]) -> list[dict]:
    by = {r["case"]: r for r in results}
    out = []
    for r in results:
        if r.get("trainer") != "clonekit" or "real_tokens_per_s" not in r:
            continue
        for other in ("trl_padded", "unsloth"):
            base = by.get(r["case"].replace("clonekit", other))
            if not (base and base.get("real_tokens_per_s")):
                continue
            out.append({"model": r["case"].replace(" clonekit", ""), "versus": other, "clonekit_tok_s": r["real_tokens_per_s"],
                        "other_tok_s": base["real_tokens_per_s"], "ratio": round(r["real_tokens_per_s"] / base["real_tokens_per_s"], 2),
                        "clonekit_peak_gb": r.get("peak_gpu_gb"), "other_peak_gb": base.get("peak_gpu_gb"),
                        "loss_step1": [r.get("loss_step1"), base.get("loss_step1")]})
    return out


def table(results: list[dict]) -> str:
    rows = ["| case | real tok/s | computed tok/s | padding | s/step | peak GPU GB | estimate GB | loss step 1 -> last | steps |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "probes" in r:
            continue
        if r.get("failed"):
            rows.append(f"| {r['case']} | failed (rc {r.get('returncode')}) | | | | | | | |")
            continue
        est = r.get("estimate", {}).get("allocated_gb", "")
        losses = r.get("losses") or [None]
        rows.append(f"| {r['case']} | {r['real_tokens_per_s']} | {r['computed_tokens_per_s']} | {r['padding_share']} | {r['s_per_step']} | "
                    f"{r.get('peak_gpu_gb', '')} | {est} | {losses[0]} -> {losses[-1]} | {r['measured_steps']} |")
    return "\n".join(rows)


def probe_table(results: list[dict]) -> str:
    rows = []
    for r in results:
        for p in r.get("probes", []):
            if not rows:
                rows = ["| probe | tokens | trained | peak GPU GB | estimate GB | estimate error | seconds | loss |", "|---|---|---|---|---|---|---|---|"]
            rows.append(f"| {r['case']} | {p['tokens']} | {p.get('ok')} | {p.get('peak_gpu_gb')} | {p['estimate_allocated_gb']} | {p.get('estimate_error')} | "
                        f"{p.get('seconds')} | {p.get('loss', p.get('error', ''))} |")
    return "\n".join(rows)


def write(out_dir: Path, suite: str, results: list[dict], command: str, started: float, tag: str = "") -> None:
    name = {"speed": "train_throughput", "t4": "train_t4", "smoke": "train_smoke", "unsloth": "train_unsloth"}[suite] + (f"_{tag}" if tag else "")
    doc = {"command": command, "suite": suite, "python": platform.python_version(), "versions": versions(), "lora": LORA,
           "examples_per_step": EXAMPLES_PER_STEP, "data": "log-normal lengths, median 180, sigma 1.0, clipped to [16, 2048]; loss on the last 35%",
           "wall_s": round(time.time() - started, 1), "ratios": ratios(results), "results": results}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    md = [f"# Training throughput and memory ({suite})", "", f"Command: `{command}`  ", f"Versions: {doc['versions']}  ",
          f"Data: {doc['data']}; {EXAMPLES_PER_STEP} examples per optimizer step; LoRA {LORA}", "", table(results), ""]
    if doc["ratios"]:
        md += ["| model | versus | clonekit real tok/s | other real tok/s | clonekit / other | peak GB clonekit / other |", "|---|---|---|---|---|---|"]
        md += [f"| {x['model']} | {x['versus']} | {x['clonekit_tok_s']} | {x['other_tok_s']} | **{x['ratio']}x** | {x['clonekit_peak_gb']} / {x['other_peak_gb']} |"
               for x in doc["ratios"]]
        md.append("")
    pt = probe_table(results)
    if pt:
        md += ["Long-context probes (micro batch 1, one optimizer step each):", "", pt, ""]
    md += ["real tok/s counts non-padding tokens only; computed tok/s includes padding. Settings of each case are in the JSON."]
    (out_dir / f"{name}.md").write_text("\n".join(md) + "\n", encoding="utf-8")


def default_work(suite: str) -> Path:
    """/dev/shm when it can hold the 8B model (16 GB) with room to spare: faster to write and load than a disk."""
    import shutil

    shm = Path("/dev/shm")
    if suite != "smoke" and shm.exists() and shutil.disk_usage(shm).free > 40 * 2**30:
        return shm / "clonekit_bench"
    return Path("/tmp/clonekit_bench")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("torch", "transformers", "peft", "trl", "bitsandbytes", "liger-kernel", "accelerate"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=["speed", "t4", "smoke", "unsloth"], default="smoke")
    ap.add_argument("--out", default=None, help="folder for the JSON and MD (default bench/results; smoke writes nothing unless given)")
    ap.add_argument("--work", default=None, help="folder for the random-weight models (default /dev/shm or /tmp)")
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument("--tag", default="", help="suffix for the result file names")
    ap.add_argument("--seconds", type=float, default=None, help="override each case's timed window")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)
    command = "python bench/train_throughput.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    work = Path(a.work) if a.work else default_work(a.suite)
    work.mkdir(parents=True, exist_ok=True)
    cases = [c for c in suite_cases(a.suite, work) if not a.only or a.only in c["name"]]
    if a.seconds:
        cases = [{**c, "seconds": a.seconds} for c in cases]
    out_dir = Path(a.out) if a.out else (RESULTS if a.suite != "smoke" else None)
    started, results = time.time(), []
    for case in cases:
        print(f"== {case['name']}", flush=True)
        results.append(run_worker(case, timeout=600))
        r = results[-1]
        print(f"== {case['name']}: {json.dumps({k: r.get(k) for k in ('real_tokens_per_s', 'peak_gpu_gb', 'loss_step1', 'longest_ok_tokens', 'failed', 'case_wall_s')})}", flush=True)
        if out_dir:
            write(out_dir, a.suite, results, command, started, a.tag)
    print(table(results))
    for x in ratios(results):
        print(f"{x['model']}: clonekit {x['clonekit_tok_s']} vs {x['versus']} {x['other_tok_s']} real tok/s -> {x['ratio']}x "
              f"(peak {x['clonekit_peak_gb']} vs {x['other_peak_gb']} GB; loss step 1 {x['loss_step1']})")
    pt = probe_table(results)
    if pt:
        print(pt)


if __name__ == "__main__":
    main()
