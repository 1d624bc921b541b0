"""Telegram Desktop JSON export (result.json) -> Conversations, streamed.

Reads both shapes Telegram Desktop writes: a single chat (`{"name", "type",
"id", "messages": [...]}`) and the full export (`{"personal_information": ...,
"chats": {"list": [...]}, "left_chats": ...}`, saved messages, groups, bots).
It never loads the file whole: a 1 GB result.json parses at C speed in bounded
memory (see `_jsonstream.py` and `bench/parse_throughput.py`).

Run: `python -c "from clonekit.formats import parse_export; print(next(parse_export('result.json')))"`

Mapping: `from`/`from_id` -> author/author_id ("actor" for service messages),
`date_unixtime` -> UTC-aware timestamp (naive local `date` when absent), `text`
(string or list of strings and entity objects) joined, `reply_to_message_id`,
`edited`, `forwarded_from` -> kind "forward", `media_type: sticker` -> kind
"sticker" with the emoji, other media without a caption -> kind "media",
`via_bot` and the bot's own messages in a bot chat -> kind "bot".
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import ijson

from ..errors import InputError
from ..records import Conversation, Message
from ._common import ConversationBuilder, check_file, no_messages_error, paused_gc
from ._jsonstream import stream_arrays

HINT = ("Export the chat as JSON (not HTML) from Telegram Desktop: "
        "Settings > Advanced > Export Telegram data, format: Machine-readable JSON.")
_META = re.compile(rb'"(name|type|id)"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+|null)\s*,\s*')
_MEDIA_KEYS = ("photo", "poll", "location_information", "contact_information", "game_title",
               "invoice_information", "place_name", "file")
_UTC = timezone.utc
BATCH = 4096  # messages converted between checks for a full piece
_fromts = datetime.fromtimestamp


def parse_telegram(path: str | Path) -> Iterator[Conversation]:
    """Yield one Conversation per chat of a Telegram JSON export (pieces for huge chats).

    >>> from clonekit.storage import data_samples_dir
    >>> conv = next(parse_telegram(data_samples_dir() / "telegram" / "result.json"))
    >>> conv.owner, conv.format
    ('Алексей Смирнов', 'telegram')
    """
    path = Path(path)
    check_file(path)
    owner, owner_id = read_owner(path)
    found = 0
    with open(path, "rb") as f:
        for start, items in stream_arrays(f, path):
            found += 1
            yield from _Chat(path, start.header, owner, owner_id).read(items)
    if not found:
        raise no_messages_error(path, "Telegram", "Tick 'Personal chats' (and groups if you want them) in the "
                                "export dialog. " + HINT)


def read_owner(path: Path) -> tuple[str, str]:
    """(name, "user<id>") from `personal_information` near the top of a full export, else ("", "")."""
    info: dict[str, Any] = {}
    with open(path, "rb") as f:
        head = f.read(3)
        if head.startswith(b"\xff\xfe") or head.startswith(b"\xfe\xff"):
            raise InputError(f"{path}: UTF-16 text at byte offset 0, Telegram writes UTF-8. "
                             f"Use the result.json exactly as Telegram Desktop wrote it. {HINT}")
        if head != b"\xef\xbb\xbf":
            f.seek(0)
        try:
            for n, (prefix, event, value) in enumerate(ijson.parse(f, use_float=True)):
                if prefix.startswith("personal_information."):
                    info[prefix.rsplit(".", 1)[1]] = value
                elif event == "map_key" and prefix == "" and value in ("chats", "left_chats", "messages"):
                    break
                elif n > 500_000 or (prefix == "personal_information" and event == "end_map"):
                    break
        except ijson.JSONError:
            pass  # the streaming parser reports broken JSON with its byte offset
    if "user_id" not in info:
        return "", ""
    name = " ".join(str(info.get(k) or "") for k in ("first_name", "last_name")).strip()
    return name, f"user{info['user_id']}"


def read_chat_meta(header: bytes) -> dict[str, Any]:
    """The `name`, `type`, `id` written just before a chat's "messages" key."""
    tail = header[-4096:]
    meta: dict[str, Any] = {}
    end = len(tail)
    # walk back over the `"key": value,` pairs that end exactly at the "messages" key
    for m in reversed(list(_META.finditer(tail))):
        if m.end() != end:
            break
        meta.setdefault(m.group(1).decode(), json.loads(m.group(2)))
        end = m.start()
    return meta


