"""detect_format / parse_export on files, folders and zips, and the errors for bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from clonekit.errors import ExportFormatError, InputError
from clonekit.formats import FORMATS, detect_format, parse_export
from clonekit.formats.detect import sniff_file

FIX = Path(__file__).parent / "fixtures" / "exports"


@pytest.mark.parametrize("rel, fmt", [
    ("telegram/single_chat.json", "telegram"), ("telegram/full_export.json", "telegram"),
    ("telegram_html/ChatExport_2024-03-20", "telegram_html"),
    ("whatsapp/WhatsApp Chat with Marina Volkova.txt", "whatsapp"), ("whatsapp/ios_chat.txt", "whatsapp"),
    ("vk/Archive", "vk"), ("vk/Archive/messages/2002/messages50.html", "vk"),
    ("discord/dm_marina.json", "discord"), ("messenger", "messenger"), ("instagram", "instagram"),
    ("datasets/openai.jsonl", "openai_jsonl"), ("datasets/sharegpt.json", "sharegpt"),
    ("datasets/alpaca.json", "alpaca"), ("datasets/chat.csv", "csv"),
    ("telegram", "telegram"),  # a folder holding a result.json
])
def test_detect(rel, fmt):
    assert detect_format(FIX / rel) == fmt
    assert fmt in FORMATS


def test_unknown_format_says_what_to_do(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("just some notes\nnothing like a chat\n")
    with pytest.raises(ExportFormatError) as e:
        detect_format(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg
    assert "Export the chat as JSON (not HTML) from Telegram Desktop: Settings > Advanced > Export Telegram data" in msg
    with pytest.raises(ExportFormatError):
        parse_export(p)  # raised at the call, before any conversation
    html = tmp_path / "page.html"
    html.write_text("<html><body>hello</body></html>")
    with pytest.raises(ExportFormatError, match="not a chat export"):
        detect_format(html)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist. Check the path"):
        detect_format(tmp_path / "nope.json")
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(InputError, match=r"e.txt is empty \(0 bytes\)"):
        parse_export(tmp_path / "e.txt")
    with pytest.raises(InputError, match="Unknown format 'tg'"):
        parse_export(FIX / "telegram" / "single_chat.json", "tg")
    with pytest.raises(ExportFormatError, match="no vk export inside this folder"):
        parse_export(FIX / "telegram", "vk")
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="not a readable zip"):
        detect_format(fake)


def test_zip_of_a_telegram_export(tmp_path):
    z = tmp_path / "Telegram Export.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(FIX / "telegram" / "full_export.json", "DataExport_2024-03-20/result.json")
        zf.writestr("DataExport_2024-03-20/photos/p.jpg", b"\xff\xd8")
    assert detect_format(z) == "telegram"
    convs = list(parse_export(z))
    assert len(convs) == 5 and convs[0].source == f"{z}/DataExport_2024-03-20/result.json"
    bad = tmp_path / "broken.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.write(FIX / "telegram" / "truncated.json", "result.json")
    with pytest.raises(ExportFormatError, match=f"{bad}/result.json: truncated JSON"):
        list(parse_export(bad))


def test_sniff_file():
    assert sniff_file("a.json", b'{"guild": {"id": "1"}, "channel": {"id": "2"}, "messages": [') == "discord"
    assert sniff_file("a.json", b'{"name": "X", "type": "personal_chat", "id": 1, "messages": [') == "telegram"
    assert sniff_file("c.csv", b"Timestamp,Sender,Text\n2024-01-01,a,b\n") == "csv"
    assert sniff_file("x.txt", b"[2024-01-01 10:00] hello") is None
