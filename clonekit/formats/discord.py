"""Discord channel export made by DiscordChatExporter (JSON) -> Conversation, streamed.

Run: `python -c "from clonekit.formats import parse_export; print(next(parse_export('dm.json')))"`

Export with `DiscordChatExporter.Cli export -f Json` (or the GUI, format JSON).
The file is `{"guild", "channel", "messages": [...], "messageCount"}`; it is
streamed like Telegram's, so big servers parse in bounded memory.

Mapping: author nickname (else name) / author.id, ISO timestamps with their
zone (aware), `timestampEdited` -> edited, `reference.messageId` -> reply_to,
`author.isBot` -> kind "bot", types other than Default/Reply (joins, pins,
calls, renames) -> kind "service", attachments or stickers without text ->
kind "media" (Discord stickers carry a name, not an emoji).
"""

from __future__ import annotations

import io
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import ijson

from ..records import Conversation, Message
from ._common import ConversationBuilder, check_file, no_messages_error, paused_gc
from ._jsonstream import stream_arrays

HINT = "Export the channel with DiscordChatExporter in JSON format (-f Json)."
_IMAGE = (".png", ".jpg", ".jpeg", ".gif", ".webp")
_VIDEO = (".mp4", ".mov", ".webm")
_AUDIO = (".ogg", ".mp3", ".wav", ".m4a")


def parse_discord(path: str | Path) -> Iterator[Conversation]:
    """Yield the channel of one DiscordChatExporter JSON file (pieces if huge)."""
    path = Path(path)
    check_file(path)
    found = False
    with open(path, "rb") as f:
        for start, items in stream_arrays(f, path):
            if found:
                break  # one channel per file; a nested "messages" key is not ours
            found = True
            meta = read_header(start.header)
            b = ConversationBuilder(f"discord:{meta.get('channel.id') or path.stem}", str(path), "discord",
                                    _title(meta))
            n, more = 0, True
            with paused_gc() as gc_off:
                while more:
                    more = False
                    for d in islice(items, 4096):
                        more, n = True, n + 1
                        try:
                            b.messages.append(to_message(d))
                        except (KeyError, TypeError, ValueError, AttributeError) as e:
                            b.skip("bad_message", f"{path}: message #{n}", f"unreadable record ({type(e).__name__}: {e})")
                    for piece in b.take_pieces():
                        gc_off.resume()
                        yield piece
                        gc_off.pause()
            last = b.finish()
            if last is not None:
                yield last
    if not found:
        raise no_messages_error(path, "Discord", HINT)


def read_header(header: bytes) -> dict[str, Any]:
    """Scalar fields before "messages" ("guild.name", "channel.id", ...) from the raw bytes."""
    meta: dict[str, Any] = {}
    try:
        for prefix, event, value in ijson.parse(io.BytesIO(header)):
            if event in ("string", "number") and prefix.startswith(("guild.", "channel.")):
                meta[prefix] = value
    except ijson.JSONError:
        pass  # the header stops right before "messages": the parser always runs out here
    return meta


def _title(meta: dict[str, Any]) -> str:
    guild, channel = str(meta.get("guild.name") or ""), str(meta.get("channel.name") or "")
    if not guild or guild == "Direct Messages":
        return channel
    return f"{guild} / {channel}" if channel else guild


def to_message(d: dict) -> Message:
    author = d["author"]
    name = str(author.get("nickname") or author.get("name") or "")
    text = str(d.get("content") or "")
    typ = d.get("type") or "Default"
    kind, media = "text", ""
    files = d.get("attachments") or []
    if files:
        fname = str(files[0].get("fileName") or files[0].get("url") or "").lower()
        media = "photo" if fname.endswith(_IMAGE) else "video" if fname.endswith(_VIDEO) else \
            "audio_file" if fname.endswith(_AUDIO) else "file"
    elif d.get("stickers"):
        media = "sticker"
    if typ not in ("Default", "Reply"):
        kind = "service"
    elif author.get("isBot"):
        kind = "bot"
    elif not text:
        kind = "media" if media else "other"
    ref = d.get("reference") or {}
    return Message("", text, name, datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00")),
                   str(author.get("id") or ""), kind, str(d["id"]),
                   str(ref.get("messageId") or ""),
                   bool(d.get("timestampEdited")), media)
