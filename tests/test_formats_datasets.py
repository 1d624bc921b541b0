"""Ready datasets (OpenAI JSONL, ShareGPT, Alpaca) and the timestamp,sender,text CSV chat."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from clonekit.errors import ExportFormatError, InputError
from clonekit.formats import detect_format, parse_export

FIX = Path(__file__).parent / "fixtures" / "exports" / "datasets"


def turns(conv):
    return [(m.role, m.content) for m in conv.messages]


def test_openai_jsonl_bad_lines_counted():
    assert detect_format(FIX / "openai.jsonl") == "openai_jsonl"
    convs = list(parse_export(FIX / "openai.jsonl"))
    assert [c.id for c in convs] == ["openai_jsonl:openai:1", "openai_jsonl:openai:2", "openai_jsonl:openai:4",
                                     "openai_jsonl:openai:6"]
    assert turns(convs[0]) == [("system", "You are Alexey."), ("user", "привет"), ("assistant", "привет)")]
    assert turns(convs[1]) == [("user", "what's up"), ("assistant", "nothing much lol")]  # content parts
    assert turns(convs[2]) == [("user", "weather?"), ("assistant", "норм")]  # the tool turn is dropped
    assert convs[2].skipped == {"bad_record": 1, "bad_turn": 1}
    assert convs[2].problems[0].startswith(f"{FIX / 'openai.jsonl'}:3: not a JSON line")
    assert convs[3].skipped == {"bad_record": 1} and turns(convs[3])[0] == ("system", "Be brief.")
    assert all(m.author == m.role and m.kind == "text" for c in convs for m in c.messages)


def test_sharegpt_and_alpaca():
    assert detect_format(FIX / "sharegpt.json") == "sharegpt"
    a, b = list(parse_export(FIX / "sharegpt.json"))
    assert turns(a) == [("user", "Привет!"), ("assistant", "привет)")]
    assert turns(b) == [("system", "Reply briefly."), ("user", "movie?"), ("assistant", "go")]
    assert b.skipped == {"bad_turn": 1, "bad_record": 1}  # trailing problems land on the last row
    assert detect_format(FIX / "alpaca.json") == "alpaca" == detect_format(FIX / "alpaca.jsonl")
    rows = list(parse_export(FIX / "alpaca.json"))
    assert turns(rows[0]) == [("user", "Переведи на английский\n\nПривет, как дела?"), ("assistant", "Hi, how are you?")]
    assert turns(rows[1]) == [("user", "Say hi"), ("assistant", "hi)")]
    assert turns(rows[2]) == [("system", "You are Alexey."), ("user", "Answer as Alexey"), ("assistant", "норм")]
    assert rows[2].skipped == {"bad_record": 1}
    assert [turns(r)[0][1] for r in parse_export(FIX / "alpaca.jsonl")] == ["Say hi", "Count\n\n1 2"]


def test_csv_chat():
    assert detect_format(FIX / "chat.csv") == "csv"
    [conv] = list(parse_export(FIX / "chat.csv"))
    assert [(m.role, m.author, m.content) for m in conv.messages] == [
        ("", "Marina Volkova", "Привет! Как дела?"), ("", "Алексей Смирнов", "привет) норм"),
        ("", "Алексей Смирнов", "а ты, как ты?"), ("", "Marina Volkova", "Хорошо!\nВторая строка"),
        ("", "Алексей Смирнов", "го")]
    ts = [m.timestamp for m in conv.messages]
    assert ts[0] == datetime(2024, 3, 14, 21, 0) and ts[0].tzinfo is None
    assert ts[1] == datetime(2024, 3, 14, 21, 0, 40, tzinfo=timezone(timedelta(hours=3)))
    assert ts[2] == datetime(2024, 3, 14, 18, 1, 40, tzinfo=timezone.utc)  # unix seconds
    assert conv.skipped == {"bad_timestamp": 1, "bad_row": 2}
    assert conv.problems[0].startswith(f"{FIX / 'chat.csv'}:7: timestamp 'yesterday'")
    assert conv.participants == ["Marina Volkova", "Алексей Смирнов"]


def test_dataset_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c" "output": "d"}]')
    with pytest.raises(ExportFormatError, match=r"bad.json: invalid JSON at byte offset 58 \(line 1\)"):
        list(parse_export(bad, "alpaca"))
    enc = tmp_path / "x.jsonl"
    enc.write_bytes('{"instruction": "Привет", "output": "да"}\n'.encode("cp1251"))
    with pytest.raises(InputError, match=r"x.jsonl:1: not valid UTF-8 at byte offset 17"):
        list(parse_export(enc, "alpaca"))
    header = tmp_path / "h.csv"
    header.write_text("when,who,what\n2024-01-01,a,b\n")
    with pytest.raises(ExportFormatError, match=r"h.csv:1: CSV header .* lacks timestamp, sender, text"):
        list(parse_export(header, "csv"))
    nothing = tmp_path / "n.jsonl"
    nothing.write_text('{"foo": 1}\n')
    with pytest.raises(ExportFormatError, match="No openai_jsonl messages found"):
        list(parse_export(nothing, "openai_jsonl"))
