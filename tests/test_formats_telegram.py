"""Telegram Desktop JSON: single chat, full export, streaming, errors, the demo sample."""

from __future__ import annotations

import gc
import importlib.util
import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from clonekit.errors import ExportFormatError, InputError
from clonekit.formats import _common, _jsonstream, detect_format, parse_export, telegram
from clonekit.formats.telegram import join_text, read_chat_meta

FIX = Path(__file__).parent / "fixtures" / "exports" / "telegram"
SAMPLE = Path(__file__).parent.parent / "data_samples" / "telegram" / "result.json"
UTC = timezone.utc


def by_id(conv):
    return {m.id: m for m in conv.messages}


def test_single_chat_counts_owner_and_skips():
    [conv] = list(parse_export(FIX / "single_chat.json"))
    assert detect_format(FIX / "single_chat.json") == "telegram"
    assert conv.id == "telegram:1002" and conv.title == "Marina Volkova" and conv.format == "telegram"
    assert Counter(m.author for m in conv.messages) == {"Marina Volkova": 9, "Алексей Смирнов": 9}
    assert len(conv.messages) == 18
    # a personal chat's id is the peer's: the other sender is the export owner
    assert (conv.owner, conv.owner_id) == ("Алексей Смирнов", "user1001")
    assert conv.participants == ["Marina Volkova", "Алексей Смирнов"]
    assert conv.skipped == {"bad_message": 1}
    assert "message #17" in conv.problems[0] and "KeyError" in conv.problems[0]
    assert all(m.role == "" for m in conv.messages)


def test_single_chat_text_kinds_and_fields():
    [conv] = list(parse_export(FIX / "single_chat.json"))
    m = by_id(conv)
    assert m["1"].timestamp == datetime(2024, 3, 14, 18, 0, 0, tzinfo=UTC)
    assert m["1"].author_id == "user1002" and m["1"].kind == "text"
    assert m["3"].reply_to == "1" and m["2"].reply_to == ""
    assert m["4"].content == "Смотри какая новость: тут!"  # entity objects joined
    assert m["16"].content == "@marina_v смотри ls -la"
    assert m["13"].content == "Multi-line message:\nline two\nline three" and m["13"].reply_to == "10"
    assert (m["5"].kind, m["5"].content, m["5"].media) == ("media", "", "photo")
    assert (m["6"].kind, m["6"].content, m["6"].media) == ("text", "Закат с балкона 😍", "photo")  # a caption
    assert (m["7"].kind, m["7"].content, m["7"].media) == ("sticker", "👍", "sticker")
    assert (m["8"].kind, m["8"].media) == ("media", "voice_message")
    assert (m["14"].kind, m["14"].media) == ("media", "video_file")
    assert (m["15"].kind, m["15"].media) == ("media", "poll")
    assert (m["9"].kind, m["9"].content) == ("forward", "Бесплатный вход в музеи в субботу!")
    assert m["10"].edited and not m["2"].edited
    assert (m["11"].kind, m["11"].author, m["11"].content) == ("service", "Marina Volkova", "phone_call")
    assert m["12"].kind == "service"
    # an old export without date_unixtime: the local "date", naive
    assert m["18"].timestamp == datetime(2024, 3, 14, 21, 15, 0) and m["18"].timestamp.tzinfo is None


def test_full_export_all_chats():
    convs = list(parse_export(FIX / "full_export.json"))
    assert [c.id for c in convs] == ["telegram:1002", "telegram:1001", "telegram:4001", "telegram:777",
                                     "telegram:5005"]  # chats, then left_chats
    assert [c.title for c in convs] == ["Marina Volkova", "Saved Messages", "Поход", "Weather Bot", "Old Group"]
    assert {(c.owner, c.owner_id) for c in convs} == {("Алексей Смирнов", "user1001")}
    assert [len(c.messages) for c in convs] == [3, 2, 7, 2, 2]
    personal, saved, group, bot, left = convs
    assert Counter(m.author for m in personal.messages) == {"Marina Volkova": 1, "Алексей Смирнов": 2}
    assert [m.kind for m in saved.messages] == ["text", "forward"]
    assert set(group.participants) == {"Дима Козлов", "Marina Volkova", "Алексей Смирнов"}
    gm = by_id(group)
    assert gm["306"].author == "" and gm["306"].author_id == "user999"  # deleted account
    assert gm["307"].kind == "bot" and gm["307"].media == "animation"  # sent via @gif
    assert [m.kind for m in bot.messages] == ["text", "bot"]
    assert left.messages[1].content == "пока)"


def _dump(path):
    return [(c.id, c.title, [(m.id, m.content, m.kind, m.timestamp) for m in c.messages]) for c in parse_export(path)]


@pytest.mark.parametrize("name", ["full_export.json", "single_chat.json"])  # compact / pretty-printed
def test_streaming_is_independent_of_chunk_boundaries(monkeypatch, name):
    want = _dump(FIX / name)
    for chunk, batch in ((7, 64), (61, 300), (997, 1 << 19)):  # keys, headers and messages straddle reads
        monkeypatch.setattr(_jsonstream, "CHUNK", chunk)
        monkeypatch.setattr(_jsonstream, "BATCH", batch)
        monkeypatch.setattr(_jsonstream, "HEADER", 300)  # the window slides along the file
        assert _dump(FIX / name) == want, (chunk, batch)


