"""Dataset stage: roles, filters, merging, time-gap splits, examples, leak-free split, and the whole prepare."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from clonekit.dataset import (DatasetConfig, assign_roles, build_examples, filter_messages, merge_consecutive,
                              split_by_gap, split_conversations)
from clonekit.errors import ConfigError
from clonekit.records import Conversation, Message

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)


def msg(author: str, text: str, minutes: float, kind: str = "text") -> Message:
    return Message(role="", content=text, author=author, timestamp=T0 + timedelta(minutes=minutes), kind=kind)


def chat(*messages: Message, owner: str = "Alex") -> Conversation:
    return Conversation(id="tg:1", messages=list(messages), owner=owner, participants=["Alex", "Bob"], format="telegram")


def test_config_collects_all_problems():
    with pytest.raises(ConfigError) as e:
        DatasetConfig(gap_hours=0, validation_fraction=1.5, context_turns=-1)
    assert all(k in str(e.value) for k in ("gap_hours", "validation_fraction", "context_turns"))


def test_persona_becomes_assistant_and_others_neutral_users():
    conv = assign_roles(chat(msg("Bob", "hi", 0), msg("Alex", "yo", 1), msg("Carol", "hey all", 2)), {"alex"})
    assert [(m.role, m.author) for m in conv.messages] == [("user", "User"), ("assistant", "Me"), ("user", "User 2")]
    # in a group chat the other speakers stay distinguishable, by neutral names only
    assert [m.content for m in conv.messages] == ["User: hi", "yo", "User 2: hey all"]
    assert "Bob" not in json.dumps([m.content for m in conv.messages])


def test_filters_count_every_dropped_message():
    conv = assign_roles(chat(
        msg("Bob", "", 0, kind="service"), msg("Bob", "", 1, kind="media"), msg("Bob", "fwd text", 2, kind="forward"),
        msg("Bob", "https://example.com/x", 3), msg("Bob", "x" * 5000, 4), msg("Alex", "ok!", 5), msg("Alex", "OK", 6),
        msg("Alex", "😎", 7, kind="sticker"), msg("Bob", "   ", 8), msg("Alex", "real words", 9)), {"alex"})
    skipped: Counter = Counter()
    kept = filter_messages(conv, DatasetConfig(), skipped)
    assert [m.content for m in kept.messages] == ["ok!", "😎", "real words"]
    assert skipped == {"service": 1, "media_only": 1, "forward": 1, "link_only": 1, "too_long": 1, "near_duplicate": 1, "empty": 1}
    assert sum(skipped.values()) + len(kept.messages) == len(conv.messages)


def test_merge_and_gap_split():
    conv = assign_roles(chat(msg("Bob", "hi", 0), msg("Bob", "you there?", 1), msg("Alex", "yes", 2),
                             msg("Alex", "what", 3), msg("Bob", "next day", 60 * 30)), {"alex"})
    merged = merge_consecutive(conv)
    assert [m.content for m in merged.messages] == ["hi\nyou there?", "yes\nwhat", "next day"]
    pieces = split_by_gap(merged, gap_hours=4)
    assert [len(p.messages) for p in pieces] == [2, 1] and pieces[0].id == "tg:1#0" and pieces[1].id == "tg:1#1"


def test_examples_give_each_reply_context_and_learn_it_once():
    turns = [msg("Bob" if i % 2 == 0 else "Alex", f"t{i}", i) for i in range(8)]
    conv = merge_consecutive(assign_roles(chat(*turns), {"alex"}))
    examples = build_examples(conv, DatasetConfig(context_turns=3, system_prompt="S"))
    assert len(examples) == 4  # one per persona reply
    last = examples[-1].messages
    assert last[0] == {"role": "system", "content": "S"}
    assert last[1:] == [{"role": "user", "content": "t4"}, {"role": "assistant", "content": "t5", "weight": 0},
                        {"role": "user", "content": "t6"}, {"role": "assistant", "content": "t7"}]
    trained = [m["content"] for e in examples for m in e.messages if m["role"] == "assistant" and m.get("weight", 1)]
    assert trained == ["t1", "t3", "t5", "t7"]


def test_validation_split_is_by_whole_conversation_and_stable():
    ids = [f"c{i}" for i in range(50)]
    val = split_conversations(ids, 0.2, seed=1)
    assert len(val) == 10 and val <= set(ids)
    assert len(val & split_conversations(ids + ["new"], 0.2, seed=1)) >= 9  # new data moves at most one old conversation
    assert split_conversations(ids, 0.2, seed=2) != val
    assert split_conversations(["only"], 0.5, seed=1) == set()


def test_scrubbed_probes_rebuild_the_persona_items_from_the_export(tmp_path):
    """The leakage check prompts with the redacted text before each scrubbed item; values exist only in memory."""
    from clonekit.dataset import run_prepare, scrubbed_probes

    from conftest import ROOT

    export = ROOT / "data_samples" / "telegram" / "result.json"
    run_prepare(DatasetConfig(inputs=[str(export)], out_dir=str(tmp_path), tokenizer="none"))
    probes, note = scrubbed_probes(tmp_path)
    assert probes, note
    written = "".join(p.read_text(encoding="utf-8") for p in tmp_path.iterdir() if p.is_file())
    raw = export.read_text(encoding="utf-8")
    for before, partial, value in probes:
        assert value in raw and value not in written  # a real scrubbed value, absent from every file prepare wrote
        assert value not in partial and all(value not in t["content"] for t in before)
        assert before and before[-1]["role"] == "user"
    (tmp_path / "dataset_config.json").write_text(
        (tmp_path / "dataset_config.json").read_text(encoding="utf-8").replace(str(export), "/gone/result.json"), encoding="utf-8")
    assert scrubbed_probes(tmp_path) == ([], "the exports are not here any more (/gone/result.json)")


EXPORTS = "tests/fixtures/exports/"
PER_FORMAT = [  # (export, --me, messages per sender as the fixture holds them)
    ("telegram/full_export.json", [], {"Алексей Смирнов": 8, "Marina Volkova": 2, "Дима Козлов": 1, "": 1, "Weather Bot": 1, "Someone Else": 1}),
    ("telegram_html/ChatExport_2024-03-20", ["Алексей Смирнов"], {"Алексей Смирнов": 5, "Marina Volkova": 3}),
    ("whatsapp/WhatsApp Chat with Marina Volkova.txt", ["Алексей Смирнов"], {"Алексей Смирнов": 6, "Marina Volkova": 5}),
    ("whatsapp/ios_chat.txt", ["Алексей"], {"Алексей": 5, "Марина Волкова": 4}),
    ("whatsapp/WhatsApp Chat - Дима Козлов.zip", ["Алексей Смирнов"], {"Дима Козлов": 3, "Алексей Смирнов": 2}),
    ("vk/Archive", [], {"Вы": 6, "Марина Волкова": 4, "Пиццерия Тесто": 1}),
    ("discord/dm_marina.json", ["Алексей"], {"Алексей": 5, "Marina": 3, "ReminderBot": 1}),
    ("messenger/your_facebook_activity", [], {"Алексей Смирнов": 5, "Marina Volkova": 5, "Дима Козлов": 1}),
    ("instagram/your_instagram_activity", ["alexey.s"], {"marina.v": 2, "alexey.s": 1}),
    ("datasets/openai.jsonl", [], {"user": 4, "assistant": 4, "system": 2}),
    ("datasets/sharegpt.json", [], {"user": 2, "assistant": 2, "system": 1}),
    ("datasets/alpaca.json", [], {"user": 3, "assistant": 3, "system": 1}),
    ("datasets/chat.csv", ["Алексей Смирнов"], {"Алексей Смирнов": 3, "Marina Volkova": 2}),
]


@pytest.mark.parametrize("export, me, senders", PER_FORMAT, ids=[p[0].split("/")[0] + ":" + p[0].split("/")[-1] for p in PER_FORMAT])
def test_prepare_on_every_format_counts_every_message_and_writes_valid_examples(export, me, senders, tmp_path):
    from clonekit.dataset import run_prepare

    from conftest import ROOT

    result = run_prepare(DatasetConfig(inputs=[str(ROOT / EXPORTS / export)], me=me, out_dir=str(tmp_path), tokenizer="none",
                                       validation_fraction=0.0))
    assert result.manifest["messages_by_sender"] == senders
    rows = [json.loads(line) for line in result.train_path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == result.manifest["examples"]["train"] > 0
    for row in rows:
        roles = [m["role"] for m in row["messages"] if m["role"] != "system"]
        assert roles[-1] == "assistant" and roles[0] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:]))  # turns alternate, as chat templates require
        assert all(m["content"].strip() for m in row["messages"])
    names = [n for n in senders if n not in ("user", "assistant", "system", "") and n not in me and n != "Вы"]
    assert not any(n in result.train_path.read_text(encoding="utf-8") for n in names)  # others are neutral roles


def test_prepare_mixes_one_persona_across_apps(tmp_path):
    from clonekit.dataset import run_prepare

    from conftest import ROOT

    inputs = [str(ROOT / EXPORTS / "telegram/single_chat.json"), str(ROOT / EXPORTS / "whatsapp/ios_chat.txt")]
    one = run_prepare(DatasetConfig(inputs=inputs, me=["Алексей Смирнов", "Алексей"], out_dir=str(tmp_path / "a"), tokenizer="none"))
    assert one.manifest["messages_by_sender"] == {"Алексей Смирнов": 8, "Marina Volkova": 8, "Алексей": 5, "Марина Волкова": 4}
    total = sum(one.manifest["examples"].values())
    # the same export given twice adds nothing: its conversations are recognised as duplicates and counted
    twice = run_prepare(DatasetConfig(inputs=[*inputs, inputs[0]], me=["Алексей Смирнов", "Алексей", "Алексей Смирнов"],
                                      out_dir=str(tmp_path / "b"), tokenizer="none"))
    assert sum(twice.manifest["examples"].values()) == total
    assert twice.manifest["skipped"]["duplicate_conversations"] >= 1
