"""DiscordChatExporter JSON: authors, replies, edits, bots, service types, attachments."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from clonekit.formats import _jsonstream, detect_format, parse_export

FIX = Path(__file__).parent / "fixtures" / "exports" / "discord" / "dm_marina.json"


def test_dm_export():
    assert detect_format(FIX) == "discord"
    [conv] = list(parse_export(FIX))
    assert conv.id == "discord:200" and conv.title == "marina.v"
    assert Counter(m.author for m in conv.messages) == {"Marina": 5, "Алексей": 5, "ReminderBot": 1}
    assert conv.skipped == {"bad_message": 1} and "message #11" in conv.problems[0]
    m = {x.id: x for x in conv.messages}
    msk = timezone(timedelta(hours=3))
    assert m["1"].timestamp == datetime(2024, 3, 14, 21, 0, 0, 123000, tzinfo=msk)
    assert m["10"].timestamp == datetime(2024, 3, 14, 21, 32, tzinfo=timezone.utc)
    assert m["1"].author_id == "300000000000000002"
    assert m["3"].reply_to == "1" and m["6"].edited and not m["2"].edited
    assert (m["4"].kind, m["4"].media) == ("media", "photo")
    assert (m["5"].kind, m["5"].media) == ("media", "sticker")
    assert m["7"].kind == "service" and m["9"].kind == "service"
    assert m["8"].kind == "bot"
    assert m["10"].kind == "other"  # an embed only
    assert m["12"].content == "gg\nsee you tomorrow"


def test_small_reads_give_the_same_result(monkeypatch):
    want = [(m.id, m.content) for m in next(parse_export(FIX)).messages]
    monkeypatch.setattr(_jsonstream, "CHUNK", 13)
    assert [(m.id, m.content) for m in next(parse_export(FIX)).messages] == want
