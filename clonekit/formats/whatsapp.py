"""WhatsApp "Export chat" .txt (Android and iOS, with or without media) -> Conversation.

Run: `python -c "from clonekit.formats import parse_export; print(next(parse_export('WhatsApp Chat with Marina.txt')))"`

Line formats (12 h or 24 h clock, any date order, "/" "." or "-"):

    Android  12/31/23, 9:05 PM - Marina: text        31.12.23, 21:05 - Marina: text
    iOS      [31.12.23, 21:05:13] Marina: text       [12/31/23, 9:05:13 PM] Marina: text

The date order (day first, month first, year first) is decided once from the
WHOLE file: a first part above 12 means day-first, a second part above 12
means month-first; if no date settles it, the order that keeps the messages in
time order wins. Lines that do not start a message continue the previous one
(multi-line messages); a line that looks like a header but whose date or time
is impossible is counted in `skipped["bad_timestamp"]`, never fatal.
WhatsApp writes no time zone, so timestamps are naive local times.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Iterator

from ..records import Conversation, Message
from ._common import ConversationBuilder, check_file, no_messages_error, read_text

HINT = "In WhatsApp open the chat > More > Export chat, and pass the .txt or the .zip it makes."
_SPACE = "[ \u202f\u00a0]"
HEADER = re.compile(
    r"^[\u200e\u200f\u202a-\u202e\ufeff]*\[?"
    r"(\d{1,4})([./-])(\d{1,2})\2(\d{1,4})\.?,?" + _SPACE + r"+"
    r"(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?"
    r"(?:" + _SPACE + r"*([AaPp])\.?" + _SPACE + r"?[Mm]\.?)?"
    r"(?:\]" + _SPACE + r"?| [-\u2013] )"
    r"(.*)$"
)
_MARKS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\ufeff"
_OMITTED = {
    "<media omitted>": "media", "<без медиафайлов>": "media", "<медиафайлы не включены>": "media",
    "image omitted": "photo", "video omitted": "video", "audio omitted": "voice_message",
    "sticker omitted": "sticker", "gif omitted": "animation", "document omitted": "file",
    "contact card omitted": "contact", "изображение отсутствует": "photo", "видео отсутствует": "video",
    "аудиофайл отсутствует": "voice_message", "стикер отсутствует": "sticker", "null": "media",
}
_DELETED = ("this message was deleted", "you deleted this message", "это сообщение удалено",
            "вы удалили это сообщение", "данное сообщение удалено")
_EDITED = ("<this message was edited>", "<сообщение изменено>")
_EXT_MEDIA = {"jpg": "photo", "jpeg": "photo", "png": "photo", "heic": "photo", "webp": "sticker",
              "mp4": "video", "mov": "video", "3gp": "video", "opus": "voice_message", "ogg": "voice_message",
              "m4a": "voice_message", "mp3": "audio_file", "aac": "audio_file", "gif": "animation", "vcf": "contact"}
_ATTACHED = re.compile(r"^<attached: ([^>]+)>$|^(\S+\.\w{2,4}) \(file attached\)$")
_SYSTEM = re.compile(
    r"(messages and calls are end-to-end encrypted|messages to this (chat|group) are now secured"
    r"|created (the )?group|changed the (subject|group|this group)|changed this group's"
    r"|\badded\b|\bleft$|\bremoved\b|joined using this group's invite link|security code (with .+ )?changed"
    r"|changed (their|your) phone number|pinned a message|is a contact|missed (voice|video) call"
    r"|^(voice|video) call\b|disappearing messages|сообщения и звонки защищены|создал\w* групп"
    r"|добавил\w*|покинул\w*|удалил\w* .+ из группы|изменил\w* (тему|описание|изображение) группы"
    r"|код безопасности|пропущенный (аудио|видео)?звонок)",
    re.IGNORECASE,
)
# a "sender" that is really a system line with ": " in it: 'Ann changed the subject from "a: b"'
_SYSTEM_NAME = re.compile(r"\s(changed|created|added|removed|joined|pinned|изменил\w*|создал\w*|добавил\w*|удалил\w*)\s",
                          re.IGNORECASE)
_TITLE = re.compile(r"^(?:WhatsApp[ -]Chat (?:with|mit|con|avec|met|com) |WhatsApp Chat - |Чат WhatsApp с )(.+)$",
                    re.IGNORECASE)


def parse_whatsapp(path: str | Path) -> Iterator[Conversation]:
    """Yield the chat of one WhatsApp .txt export (pieces if it is huge)."""
    path = Path(path)
    check_file(path)
    lines = read_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    heads = [HEADER.match(line) for line in lines]
    order = detect_date_order([m.group(1, 3, 4) for m in heads if m], [bool(m.group(8)) for m in heads if m])
    title = chat_title(path)
    b = ConversationBuilder(f"whatsapp:{title or path.stem}", str(path), "whatsapp", title,
                            owner=infer_owner(title, heads))
    if title:
        b.add_name(title)
    msg: Message | None = None
    skipping = False  # continuation lines of a skipped message are skipped with it
    for no, (line, m) in enumerate(zip(lines, heads), 1):
        ts = to_datetime(m, order) if m else None
        if m and ts is None:
            b.skip("bad_timestamp", f"{path}:{no}", f"impossible date/time in {line[:40]!r}")
            skipping = True
            continue
        if m is None:
            if msg is not None and not skipping:
                msg.content += "\n" + line
            elif line.strip() and not skipping:
                b.skip("no_timestamp", f"{path}:{no}", f"text before the first message: {line[:40]!r}")
            continue
        skipping = False
        if msg is not None:
            _finish(msg)
        msg = _start(m.group(9), ts, str(no))
        b.messages.append(msg)
        if len(b.messages) % 4096 == 0:
            yield from b.take_pieces()
    if msg is not None:
        _finish(msg)
    if not b.messages and not b.skipped:
        raise no_messages_error(path, "WhatsApp", HINT)
    last = b.finish()
    if last is not None:
        yield last


def detect_date_order(parts: list[tuple[str, str, str]], twelve_hour: list[bool]) -> str:
    """"dmy", "mdy" or "ymd" for the whole file, from all header dates.

    >>> detect_date_order([("1", "2", "23"), ("13", "2", "23")], [False, False])
    'dmy'
    >>> detect_date_order([("12", "30", "23"), ("12", "31", "23"), ("1", "1", "24")], [True] * 3)
    'mdy'
    """
    if not parts:
        return "dmy"
    if sum(len(a) == 4 for a, _, _ in parts) > len(parts) / 2:
        return "ymd"
    day_first = sum(int(a) > 12 for a, _, _ in parts)
    month_first = sum(int(b) > 12 for _, b, _ in parts)
    if day_first != month_first:
        return "dmy" if day_first > month_first else "mdy"
    # nothing above 12: keep the order in which the messages run forward in time
    def inversions(order: str) -> int:
        keys = []
        for a, b, c in parts:
            d, mo = (int(a), int(b)) if order == "dmy" else (int(b), int(a))
            keys.append((int(c) % 100, mo, d))
        return sum(k2 < k1 for k1, k2 in zip(keys, keys[1:]))
    dmy, mdy = inversions("dmy"), inversions("mdy")
    if dmy != mdy:
        return "dmy" if dmy < mdy else "mdy"
    return "mdy" if sum(twelve_hour) > len(parts) / 2 else "dmy"


def to_datetime(m: re.Match, order: str) -> datetime | None:
    """Header match -> naive datetime in the file's date order; None if impossible."""
    a, b, c = int(m.group(1)), int(m.group(3)), int(m.group(4))
    y, mo, d = (a, b, c) if order == "ymd" else (c, b, a) if order == "dmy" else (c, a, b)
    if y < 100:
        y += 2000
    hour, minute, second = int(m.group(5)), int(m.group(6)), int(m.group(7) or 0)
    ampm = m.group(8)
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm in "Pp" else 0)
    try:
        return datetime(y, mo, d, hour, minute, second)
    except ValueError:
        return None


