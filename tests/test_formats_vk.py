"""VK archive: windows-1251 pages, Russian dates, "Вы" as the owner, attachments, forwards."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

from clonekit.formats import detect_format, parse_export
from clonekit.formats.vk import parse_vk_date

FIX = Path(__file__).parent / "fixtures" / "exports" / "vk"


def test_pages_are_cp1251():
    raw = (FIX / "Archive" / "messages" / "2002" / "messages0.html").read_bytes()
    assert "Марина".encode("cp1251") in raw and "Марина".encode("utf-8") not in raw


def test_archive_folder():
    assert detect_format(FIX / "Archive") == "vk"
    marina, shop = list(parse_export(FIX / "Archive"))
    assert marina.id == "vk:2002" and marina.title == "Марина Волкова" and marina.format == "vk"
    assert Counter(m.author for m in marina.messages) == {"Марина Волкова": 4, "Вы": 5}
    assert (marina.owner, marina.owner_id) == ("Вы", "self")
    assert marina.participants == ["Марина Волкова"]  # "Вы" is not a name to scrub
    assert [m.id for m in marina.messages] == ["811", "812", "813", "814", "816", "817", "818", "819", "820"]
    m = {x.id: x for x in marina.messages}
    assert m["811"].timestamp == datetime(2023, 1, 12, 14, 5, 33) and m["811"].author_id == "id2002"
    assert m["812"].content == 'норм "кек"\nвторая строка' and m["812"].author_id == "self"
    assert (m["813"].kind, m["813"].content, m["813"].media) == ("text", "Смотри, что нашла", "link")
    assert (m["814"].kind, m["814"].media) == ("media", "voice_message")
    assert m["816"].edited and not m["820"].edited
    assert (m["817"].kind, m["817"].media) == ("media", "photo")
    assert (m["818"].kind, m["818"].media) == ("media", "sticker")
    assert (m["819"].kind, m["819"].content) == ("forward", "")
    assert marina.skipped == {"bad_timestamp": 1} and "32 янв 2023" in marina.problems[0]
    assert [(x.author, x.kind) for x in shop.messages] == [("Вы", "text"), ("Пиццерия Тесто", "bot")]


def test_zip_of_the_archive(tmp_path):
    z = shutil.make_archive(str(tmp_path / "Archive"), "zip", FIX)
    assert detect_format(z) == "vk"
    convs = list(parse_export(z))
    assert [len(c.messages) for c in convs] == [9, 2]
    assert convs[0].source == f"{z}/Archive/messages/2002"


def test_dates():
    assert parse_vk_date("Вы, 5 мая 2022 в 1:34:19") == datetime(2022, 5, 5, 1, 34, 19)
    assert parse_vk_date("You, at 2:05:33 pm on 12 Jan 2023 (edited)") == datetime(2023, 1, 12, 14, 5, 33)
    assert parse_vk_date("31 фев 2023 в 10:00:00") is None
