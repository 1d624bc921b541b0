"""Facebook Messenger and Instagram JSON exports -> Conversations (one per thread).

Run: `python -c "from clonekit.formats import parse_export; print(next(parse_export('facebook-me.zip')))"`

Both write `messages/inbox/<thread>/message_1.json, message_2.json, ...`:
`{"participants": [{"name"}], "messages": [{"sender_name", "timestamp_ms",
"content", ...}], "title", ...}`, newest message first. Text is UTF-8 written
as latin-1 `\\u00XX` escapes ("\\u00d0\\u009f" for "П"), so every string is
re-decoded (`fix_mojibake`). Unsent messages -> kind "deleted"; photos,
videos, audio, files, GIFs, stickers and shared links without text -> kind
"media"; calls, joins/leaves and "reacted ... to your message" notices ->
kind "service". Reactions are not messages and are dropped, but their actors
count as participants. Timestamps are UTC-aware (milliseconds since the epoch).

The export does not name its owner; with several threads the one name that is
in all of them is the owner (or `profile_information.json`, when present).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..errors import ExportFormatError
from ..records import Conversation, Message
from ._common import ConversationBuilder, check_file, decode_text, fix_mojibake, no_messages_error

HINT = ("Download your information in JSON format (not HTML): Facebook/Instagram > Settings > "
        "Accounts Center > Your information and permissions > Download your information.")
_MEDIA = (("photos", "photo"), ("videos", "video"), ("audio_files", "voice_message"), ("gifs", "animation"),
          ("files", "file"), ("sticker", "sticker"), ("share", "share"))
_NOTICE = re.compile(r"(^|\s)(reacted .+ to (your|a) message|liked a message)\.?$|^you are now connected on messenger"
                     r"|(started|joined|ended) (a|the) (video |audio )?(call|chat)|^.{0,60} (left|joined) the group",
                     re.IGNORECASE)
_PLACEHOLDER = re.compile(r"sent an? (attachment|link|photo|video|voice message|sticker|GIF)\.?$", re.IGNORECASE)


def parse_messenger(threads: list[Path] | Path, fmt: str = "messenger") -> Iterator[Conversation]:
    """Yield one Conversation per thread folder (or per message_N.json file given alone)."""
    if isinstance(threads, (str, Path)):
        threads = [Path(threads)]
    owner = find_owner(threads)
    for thread in threads:
        yield from _parse_thread(Path(thread), fmt, owner)


def find_owner(threads: list[Path]) -> str:
    """The export owner: profile_information.json near the inbox, else the only name in every thread."""
    anc = next((a for a in Path(threads[0]).resolve().parents if a.name == "messages"), None) if threads else None
    for root in (anc.parent, anc.parent.parent) if anc is not None else ():
        for prof in [*root.glob("profile_information/profile_information.json"),
                     *root.glob("*/profile_information/profile_information.json")]:
            try:
                data = json.loads(prof.read_text(encoding="utf-8"))
                name = (data.get("profile_v2") or data.get("profile") or {}).get("name") or {}
                full = name.get("full_name") if isinstance(name, dict) else name
            except (OSError, ValueError, AttributeError):
                continue
            if full:
                return fix_mojibake(str(full))
    if len(threads) < 2:
        return ""
    common: set[str] | None = None
    for thread in threads:
        names = set(_participants(_load(_files(thread)[0])))
        common = names if common is None else common & names
    return common.pop() if common and len(common) == 1 else ""


def _files(thread: Path) -> list[Path]:
    if thread.is_file():
        return [thread]
    files = sorted(thread.glob("message_*.json"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not files:
        raise ExportFormatError(f"{thread}: no message_*.json files in this folder. {HINT}")
    return files


def _load(path: Path) -> dict[str, Any]:
    check_file(path)
    text = decode_text(path.read_bytes(), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        off = len(text[:e.pos].encode("utf-8"))
        cut = "truncated JSON (the file ends early)" if e.pos >= len(text.rstrip()) else f"invalid JSON ({e.msg})"
        raise ExportFormatError(f"{path}: {cut} at byte offset {off} (line {e.lineno}, column {e.colno}). "
                                f"Download the export again and unpack it completely. {HINT}") from None
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise ExportFormatError(f"{path}: no \"messages\" list, so not a Messenger/Instagram message file. {HINT}")
    return data


def _participants(data: dict[str, Any]) -> list[str]:
    return [fix_mojibake(str(p.get("name") or "")) for p in data.get("participants") or [] if isinstance(p, dict)]


def _parse_thread(thread: Path, fmt: str, owner: str) -> Iterator[Conversation]:
    files = _files(thread)
    first = _load(files[0])
    title = fix_mojibake(str(first.get("title") or ""))
    tid = str(first.get("thread_path") or thread.name).rsplit("/", 1)[-1]
    b = ConversationBuilder(f"{fmt}:{tid}", str(thread), fmt, title, owner=owner)
    for name in _participants(first):
        b.add_name(name)
    rows: list[tuple[int, int, Message]] = []
    for path in files:
        data = first if path == files[0] else _load(path)
        for i, d in enumerate(data["messages"]):
            try:
                ms = int(d["timestamp_ms"])
                rows.append((ms, -i, to_message(d, ms, f"{path.stem}:{i}")))
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                b.skip("bad_message", f"{path}: message #{i + 1}", f"unreadable record ({type(e).__name__}: {e})")
                continue
            for r in d.get("reactions") or []:
                if isinstance(r, dict):
                    b.add_name(fix_mojibake(str(r.get("actor") or "")))
    if not rows and not b.skipped:
        raise no_messages_error(thread, "Messenger/Instagram", HINT)
    rows.sort(key=lambda r: (r[0], r[1]))  # files and messages run newest-first
    b.messages = [m for _, _, m in rows]
    yield from b.take_pieces()
    last = b.finish()
    if last is not None:
        yield last


def to_message(d: dict[str, Any], ms: int, id: str) -> Message:
    text = fix_mojibake(str(d.get("content") or ""))
    author = fix_mojibake(str(d.get("sender_name") or ""))
    media = next((m for key, m in _MEDIA if d.get(key)), "")
    typ = d.get("type") or "Generic"
    kind = "text"
    if d.get("is_unsent"):
        kind, text = "deleted", ""
    elif typ in ("Call", "Subscribe", "Unsubscribe") or _NOTICE.search(text.strip()):
        kind = "service"
    elif _PLACEHOLDER.search(text) or media and (
            not text or media == "share" and text == str((d.get("share") or {}).get("link") or "")):
        kind, text, media = "media", "", media or "file"  # "Marina sent an attachment." is not her words
    elif not text:
        kind = "other"
    ts = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return Message("", text, author, ts, "", kind, id, "", False, media)