def chat_title(path: Path) -> str:
    """The other person (or group) from the export's file name; "" if it does not say."""
    for name in (path.stem, path.parent.name):
        m = _TITLE.match(name)
        if m:
            return m.group(1).strip()
    return ""


def _start(rest: str, ts: datetime | None, id: str) -> Message:
    name, sep, text = rest.partition(": ")
    if not sep or len(name) > 40 or _SYSTEM_NAME.search(name):  # "Alice changed the subject to "a: b""
        return Message("", rest.strip(_MARKS), "", ts, "", "service", id)
    return Message("", text, name.strip(_MARKS + " "), ts, "", "text", id)


def _finish(msg: Message) -> None:
    """Classify a complete message by its markers (media, deleted, edited, system)."""
    if msg.kind == "service":
        return
    text = msg.content
    system = text[:1] in _MARKS  # iOS marks its own (system/media) texts with U+200E
    text = text.strip(_MARKS + " ").rstrip()
    low = text.lower()
    for mark in _EDITED:
        if low.endswith(mark):
            msg.edited = True
            text = text[: -len(mark)].rstrip(_MARKS + " ")
            low = text.lower()
    msg.content = text
    if low in _OMITTED:
        msg.kind, msg.media, msg.content = "media", _OMITTED[low], ""
    elif low.endswith(" omitted") and system:
        msg.kind, msg.media, msg.content = "media", "file", ""
    elif low.rstrip(".") in _DELETED:
        msg.kind, msg.content = "deleted", ""
    elif (a := _ATTACHED.match(text)) is not None:
        fname = a.group(1) or a.group(2)
        ext = fname.rsplit(".", 1)[-1].lower()
        msg.kind, msg.content = "media", ""
        msg.media = "voice_message" if "AUDIO" in fname and ext == "opus" else _EXT_MEDIA.get(ext, "file")
    elif low.startswith("location: ") or low.startswith("местоположение: "):
        msg.kind, msg.media, msg.content = "media", "location", ""
    elif system and _SYSTEM.search(low):
        msg.kind = "service"
    elif not text:
        msg.kind = "other"


def infer_owner(title: str, heads: list) -> str:
    """Who exported the chat: the sender of "You deleted this message", else, in a
    two-person chat named after one of them ("WhatsApp Chat with Marina"), the other."""
    senders: dict[str, None] = {}
    for m in heads:
        name, sep, text = m.group(9).partition(": ") if m else ("", "", "")
        if not sep or len(name) > 40 or _SYSTEM_NAME.search(name):
            continue
        name = name.strip(_MARKS + " ")
        if text.strip(_MARKS + " .").lower() in ("you deleted this message", "вы удалили это сообщение"):
            return name
        senders[name] = None
    if title and len(senders) == 2 and title in senders:
        return next(n for n in senders if n != title)
    return ""
