"""Facebook Messenger and Instagram JSON: mojibake fixed, threads, owner, kinds."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from clonekit.formats import detect_format, parse_export
from clonekit.formats._common import fix_mojibake

FIX = Path(__file__).parent / "fixtures" / "exports"
THREAD = FIX / "messenger" / "your_facebook_activity" / "messages" / "inbox" / "marinavolkova_10001"


def test_fixture_has_latin1_escapes():
    raw = (THREAD / "message_2.json").read_text(encoding="ascii")
    assert "\\u00d0\\u009f\\u00d1\\u0080\\u00d0\\u00b8" in raw  # "При" as Facebook writes it


def test_messenger_threads():
    assert detect_format(FIX / "messenger") == "messenger"
    dima, marina = list(parse_export(FIX / "messenger"))
    assert marina.id == "messenger:marinavolkova_10001" and marina.title == "Marina Volkova"
    assert marina.owner == "Алексей Смирнов" == dima.owner  # the one name in every thread
    assert marina.participants == ["Marina Volkova", "Алексей Смирнов"]
    assert Counter(m.author for m in marina.messages) == {"Marina Volkova": 7, "Алексей Смирнов": 4}
    assert marina.skipped == {"bad_message": 1}
    ts = [m.timestamp for m in marina.messages]
    assert ts == sorted(ts) and ts[0] == datetime(2024, 3, 14, 18, 0, 10, tzinfo=timezone.utc)
    got = [(m.kind, m.content, m.media) for m in marina.messages]
    assert got == [
        ("service", "Marina Volkova started a video call.", ""),
        ("text", "Привет, Лёша!\nКак ты?", ""),
        ("text", "Привет! Как дела? Всё хорошо 😊", ""),
        ("text", "Созвонимся?", ""),
        ("media", "", "sticker"),
        ("media", "", "photo"),
        ("media", "", "share"),
        ("text", "Смотри, какая статья", "share"),
        ("deleted", "", ""),
        ("service", "Marina Volkova reacted ❤ to your message ", ""),
        ("text", "спокойной)", ""),
    ]
    assert [m.content for m in dima.messages] == ["Ну что, в поход?", "го в субботу"]


def test_single_file_and_instagram():
    [one] = list(parse_export(THREAD / "message_1.json"))
    assert len(one.messages) == 5 and one.owner == ""  # one thread alone does not say who the owner is
    assert detect_format(FIX / "instagram") == "instagram"
    [ig] = list(parse_export(FIX / "instagram"))
    assert ig.format == "instagram" and ig.id == "instagram:marina_v_123"
    assert [(m.author, m.kind, m.content) for m in ig.messages] == [
        ("marina.v", "text", "Смотри, что нашла 🙈"), ("marina.v", "media", ""),
        ("alexey.s", "text", "ахах 😂 жиза"), ("marina.v", "service", "Liked a message")]


def test_fix_mojibake():
    assert fix_mojibake("Ã°Â\x9f\x98Â\x8a") == "Ã°Â\x9f\x98Â\x8a"  # not valid UTF-8 underneath: unchanged
    assert fix_mojibake("ð\x9f\x98\x8a") == "😊"
    assert fix_mojibake("already fine, привет") == "already fine, привет"


def test_placeholders_are_media_not_words():
    from clonekit.formats.messenger import to_message

    m = to_message({"sender_name": "Marina", "content": "Marina sent an attachment.", "files": [{"uri": "x"}]}, 0, "1")
    assert (m.kind, m.content, m.media) == ("media", "", "file")
    m = to_message({"sender_name": "Marina", "content": "You sent a photo."}, 0, "2")
    assert (m.kind, m.content) == ("media", "")