class _Chat:
    """One chat being read: converts batches of message dicts, yields pieces."""

    def __init__(self, path: Path, header: bytes, owner: str, owner_id: str):
        meta = read_chat_meta(header)
        self.type = str(meta.get("type") or "")
        cid = meta.get("id")
        title = meta.get("name") or ("Saved Messages" if self.type == "saved_messages" else "")
        self.peer = f"user{cid}" if self.type in ("personal_chat", "bot_chat") and cid is not None else ""
        self.bot_id = self.peer if self.type == "bot_chat" else ""
        self.b = ConversationBuilder(f"telegram:{cid if cid is not None else len(header)}", str(path), "telegram",
                                     str(title), owner, owner_id)
        if self.type == "personal_chat":
            self.b.add_name(str(title))
        self.path = path

    def read(self, items: Iterator[dict]) -> Iterator[Conversation]:
        """Convert the chat's message dicts, yielding pieces as they fill up."""
        b, bot_id, path = self.b, self.bot_id, self.path
        msgs, n = b.messages, 0
        with paused_gc() as gc_off:
            while True:
                batch = list(islice(items, BATCH))
                if not batch:
                    break
                try:  # the fast path: one comprehension per batch
                    msgs.extend([to_message(d, bot_id) for d in batch])
                except (KeyError, TypeError, ValueError, AttributeError):
                    for i, d in enumerate(batch, n + 1):  # find, count and show the bad ones
                        try:
                            msgs.append(to_message(d, bot_id))
                        except (KeyError, TypeError, ValueError, AttributeError) as e:
                            b.skip("bad_message", f"{path}: chat {b.title!r} message #{i}",
                                   f"unreadable message record ({type(e).__name__}: {e})")
                n += len(batch)
                for d in [d for d in batch if "members" in d]:  # who was added to a group
                    for name in d["members"] if isinstance(d["members"], list) else ():
                        if isinstance(name, str):
                            b.add_name(name)
                for piece in self._with_owner(b.take_pieces()):
                    gc_off.resume()
                    yield piece
                    gc_off.pause()
        last = b.finish()
        if last is not None:
            yield from self._with_owner([last])

    def _with_owner(self, pieces) -> Iterator[Conversation]:
        for conv in pieces:
            if not conv.owner_id and self.peer:
                # a single-chat export does not name its owner, but a personal chat's id is the peer's
                for m in conv.messages:
                    if m.author_id and m.author_id != self.peer and m.kind != "service":
                        self.b.owner, self.b.owner_id = m.author, m.author_id
                        conv.owner, conv.owner_id = m.author, m.author_id
                        break
            yield conv


def join_text(text: Any) -> str:
    """Telegram `text`: a string, or a list of strings and entity objects ({"type", "text"}).

    >>> join_text(["see ", {"type": "bold", "text": "this"}, "!"])
    'see this!'
    """
    if text.__class__ is str:
        return text
    if not text:
        return ""
    return "".join(p if p.__class__ is str else str(p.get("text", "")) for p in text)


def to_message(d: dict, bot_id: str = "") -> Message:
    """One Telegram message dict -> Message (the hot loop: keep it lean)."""
    get = d.get
    text = get("text", "")
    if text.__class__ is not str:
        text = join_text(text)
    ts = get("date_unixtime")
    timestamp = _fromts(int(ts), _UTC) if ts else datetime.fromisoformat(d["date"])
    reply = get("reply_to_message_id")
    media = ""
    if get("type") == "service":
        return Message("", text or str(get("action") or ""), get("actor") or "", timestamp,
                       str(get("actor_id") or ""), "service", str(d["id"]), "", False, "")
    author_id = get("from_id") or ""
    kind = "text"
    if not text or len(d) > 8 + (reply is not None):  # a plain text message has 8 keys (+ reply)
        mt = get("media_type")
        if mt == "sticker":
            kind, text, media = "sticker", get("sticker_emoji") or "", "sticker"
        else:
            if mt:
                media = mt
            else:
                for k in _MEDIA_KEYS:
                    if k in d:
                        media = "location" if k == "location_information" else "contact" if k == "contact_information" \
                            else "game" if k == "game_title" else "invoice" if k == "invoice_information" else k
                        break
            if media and not text:
                kind = "media"
            elif not text and not media:
                kind = "other"
    if "forwarded_from" in d:
        kind = "forward"
    elif "via_bot" in d or (bot_id and author_id == bot_id):
        kind = "bot"
    return Message("", text, get("from") or "", timestamp, author_id, kind, str(d["id"]),
                   "" if reply is None else str(reply), "edited" in d, media)
