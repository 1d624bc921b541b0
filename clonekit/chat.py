"""Stage 3a: talk to the clone (base model + LoRA adapter, or a GGUF file).

Replies are generated with the same chat template and system prompt the
clone was trained with, and stop at the template's end-of-turn token.
Generation settings tuned by `clonekit eval` (RUN/generation.json) are used
when present.

Run as: clonekit chat runs/clone            (interactive; /reset, /quit)
        clonekit chat runs/clone -p "привет, как ты?"
        clonekit chat runs/gguf/clone-q8_0.gguf -p "hi"
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import storage
from .config import check, opt
from .errors import InputError


@dataclass
class ChatConfig:
    run_dir: str = opt("runs/clone", "training run folder (with adapter/), a merged model folder, or a .gguf file")
    base_model: str = opt("", "override the base model the adapter was trained on ('' = the one recorded in the run)")
    system_prompt: str | None = opt(None, "system message (default: the one the clone was trained with)")
    max_new_tokens: int = opt(96, "longest reply in tokens")
    temperature: float = opt(0.7, "sampling temperature (0 = greedy)")
    top_p: float = opt(0.9, "nucleus sampling: keep the smallest token set with this much probability")
    repetition_penalty: float = opt(1.1, "penalty for repeating tokens (1 = none); stops loops")
    history_turns: int = opt(6, "how many earlier turns the clone sees")
    seed: int = opt(0, "sampling seed, for repeatable replies")

    def __post_init__(self):
        p = []
        if self.max_new_tokens < 1:
            p.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            p.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            p.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            p.append(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        check(p, "ChatConfig")


GENERATION_KEYS = ("temperature", "top_p", "repetition_penalty", "max_new_tokens")


def tuned_generation(run_dir: str | Path) -> dict[str, Any]:
    """Generation settings `clonekit eval` stored beside the run, if any."""
    path = Path(run_dir) / "generation.json"
    return {k: v for k, v in json.loads(path.read_text()).items() if k in GENERATION_KEYS} if path.exists() else {}


def trained_system_prompt(run_dir: str | Path) -> str:
    """The system prompt the dataset was built with (so chat matches training)."""
    path = storage.run_paths(run_dir).dataset_config
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8")).get("system_prompt", "")
    from .chat_template import DEFAULT_SYSTEM_PROMPT

    return DEFAULT_SYSTEM_PROMPT


def load_clone(run_dir: str | Path, base_model: str = ""):
    """(model, tokenizer) for a run folder (base + adapter) or a merged HF folder; eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .chat_template import ensure_pad_token
    from .models import detect_device, resolve_base_model

    run = Path(run_dir)
    adapter = storage.run_paths(run).adapter
    device = detect_device()
    dtype = torch.float16 if device == "cuda" else torch.float32
    if (run / "config.json").exists():  # a merged model folder
        tok = AutoTokenizer.from_pretrained(run)
        ensure_pad_token(tok)
        model = AutoModelForCausalLM.from_pretrained(run, dtype=dtype).to(device)
        return model.eval(), tok
    if not (adapter / "adapter_config.json").exists():
        raise InputError(f"{run} has no adapter/ (and is not a model folder). Train first: clonekit train DATA --out {run}")
    info = storage.read_json(adapter / "clonekit_base.json") if (adapter / "clonekit_base.json").exists() else {}
    base = resolve_base_model(base_model or info.get("base_model_arg") or info.get("base_model") or "auto", device=device)
    return load_base_with_adapter(base, adapter, dtype, device)


def load_base_with_adapter(base: str, adapter: Path, dtype, device: str):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(adapter)  # saved with the run: same pad token as in training
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    if model.get_input_embeddings().weight.shape[0] < len(tok):
        model.resize_token_embeddings(len(tok))
    model = PeftModel.from_pretrained(model, adapter).to(device)
    return model.eval(), tok


def generate_replies(model, tokenizer, chats: list[list[dict[str, str]]], config: ChatConfig) -> list[str]:
    """One reply per chat (each a list of messages ending with the other person's turn), batched."""
    import torch

    from .chat_template import end_of_turn_ids, render_prompt

    prompts = [render_prompt(tokenizer, c) for c in chats]
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # left padding for generation
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    sample = config.temperature > 0
    torch.manual_seed(config.seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
            max_new_tokens=config.max_new_tokens, do_sample=sample,
            temperature=config.temperature if sample else None, top_p=config.top_p if sample else None, top_k=None,
            repetition_penalty=config.repetition_penalty, eos_token_id=end_of_turn_ids(tokenizer), pad_token_id=pad,
        )
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def generate_reply(model, tokenizer, history: list[dict[str, str]], config: ChatConfig) -> str:
    """The clone's next reply to `history` (which ends with the other person's message)."""
    return generate_replies(model, tokenizer, [history], config)[0]


def build_history(system_prompt: str, turns: list[dict[str, str]], keep: int) -> list[dict[str, str]]:
    """The messages the clone sees: system prompt + the last `keep` turns, opening with a user turn."""
    recent = turns[-keep:] if keep else turns[-1:]
    while recent and recent[0]["role"] != "user":
        recent = recent[1:]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + recent


def run_chat(config: ChatConfig, prompts: list[str] | None = None, read: Callable[[str], str] = input,
             write: Callable[[str], None] = print) -> list[str]:
    """Answer `prompts` one after another (one conversation), or chat interactively when None."""
    path = Path(config.run_dir)
    if not path.exists():
        raise InputError(f"{path} does not exist. Pass a run folder (from `clonekit train`), a merged folder or a .gguf file.")
    if path.suffix == ".gguf":
        from .gguf_chat import chat_gguf

        system = config.system_prompt if config.system_prompt is not None else trained_system_prompt(path.parent)
        respond = lambda msgs: chat_gguf(str(path), msgs, max_tokens=config.max_new_tokens, temperature=config.temperature,
                                         top_p=config.top_p, repeat_penalty=config.repetition_penalty)
    else:
        tuned = tuned_generation(path)
        if tuned:
            config = ChatConfig(**{**config.__dict__, **tuned})
        system = config.system_prompt if config.system_prompt is not None else trained_system_prompt(path)
        model, tok = load_clone(path, config.base_model)
        respond = lambda msgs: generate_reply(model, tok, msgs, config)
    turns: list[dict[str, str]] = []
    replies = []
    interactive = prompts is None
    queue = iter(prompts or [])
    while True:
        try:
            text = read("you> ") if interactive else next(queue)
        except (EOFError, StopIteration, KeyboardInterrupt):
            break
        if text.strip() in ("/quit", "/exit"):
            break
        if text.strip() == "/reset":
            turns = []
            write("(history cleared)")
            continue
        turns.append({"role": "user", "content": text})
        reply = respond(build_history(system, turns, config.history_turns))
        turns.append({"role": "assistant", "content": reply})
        replies.append(reply)
        write(f"clone> {reply}")
    return replies