def test_any_json_layout_gives_the_same_messages(tmp_path, monkeypatch):
    data = json.loads((FIX / "single_chat.json").read_text(encoding="utf-8"))
    want = _dump(FIX / "single_chat.json")
    one_per_line = json.dumps({k: v for k, v in data.items() if k != "messages"})[:-1] + ', "messages": [\n' + \
        ",\n".join(json.dumps(m, ensure_ascii=False) for m in data["messages"]) + "\n]}"
    pretty = json.dumps(data, ensure_ascii=False, indent=2)
    mixed = pretty[: pretty.index('"id": 12')] + pretty[pretty.index('"id": 12'):].replace("\n", "")  # layout changes
    monkeypatch.setattr(_jsonstream, "BATCH", 100)
    for i, text in enumerate([json.dumps(data), json.dumps(data, indent=4), one_per_line, mixed,
                              pretty.replace("\n", "\r\n")]):
        p = tmp_path / f"layout{i}.json"
        p.write_text(text, encoding="utf-8")
        assert _dump(p) == [(want[0][0], want[0][1], want[0][2])], i


def test_long_chat_comes_in_pieces_cut_at_pauses(monkeypatch):
    whole = next(parse_export(SAMPLE))
    monkeypatch.setattr(_common, "PIECE_MESSAGES", 40)
    monkeypatch.setattr(telegram, "BATCH", 7)  # pieces are cut while the chat is still being read
    pieces = [c for c in parse_export(SAMPLE) if c.id.startswith("telegram:1002")]
    assert len(pieces) > 5
    assert pieces[0].id == "telegram:1002" and pieces[1].id == "telegram:1002#2"
    assert [m.id for p in pieces for m in p.messages] == [m.id for m in whole.messages]
    for a, b in zip(pieces, pieces[1:]):
        gap = (b.messages[0].timestamp - a.messages[-1].timestamp).total_seconds()
        assert gap >= 3600 or len(a.messages) >= 80
        assert a.owner == "Алексей Смирнов"
    assert gc.isenabled()  # the parser hands the GC back as it found it


def test_errors_name_the_byte_offset(tmp_path):
    size = (FIX / "truncated.json").stat().st_size
    with pytest.raises(ExportFormatError, match=f"truncated JSON, it ends at byte offset {size}"):
        list(parse_export(FIX / "truncated.json"))
    with pytest.raises(ExportFormatError, match=r"invalid JSON at byte offset 6873 \(line 331\)"):
        list(parse_export(FIX / "broken.json"))
    with pytest.raises(ExportFormatError, match=r"not valid UTF-8 at byte offset 256 \(line 13\)"):
        list(parse_export(FIX / "cp1251.json"))
    empty = tmp_path / "result.json"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        parse_export(empty)
    with pytest.raises(InputError, match="does not exist"):
        parse_export(tmp_path / "missing.json")
    nochats = tmp_path / "nochats.json"
    nochats.write_text(json.dumps({"about": "", "personal_information": {"user_id": 1}, "chats": {"list": []}}))
    with pytest.raises(ExportFormatError, match=r"No Telegram messages found.*Export the chat as JSON \(not HTML\)"):
        list(parse_export(nochats))


def test_helpers():
    assert join_text(["a ", {"type": "bold", "text": "b"}, {"type": "custom_emoji", "text": "🙂",
                                                             "document_id": "x"}]) == "a b🙂"
    assert join_text("plain") == "plain" and join_text([]) == ""
    header = b'}, {"name": "A \\"B\\" C", "type": "private_group", "id": -123, '
    assert read_chat_meta(header) == {"name": 'A "B" C', "type": "private_group", "id": -123}


def test_demo_sample_is_the_documented_export():
    convs = list(parse_export(SAMPLE))
    assert [c.title for c in convs] == ["Marina Volkova", "Поход в выходные"]
    personal, group = convs
    assert personal.owner == "Алексей Смирнов" and personal.owner_id == "user1001"
    assert 400 <= len(personal.messages) + len(group.messages) <= 600
    assert {m.author for m in group.messages} == {"Дима Козлов", "Marina Volkova", "Алексей Смирнов"}
    kinds = Counter(m.kind for c in convs for m in c.messages)
    assert kinds["sticker"] >= 5 and kinds["service"] >= 2 and kinds["forward"] == 2 and kinds["media"] >= 2
    assert sum(m.edited for m in personal.messages) == 2 and sum(bool(m.reply_to) for m in personal.messages) > 10
    days = {m.timestamp.date() for m in personal.messages}
    assert 6 <= len(days) <= 10
    text = "\n".join(m.content for m in personal.messages)
    assert "+7 916 123-45-67" in text and "marina.volkova.demo@example.com" in text
    owner_text = [m.content for m in personal.messages if m.author_id == "user1001" and m.kind == "text"]
    assert sum(t == t.lower() for t in owner_text) / len(owner_text) > 0.95  # his style: lowercase
    assert SAMPLE.stat().st_size < 300_000


def test_demo_sample_regenerates_identically():
    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE.parent.parent / "make_sample_telegram.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = mod.build()
    assert json.dumps(data, ensure_ascii=False, indent=1) + "\n" == SAMPLE.read_text(encoding="utf-8")
    card = mod.FAKE_CARD.replace(" ", "")
    digits = [int(c) for c in card][::-1]
    assert sum(d if i % 2 == 0 else (2 * d - 9 if 2 * d > 9 else 2 * d) for i, d in enumerate(digits)) % 10 == 0
