"""WhatsApp .txt exports: Android and iOS lines, date orders, markers, the .zip, bad lines."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from clonekit.errors import InputError
from clonekit.formats import detect_format, parse_export
from clonekit.formats.whatsapp import chat_title, detect_date_order

FIX = Path(__file__).parent / "fixtures" / "exports" / "whatsapp"
ANDROID = FIX / "WhatsApp Chat with Marina Volkova.txt"


def test_android_12h_month_first():
    [conv] = list(parse_export(ANDROID))
    assert detect_format(ANDROID) == "whatsapp"
    assert conv.format == "whatsapp" and conv.title == "Marina Volkova"
    assert Counter(m.author for m in conv.messages) == {"Marina Volkova": 5, "Алексей Смирнов": 6, "": 2}
    assert conv.owner == "Алексей Смирнов"  # "You deleted this message" gives the owner away
    assert conv.participants == ["Marina Volkova", "Алексей Смирнов"]
    m = {x.id: x for x in conv.messages}  # ids are the line numbers
    assert m["2"].timestamp == datetime(2024, 3, 14, 21, 0) and m["2"].timestamp.tzinfo is None
    assert m["18"].timestamp == datetime(2024, 3, 15, 0, 15)  # 12:15 AM
    assert m["19"].timestamp == datetime(2024, 3, 15, 12, 30)  # 12:30 PM
    assert m["5"].content == "Хорошо! Смотри, план на субботу:\n1. музей\n2. кофе\n\n3. кино"
    assert (m["1"].kind, m["1"].author) == ("service", "")  # encryption notice
    assert m["17"].kind == "service" and m["17"].content.startswith("Marina Volkova changed the subject")
    assert (m["10"].kind, m["10"].content, m["10"].media) == ("media", "", "media")
    assert (m["11"].kind, m["12"].kind) == ("deleted", "deleted")
    assert (m["13"].content, m["13"].edited) == ("го в 7", True)
    assert (m["16"].kind, m["16"].media) == ("media", "location")
    assert m["19"].content == "Good afternoon! ☀️"


def test_impossible_dates_are_counted_not_fatal():
    [conv] = list(parse_export(ANDROID))
    assert conv.skipped == {"bad_timestamp": 1}
    assert conv.problems[0].startswith(f"{ANDROID}:14: impossible date/time")
    assert all("continuation" not in m.content for m in conv.messages)  # its next line went with it


def test_ios_day_first_decided_by_time_order():
    [conv] = list(parse_export(FIX / "ios_chat.txt"))
    assert Counter(m.author for m in conv.messages) == {"Марина Волкова": 5, "Алексей": 5}
    ts = [m.timestamp for m in conv.messages]
    assert ts == sorted(ts) and ts[-1] == datetime(2024, 4, 2, 18, 31, 0)  # 02.04 is 2 April, not 4 February
    kinds = [(m.kind, m.media) for m in conv.messages]
    assert kinds == [("service", ""), ("text", ""), ("text", ""), ("media", "photo"), ("media", "voice_message"),
                     ("media", "sticker"), ("deleted", ""), ("media", "photo"), ("text", ""), ("text", "")]
    assert all("\u200e" not in m.content and "\u200e" not in m.author for m in conv.messages)
    assert conv.messages[8].content == "ну такое\nмногострочное\nсообщение"
    assert (conv.messages[9].content, conv.messages[9].edited) == ("го в 8", True)
    assert conv.owner == ""  # neither the file name nor a "You deleted" line says


def test_zip_with_media(tmp_path):
    z = FIX / "WhatsApp Chat - Дима Козлов.zip"
    assert detect_format(z) == "whatsapp"
    [conv] = list(parse_export(z))
    assert conv.title == "Дима Козлов" and conv.owner == "Алексей Смирнов"  # from the zip's name
    assert conv.source == f"{z}/_chat.txt"
    assert Counter(m.author for m in conv.messages) == {"Дима Козлов": 4, "Алексей Смирнов": 2}
    assert conv.messages[2].kind == "media" and conv.messages[2].media == "photo"


def test_wrong_encoding_names_the_byte():
    with pytest.raises(InputError, match=r"cp1251.txt: not valid utf-8 at byte offset 34 \(line 1"):
        list(parse_export(FIX / "cp1251.txt"))


def test_text_before_first_message_is_counted(tmp_path):
    p = tmp_path / "chat.txt"
    p.write_text("exported by a script\n\n31.12.23, 23:59 - Ann: с новым годом!\n01.01.24, 00:01 - Bob: 🎉\n",
                 encoding="utf-8")
    [conv] = list(parse_export(p, "whatsapp"))
    assert conv.skipped == {"no_timestamp": 1} and len(conv.messages) == 2
    assert conv.messages[1].timestamp == datetime(2024, 1, 1, 0, 1)


def test_detect_date_order():
    assert detect_date_order([("31", "12", "23")], [False]) == "dmy"
    assert detect_date_order([("12", "31", "23")], [True]) == "mdy"
    assert detect_date_order([("2023", "12", "31")], [False]) == "ymd"
    # no part above 12: the order that keeps time running forward wins over the 12 h hint
    assert detect_date_order([("11", "3", "24"), ("12", "3", "24"), ("1", "4", "24")], [True] * 3) == "dmy"
    assert detect_date_order([("3", "11", "24"), ("3", "12", "24"), ("4", "1", "24")], [False] * 3) == "mdy"
    assert chat_title(Path("WhatsApp Chat with Ann Lee.txt")) == "Ann Lee"
    assert chat_title(Path("x/_chat.txt")) == ""
