"""Ready-made datasets -> Conversations: OpenAI JSONL, ShareGPT, Alpaca, and a plain CSV chat.

Run: `python -c "from clonekit.formats import parse_export; print(next(parse_export('train.jsonl')))"`

* openai_jsonl: one `{"messages": [{"role", "content"}, ...]}` per line (a JSON
  array of them works too); "developer" counts as "system".
* sharegpt: `{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}`, JSON array or JSONL.
* alpaca: `{"instruction", "input", "output"}` (+ optional "system"), JSON array or JSONL;
  the user turn is the instruction, then a blank line and the input when there is one.
* csv: a chat, not a dataset: header `timestamp,sender,text`, one message per
  row; roles stay "" and author = sender, like the other chat exports.

Datasets yield one Conversation per row with roles already set and author =
role. Unreadable lines and turns are counted in `skipped` of the next
conversation (the last one for trailing problems), never fatal.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

import ijson

from ..errors import ExportFormatError, InputError
from ..records import Conversation, Message
from ._common import MAX_PROBLEMS, ConversationBuilder, check_file, decode_text, no_messages_error, parse_iso
from ._jsonstream import locate_json_error

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                   "system": "system"}
_OPENAI_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
CSV_COLUMNS = {"timestamp": ("timestamp", "date", "time", "datetime"),
               "sender": ("sender", "author", "from", "name", "user"),
               "text": ("text", "message", "content", "body")}


def parse_dataset(path: str | Path, fmt: str) -> Iterator[Conversation]:
    """Yield one Conversation per row of an openai_jsonl / sharegpt / alpaca file."""
    path = Path(path)
    check_file(path)
    to_turns = {"openai_jsonl": _openai, "sharegpt": _sharegpt, "alpaca": _alpaca}[fmt]
    pending: dict[str, int] = {}
    problems: list[str] = []
    prev: Conversation | None = None
    for n, where, row in read_records(path):
        turns, bad = (None, row) if isinstance(row, str) else to_turns(row)
        if turns is None or bad:
            reason = "bad_record" if turns is None else "bad_turn"
            count = 1 if turns is None else len(bad)  # type: ignore[arg-type]
            pending[reason] = pending.get(reason, 0) + count
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{where}: {bad if turns is None else bad[0]}")  # type: ignore[index]
            if not turns:
                continue
        conv = Conversation(id=f"{fmt}:{path.stem}:{n}", source=str(path), format=fmt,
                            messages=[Message(r, c, r, None, "", "text", str(i)) for i, (r, c) in enumerate(turns)],
                            skipped=pending, problems=problems)
        pending, problems = {}, []
        if prev is not None:
            yield prev
        prev = conv
    if prev is None:
        raise no_messages_error(path, fmt, "Each row needs " + {
            "openai_jsonl": '{"messages": [{"role": "user", "content": ...}, ...]}',
            "sharegpt": '{"conversations": [{"from": "human", "value": ...}, ...]}',
            "alpaca": '{"instruction": ..., "input": ..., "output": ...}'}[fmt] + ".")
    for k, v in pending.items():
        prev.skipped[k] = prev.skipped.get(k, 0) + v
    prev.problems.extend(problems[: max(MAX_PROBLEMS - len(prev.problems), 0)])
    yield prev


def read_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(row number, where, dict) per record of a JSON array or JSONL file; "why" instead of the dict for a bad line."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        f.seek(0)
        if head.startswith(b"["):
            if f.read(3) != b"\xef\xbb\xbf":
                f.seek(0)
            try:
                for i, row in enumerate(ijson.items(f, "item", use_float=True), 1):
                    yield i, f"{path}: item {i}", row if isinstance(row, dict) else "not a JSON object"
            except ijson.JSONError as e:
                where, why = locate_json_error(path, 0, path.stat().st_size) or ("", str(e).split("\n")[0])
                raise ExportFormatError(f"{path}: invalid JSON{' at ' + where if where else ''} ({why}). "
                                        f"Fix the file or re-create it; JSONL (one object per line) lets "
                                        f"clonekit skip bad lines instead.") from None
            return
        offset = 0
        for no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{no}: not valid UTF-8 at byte offset {offset + e.start}. Save the file "
                                 f"as UTF-8 (e.g. `iconv -f cp1251 -t utf-8 in.jsonl > out.jsonl`).") from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield no, f"{path}:{no}", f"not a JSON line ({e.msg} at column {e.colno})"
                continue
            yield no, f"{path}:{no}", row if isinstance(row, dict) else "not a JSON object"


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return None


def _openai(row: dict) -> tuple[list[tuple[str, str]] | None, Any]:
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        return None, 'no "messages" list'
    turns, bad = [], []
    for m in msgs:
        role = _OPENAI_ROLES.get(str(m.get("role"))) if isinstance(m, dict) else None
        text = _text(m.get("content")) if isinstance(m, dict) else None
        if role is None or text is None:
            who = m.get("role") if isinstance(m, dict) else m
            bad.append(f"turn with role {who!r} skipped (only user/assistant/system)")
        else:
            turns.append((role, text))
    return turns, bad


def _sharegpt(row: dict) -> tuple[list[tuple[str, str]] | None, Any]:
    conv = row.get("conversations")
    if not isinstance(conv, list):
        return None, 'no "conversations" list'
    turns, bad = [], []
    for m in conv:
        role = _SHAREGPT_ROLES.get(str(m.get("from")).lower()) if isinstance(m, dict) else None
        if role is None or not isinstance(m.get("value"), str):
            bad.append(f"turn from {m.get('from') if isinstance(m, dict) else m!r} skipped (human/gpt/system only)")
        else:
            turns.append((role, m["value"]))
    return turns, bad


def _alpaca(row: dict) -> tuple[list[tuple[str, str]] | None, Any]:
    inst, out = row.get("instruction"), row.get("output")
    if not isinstance(inst, str) or not isinstance(out, str):
        return None, 'needs string "instruction" and "output"'
    extra = row.get("input")
    turns = [("system", row["system"])] if isinstance(row.get("system"), str) and row["system"] else []
    turns += [("user", f"{inst}\n\n{extra}" if isinstance(extra, str) and extra.strip() else inst), ("assistant", out)]
    return turns, []


def parse_csv_chat(path: str | Path) -> Iterator[Conversation]:
    """Yield the chat of a `timestamp,sender,text` CSV (roles "", author = sender)."""
    path = Path(path)
    check_file(path)
    reader = csv.reader(io.StringIO(decode_text(path.read_bytes(), path), newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    cols = {}
    for key, names in CSV_COLUMNS.items():
        cols[key] = next((header.index(n) for n in names if n in header), None)
    if None in cols.values():
        raise ExportFormatError(f"{path}:1: CSV header {','.join(header)!r} lacks "
                                f"{', '.join(k for k, v in cols.items() if v is None)}. "
                                f"Write the first line as: timestamp,sender,text")
    b = ConversationBuilder(f"csv:{path.stem}", str(path), "csv", path.stem)
    width = max(cols.values()) + 1  # type: ignore[type-var]
    for row in reader:
        no = reader.line_num
        if not any(c.strip() for c in row):
            continue
        if len(row) < width:
            b.skip("bad_row", f"{path}:{no}", f"{len(row)} columns, expected at least {width}")
            continue
        raw_ts, sender = row[cols["timestamp"]], row[cols["sender"]].strip()  # type: ignore[index]
        ts = parse_iso(raw_ts)
        if ts is None:
            b.skip("bad_timestamp", f"{path}:{no}", f"timestamp {raw_ts[:30]!r} is not ISO 8601 (2023-01-12 14:05:33) "
                   f"or unix seconds")
            continue
        if not sender:
            b.skip("bad_row", f"{path}:{no}", "empty sender")
            continue
        text = row[cols["text"]]  # type: ignore[index]
        b.messages.append(Message("", text, sender, ts, "", "text" if text.strip() else "other", str(no)))
        if len(b.messages) % 4096 == 0:
            yield from b.take_pieces()
    last = b.finish()
    if last is None:
        raise no_messages_error(path, "CSV", "Write one message per row under the header timestamp,sender,text.")
    yield last
