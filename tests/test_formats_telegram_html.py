"""Telegram Desktop HTML export (the lower-priority path): pages, joined messages, media."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from clonekit.formats import detect_format, parse_export
from clonekit.formats.telegram_html import parse_html_date

FIX = Path(__file__).parent / "fixtures" / "exports" / "telegram_html" / "ChatExport_2024-03-20"


def test_html_export_folder():
    assert detect_format(FIX) == "telegram_html"
    assert detect_format(FIX / "messages2.html") == "telegram_html"
    [conv] = list(parse_export(FIX))
    assert conv.title == "Marina Volkova" and conv.format == "telegram_html"
    assert Counter(m.author for m in conv.messages) == {"Marina Volkova": 3, "Алексей Смирнов": 5, "": 1}
    m = {x.id: x for x in conv.messages}
    assert m["1"].content == "Привет! Как дела?\nВторая строка"
    assert m["1"].timestamp == datetime(2024, 3, 14, 21, 0, tzinfo=timezone(timedelta(hours=3)))
    assert (m["3"].author, m["3"].reply_to) == ("Алексей Смирнов", "1")  # "joined": same author as before
    assert (m["4"].kind, m["4"].media) == ("media", "photo")
    assert (m["5"].kind, m["5"].media) == ("media", "voice_message")
    assert (m["6"].kind, m["6"].content) == ("sticker", "👍")
    assert (m["7"].kind, m["7"].content, m["7"].author) == ("forward", "Бесплатный вход в музеи!", "Marina Volkova")
    assert m["8"].kind == "service" and m["8"].content == "Marina Volkova pinned this message"
    assert m["10"].content == "пока & до завтра" and m["10"].timestamp.tzinfo is None
    assert conv.skipped == {"bad_timestamp": 1} and "messages2.html" in conv.problems[0]
    assert "-1" not in m  # day separators are not messages


def test_html_dates():
    assert parse_html_date("12.01.2023 14:05:33 UTC-05:30").utcoffset() == -timedelta(hours=5, minutes=30)
    assert parse_html_date("nonsense") is None
