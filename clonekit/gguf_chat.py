"""Chat with a GGUF through llama.cpp (llama-cpp-python), using the chat template stored in the GGUF.

`chat_gguf` returns one reply; `generate_gguf` also says why generation stopped and how
many tokens it took; the last GGUF opened by path stays loaded between turns.
`clonekit chat runs/me/gguf/clone-q8_0.gguf` uses it (also importable as
`from clonekit.gguf_chat import chat_gguf`).

Run as:
    python -c "from clonekit.gguf_chat import chat_gguf; print(chat_gguf('runs/me/gguf/clone-q8_0.gguf', [{'role': 'user', 'content': 'hi'}]))"
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .errors import InputError, require
from .gguf_modelfile import TEMPLATES, detect_chat_family


def load_gguf(path: str | Path, n_ctx: int = 2048, threads: int = 0, logits_all: bool = False, lora_path: str | Path | None = None, **kwargs: Any):
    """Open a GGUF with llama.cpp (llama_cpp.Llama), quietly."""
    from .gguf import _threads

    llama_cpp = require("llama_cpp", "gguf")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist. Run `clonekit gguf` first or check the path.")
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=_threads(threads), n_threads_batch=_threads(threads),
                           logits_all=logits_all, lora_path=str(lora_path) if lora_path else None, verbose=False, **kwargs)


def _open_cached(path: str | Path, n_ctx: int):
    """The last GGUF opened by path stays loaded, so a chat loop does not reload it every turn."""
    path = Path(path)
    if not path.exists():
        return load_gguf(path, n_ctx=n_ctx)  # raises the InputError that says what to do
    return _load_cached(str(path.resolve()), path.stat().st_mtime_ns, n_ctx)


@functools.lru_cache(maxsize=1)
def _load_cached(path: str, mtime_ns: int, n_ctx: int):
    return load_gguf(path, n_ctx=n_ctx)


def generate_gguf(model, messages: list[dict[str, str]], max_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.9,
                  repeat_penalty: float = 1.1, seed: int = 0, stop: list[str] | None = None, n_ctx: int = 2048) -> dict[str, Any]:
    """One reply through the GGUF's own chat template; {"text", "finish_reason", "tokens"}.

    `model` is a path or a loaded Llama. Generation ends at the model's end-of-turn
    token (llama.cpp's end-of-generation set); `stop` adds strings (default: the turn
    markers of the template's family, a guard against run-on into the next turn).
    """
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise InputError(f"messages[{i}] = {m!r}: each message needs role system/user/assistant and a string content.")
    llm = _open_cached(model, n_ctx) if isinstance(model, (str, Path)) else model
    if stop is None:
        family = detect_chat_family(llm.metadata.get("tokenizer.chat_template", ""))
        stop = list(TEMPLATES[family][1]) if family else []
    out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                     repeat_penalty=repeat_penalty, seed=seed, stop=stop or None)
    choice = out["choices"][0]
    return {"text": (choice["message"]["content"] or "").strip(), "finish_reason": choice["finish_reason"],
            "tokens": out["usage"]["completion_tokens"]}


def chat_gguf(model, messages: list[dict[str, str]], max_tokens: int = 256, **kwargs: Any) -> str:
    """The reply text only; see `generate_gguf`.

    >>> chat_gguf("clone-q8_0.gguf", [{"role": "user", "content": "hi"}])  # doctest: +SKIP
    'hey! what's up?'
    """
    return generate_gguf(model, messages, max_tokens=max_tokens, **kwargs)["text"]
