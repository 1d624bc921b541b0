"""All five stages in a row: what `clonekit demo` and the notebooks' small (CPU) mode run.

`demo_configs(out)` gives, per stage, a function building its config (sized
for a CPU in minutes); a stage's config is built only when the stage before it
has written its output, since configs check their input paths.
`run_demo(out)` runs them on data_samples/ and ends by chatting with the GGUF.

Run as: clonekit demo --out runs/demo
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import storage


def sample_export() -> Path:
    path = storage.data_samples_dir() / "telegram" / "result.json"
    assert path.exists(), f"the demo export is missing: {path}"
    return path


def demo_configs(out: str | Path, steps: int | None = None, quants: list[str] | None = None, small: bool = False) -> dict[str, Any]:
    """Config builders for every stage on CPU; `small` shrinks them further for tests and nbmake.

    >>> demo_configs("runs/demo")["train"]().max_seq_length  # doctest: +SKIP
    320
    """
    from .chat import ChatConfig
    from .dataset import DatasetConfig
    from .evaluate import EvalConfig
    from .gguf import GGUFConfig
    from .merge import MergeConfig
    from .train import TrainConfig

    out = Path(out)
    data, run, merged, gguf = out / "data", out / "clone", out / "merged", out / "gguf"
    steps = steps or (3 if small else 30)
    return {
        "prepare": lambda: DatasetConfig(inputs=[str(sample_export())], out_dir=str(data), context_turns=4, privacy_report=True),
        "train": lambda: TrainConfig(data_dir=str(data), out_dir=str(run), base_model="auto", max_steps=steps,
                             micro_batch_size=4, gradient_accumulation_steps=1, max_seq_length=320,
                             learning_rate=1e-3, warmup_ratio=0.05, logging_steps=1 if small else 5,
                             save_steps=max(1, steps // 2), save_total_limit=2, eval_steps=0, lora_r=16, lora_alpha=32),
        # generation dominates evaluation on a CPU: two sampling settings, short replies
        "eval": lambda: EvalConfig(run_dir=str(run), max_examples=6 if small else 24, max_new_tokens=24 if small else 32,
                                   tune_points=2),
        "chat": lambda: ChatConfig(run_dir=str(run), max_new_tokens=40),
        "merge": lambda: MergeConfig(run_dir=str(run), out_dir=str(merged)),
        "gguf": lambda: GGUFConfig(merged_dir=str(merged), out_dir=str(gguf), quants=quants or ["q8_0"]),
    }


def _stage(name: str) -> float:
    print(f"\n=== {name} ===", flush=True)
    return time.time()


def run_demo(out: str | Path, steps: int | None = None, quants: list[str] | None = None, small: bool = False) -> dict[str, Any]:
    """Export -> dataset -> LoRA -> eval -> merge -> GGUF -> a reply from llama.cpp."""
    from .chat import run_chat, trained_system_prompt
    from .cli import print_manifest
    from .dataset import run_prepare
    from .evaluate import run_eval
    from .gguf import run_gguf
    from .gguf_chat import chat_gguf
    from .merge import run_merge
    from .train import describe, run_train

    cfg = demo_configs(out, steps, quants, small)
    results: dict[str, Any] = {}
    t = _stage("1/5 prepare: Telegram export -> train/validation JSONL")
    results["prepare"] = run_prepare(cfg["prepare"]())
    print_manifest(results["prepare"].manifest, results["prepare"].out_dir)
    print(f"({time.time() - t:.0f} s)")
    t = _stage("2/5 train: LoRA on the embedded SmolLM2-135M (CPU)")
    results["train"] = run_train(cfg["train"]())
    print(describe(results["train"]), f"({time.time() - t:.0f} s)")
    t = _stage("3/5 chat and evaluate")
    run_chat(cfg["chat"](), prompts=["привет! как дела?", "what are you doing tonight?"])
    results["eval"] = run_eval(cfg["eval"]())
    print(results["eval"].summary, f"({time.time() - t:.0f} s)")
    t = _stage("4/5 merge the adapter (CPU, shard by shard)")
    results["merge"] = run_merge(cfg["merge"]())
    print(results["merge"], f"({time.time() - t:.0f} s)")
    t = _stage("5/5 GGUF for llama.cpp / Ollama")
    gguf_config = cfg["gguf"]()
    results["gguf"] = run_gguf(gguf_config)
    print(results["gguf"], f"({time.time() - t:.0f} s)")
    path = results["gguf"].files[gguf_config.quants[0]]
    msgs = [{"role": "system", "content": trained_system_prompt(results["train"].run_dir)}, {"role": "user", "content": "привет! что делаешь?"}]
    reply = chat_gguf(str(path), msgs, max_tokens=40)
    print(f"llama.cpp ({Path(path).name}) replies: {reply!r}")
    results["gguf_reply"] = reply
    return results
