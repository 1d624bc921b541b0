"""Chat: replies stop at the end-of-turn token, history is windowed, a run folder (base + adapter) answers."""

from __future__ import annotations

import pytest

from conftest import requires_torch

pytestmark = requires_torch


def test_history_opens_with_a_user_turn_and_keeps_the_system_prompt():
    from clonekit.chat import build_history

    turns = [{"role": r, "content": str(i)} for i, r in enumerate(["user", "assistant"] * 3)] + [{"role": "user", "content": "6"}]
    h = build_history("S", turns, keep=4)
    assert h[0] == {"role": "system", "content": "S"} and h[1] == {"role": "user", "content": "4"} and len(h) == 4
    assert build_history("", turns, keep=0) == [{"role": "user", "content": "6"}]


def test_config_rejects_bad_sampling():
    from clonekit.chat import ChatConfig
    from clonekit.errors import ConfigError

    with pytest.raises(ConfigError, match="top_p"):
        ChatConfig(top_p=0)


@pytest.mark.slow
def test_reply_stops_at_end_of_turn(embedded_model_dir):
    from clonekit.chat import ChatConfig, generate_replies, load_clone

    model, tok = load_clone(embedded_model_dir)  # a plain model folder works as a "clone"
    chats = [[{"role": "user", "content": "What is the capital of France?"}], [{"role": "user", "content": "Say hi."}]]
    config = ChatConfig(temperature=0, max_new_tokens=40)
    replies = generate_replies(model, tok, chats, config)
    assert "Paris" in replies[0]
    for r in replies:
        assert r and "<|im_start|>" not in r and "<|im_end|>" not in r and "\nuser" not in r
        assert len(tok(r)["input_ids"]) < config.max_new_tokens  # ended by the end-of-turn token, not the limit


@pytest.mark.slow
def test_run_folder_answers_a_conversation(tiny_dataset, tmp_path):
    from clonekit.chat import ChatConfig, run_chat
    from clonekit.train import TrainConfig, run_train

    run = tmp_path / "run"
    run_train(TrainConfig(data_dir=str(tiny_dataset), out_dir=str(run), max_steps=1, micro_batch_size=2,
                          gradient_accumulation_steps=1, max_seq_length=128, eval_steps=0))
    shown: list[str] = []
    replies = run_chat(ChatConfig(run_dir=str(run), temperature=0, max_new_tokens=8), prompts=["привет", "/reset", "ok?"], write=shown.append)
    assert len(replies) == 2 and "(history cleared)" in shown and all(s.startswith(("clone> ", "(")) for s in shown)
