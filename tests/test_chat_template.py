"""Loss masks from chat templates: only persona turns, end-of-turn included, for four template families."""

from __future__ import annotations

import pytest

from conftest import FIXTURES, requires_torch

pytestmark = requires_torch

CHAT = [
    {"role": "system", "content": "Reply in your usual style."},
    {"role": "user", "content": "привет! как дела?"},
    {"role": "assistant", "content": "норм 😎 а ты", "weight": 0},
    {"role": "user", "content": "what are you up to?"},
    {"role": "assistant", "content": "ничего, lol"},
]

# family -> (template file, special tokens to add, bos, eos/end-of-turn token, text that ends each turn)
FAMILIES = {
    "chatml": (None, [], None, "<|im_end|>", "<|im_end|>\n"),
    "llama3": ("llama3.jinja", ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "gemma": ("gemma.jinja", ["<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<end_of_turn>", "<end_of_turn>\n"),
    "mistral": ("mistral.jinja", ["<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", "</s>"),
}


def family_tokenizer(model_dir: str, family: str):
    from transformers import AutoTokenizer

    from clonekit.chat_template import ensure_pad_token

    template, specials, bos, eos, _ = FAMILIES[family]
    tok = AutoTokenizer.from_pretrained(model_dir)
    if template:
        tok.add_special_tokens({"additional_special_tokens": specials})
        tok.bos_token, tok.eos_token = bos, eos
        tok.chat_template = (FIXTURES / "templates" / template).read_text(encoding="utf-8")
    ensure_pad_token(tok)
    return tok


@pytest.mark.parametrize("family", list(FAMILIES))
def test_mask_covers_exactly_the_trained_reply_and_its_end_of_turn(embedded_model_dir, family):
    from clonekit.chat_template import end_of_turn_ids, render_conversation

    tok = family_tokenizer(embedded_model_dir, family)
    ids, mask = render_conversation(tok, CHAT)
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    trained = tok.decode([t for t, m in zip(ids, mask) if m])
    ending = FAMILIES[family][4]
    # the weight-0 reply is context only; the last reply is learned together with its end-of-turn token
    assert trained == "ничего, lol" + ending, trained
    eot = tok.convert_tokens_to_ids(FAMILIES[family][3])
    assert eot in end_of_turn_ids(tok)
    assert any(t == eot and m for t, m in zip(ids, mask)), "end-of-turn token must carry loss"
    assert tok.pad_token_id not in end_of_turn_ids(tok), "pad must differ from every end-of-turn token"


def test_every_reply_is_trained_without_weights(embedded_tokenizer):
    from clonekit.chat_template import render_conversation

    chat = [{k: v for k, v in m.items() if k != "weight"} for m in CHAT]
    ids, mask = render_conversation(embedded_tokenizer, chat)
    assert embedded_tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "норм 😎 а ты<|im_end|>\nничего, lol<|im_end|>\n"


def test_train_on_inputs_learns_every_token(embedded_tokenizer):
    from clonekit.chat_template import render_conversation

    ids, mask = render_conversation(embedded_tokenizer, CHAT, train_on_inputs=True)
    assert mask == [1] * len(ids)


def test_pad_token_is_never_the_end_of_turn_token(embedded_model_dir):
    from transformers import AutoTokenizer

    from clonekit.chat_template import ensure_pad_token

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tok.pad_token = tok.eos_token  # the common tutorial default that stops models from learning to stop
    assert ensure_pad_token(tok) is False
    assert tok.pad_token == "<|endoftext|>"
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    for t in ("<|endoftext|>", "<unk>"):
        if t in tok.get_vocab():
            tok.eos_token = t  # make every candidate an end-of-turn token, so a new one must be added
    tok.chat_template = (tok.chat_template or "") + "<|endoftext|>"
    tok.pad_token = tok.eos_token
    assert ensure_pad_token(tok) is True
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == len(tok) - 1
