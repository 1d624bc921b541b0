"""Chat templates: turn a conversation into token ids and a loss mask, for any template.

The loss is taken only on the persona's (assistant) turns, *including* the
end-of-turn token that closes each of them: a model that never sees that token
in its loss never learns to stop. The mask is found from the template itself,
not from hard-coded markers, so ChatML (Qwen, SmolLM), Llama-3, Gemma,
Mistral and others all work:

    prefix = template(messages[:i], add_generation_prompt=True)   # up to "assistant:\n"
    upto   = template(messages[:i+1])                             # ... + reply + end-of-turn
    the assistant span is upto[len(prefix):]

and character spans are mapped onto tokens with the tokenizer's offsets.

    >>> ids, mask = render_conversation(tok, [{"role": "user", "content": "hi"},
    ...                                      {"role": "assistant", "content": "hey"}])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

from .errors import ClonekitError

# Tokens that end a turn in common templates (whichever the vocabulary has).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
DEFAULT_SYSTEM_PROMPT = "You are chatting with a friend. Reply in your usual style."
PAD_CANDIDATES = ("<|pad|>", "<pad>", "<|finetune_right_pad_id|>", "<|endoftext|>", "<unk>", "<|fim_pad|>")


class TemplateError(ClonekitError):
    """The tokenizer's chat template cannot render these messages."""


def end_of_turn_ids(tokenizer) -> list[int]:
    """Ids that end an assistant turn: the eos plus the template's end-of-turn markers present in the vocabulary."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    template = getattr(tokenizer, "chat_template", None) or ""
    for tok in END_OF_TURN_TOKENS:
        if tok in vocab and tok in template and vocab[tok] not in ids:
            ids.append(int(vocab[tok]))
    return ids


def ensure_pad_token(tokenizer) -> bool:
    """Give the tokenizer a pad token that is *not* an end-of-turn token.

    Padding with the end-of-turn token (a common default) masks that token out
    of the loss, and the model never learns to stop. Prefers a pad-like token
    already in the vocabulary; otherwise adds `<|pad|>` and returns True (the
    caller must then resize the model's embeddings).
    """
    enders = set(end_of_turn_ids(tokenizer))
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in enders:
        return False
    vocab = tokenizer.get_vocab()
    for cand in PAD_CANDIDATES:
        if cand in vocab and vocab[cand] not in enders:
            tokenizer.pad_token = cand
            return False
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return True


def fold_system(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put a system message into the first user turn, for templates with no system role (Mistral v0.1)."""
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0]["role"] == "system":
        system = msgs.pop(0)["content"]
        if msgs and msgs[0]["role"] == "user":
            msgs[0]["content"] = f"{system}\n\n{msgs[0]['content']}"
    return msgs


def _render(tokenizer, messages: Sequence[dict[str, Any]], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja raises its own exceptions for bad role orders
        if messages and messages[0]["role"] == "system" and len(messages) > 1:
            return _render(tokenizer, fold_system(messages), add_generation_prompt)
        raise TemplateError(
            f"The chat template of this tokenizer cannot render these messages ({e}). "
            "Check the roles alternate user/assistant, or pick a base model with a chat template."
        ) from e


def assistant_char_spans(tokenizer, messages: Sequence[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the [start, end) character span of each assistant turn (reply + end-of-turn).

    Assistant turns marked `"weight": 0` (context already learned elsewhere) get no span.
    """
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if i and full.startswith(upto) and upto.startswith(prefix) and len(prefix) >= cursor:
            if m.get("weight", 1):
                spans.append((len(prefix), len(upto)))
            cursor = len(upto)
            continue
        # Templates that rewrite earlier turns (e.g. dropping reasoning) break the prefix property:
        # find the reply text itself and extend the span over the end-of-turn marker after it.
        start = full.find(m["content"], cursor)
        if start < 0:
            raise TemplateError(f"Could not find assistant turn {i} in the rendered chat template; this template is not supported for masking.")
        end = start + len(m["content"])
        enders = [t for t in END_OF_TURN_TOKENS if t in full[end:]]
        if enders:
            nxt = min(full.find(t, end) + len(t) for t in enders)
            end = nxt
        if m.get("weight", 1):
            spans.append((start, end))
        cursor = end
    return full, spans


def render_conversation(
    tokenizer,
    messages: Sequence[dict[str, str]],
    train_on_inputs: bool = False,
) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat and a 0/1 mask of the tokens that carry loss.

    With `train_on_inputs=True` (the articles' "Train on Inputs" checkbox) every
    token carries loss, not only the assistant's.
    """
    full, spans = assistant_char_spans(tokenizer, messages)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    if train_on_inputs:
        return ids, [1] * len(ids)
    offsets = enc["offset_mapping"]
    mask = [0] * len(ids)
    s = 0
    for j, (a, b) in enumerate(offsets):
        while s < len(spans) and spans[s][1] <= a:
            s += 1
        if s == len(spans):
            break
        lo, hi = spans[s]
        if b > lo and a < hi:
            mask[j] = 1
    return ids, mask


def render_prompt(tokenizer, messages: Sequence[dict[str, Any]]) -> list[int]:
    """Token ids for generation: the chat so far plus the assistant header."""
    text = _render(tokenizer, messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
