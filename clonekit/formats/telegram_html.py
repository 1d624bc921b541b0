"""Telegram Desktop HTML export (messages.html, messages2.html, ...) -> Conversations.

Run: `python -c "from clonekit.formats import parse_export; print(next(parse_export('ChatExport_2023-01-20')))"`

Prefer the JSON export (`telegram.py`): the HTML one has no user ids, no
edit marks, no export owner, and sticker emoji only when stickers were not
downloaded. Each folder of messages*.html pages is one chat. Read here:
`div.message.default` (author in `.from_name`; "joined" messages repeat the
previous author), the date `title` ("12.01.2023 14:05:33 UTC+03:00" -> aware
datetime; naive without the zone), `.reply_to` (GoToMessage(N)), `.text`
(<br> -> newline, formatting tags joined), `.forwarded` bodies (kind
"forward"), media blocks (photo, voice, video, sticker, file ... -> kind
"media"/"sticker") and `div.message.service` (kind "service"; the date
separators between days are not messages and are left out).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from ..records import Conversation, Message
from ._common import ConversationBuilder, check_file, no_messages_error, read_text

HINT = ("Export the chat as JSON (not HTML) from Telegram Desktop: Settings > Advanced > Export Telegram data, "
        "format: Machine-readable JSON.")
_DATE = re.compile(r"(\d{2})\.(\d{2})\.(\d{4}) (\d{2}):(\d{2}):(\d{2})(?: UTC([+-])(\d{2}):(\d{2}))?")
_GOTO = re.compile(r"GoToMessage\((\d+)\)|go_to_message(\d+)")
_MEDIA = (("sticker", "sticker"), ("voice_message", "voice_message"), ("video_message", "video_message"),
          ("round_video", "video_message"), ("photo", "photo"), ("animated", "animation"), ("gif", "animation"),
          ("video", "video_file"), ("audio_file", "audio_file"), ("location", "location"), ("contact", "contact"),
          ("poll", "poll"), ("media_file", "file"), ("game", "game"), ("invoice", "invoice"), ("call", "call"))


def parse_telegram_html(path: str | Path) -> Iterator[Conversation]:
    """Yield the chat of one HTML export folder (or of a single messages*.html page)."""
    path = Path(path)
    check_file(path)
    pages = [path] if path.is_file() else sorted(
        path.glob("messages*.html"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 1))
    folder = path.parent if path.is_file() else path
    b = ConversationBuilder(f"telegram_html:{folder.name}", str(path), "telegram_html")
    last_author = ""
    for page in pages:
        p = _Page(page, b, last_author)
        p.feed(read_text(page))
        p.close()
        last_author = p.last_author
        b.title = b.title or p.title
    if not b.messages and not b.skipped:
        raise no_messages_error(path, "Telegram HTML", HINT)
    if b.title:
        b.add_name(b.title)
    yield from b.take_pieces()
    last = b.finish()
    if last is not None:
        yield last


def parse_html_date(title: str) -> datetime | None:
    """'12.01.2023 14:05:33 UTC+03:00' -> aware datetime (naive without the zone).

    >>> parse_html_date("12.01.2023 14:05:33 UTC+03:00").isoformat()
    '2023-01-12T14:05:33+03:00'
    """
    m = _DATE.search(title or "")
    if not m:
        return None
    d, mo, y, hh, mm, ss, sign, zh, zm = m.groups()
    tz = None
    if sign:
        off = timedelta(hours=int(zh), minutes=int(zm))
        tz = timezone(off if sign == "+" else -off)
    try:
        return datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss), tzinfo=tz)
    except ValueError:
        return None


class _Page(HTMLParser):
    def __init__(self, path: Path, b: ConversationBuilder, last_author: str):
        super().__init__(convert_charrefs=True)
        self.path, self.b, self.last_author = path, b, last_author
        self.title = ""
        self.stack: list[tuple[str, str]] = []  # (tag, role)
        self.cur: dict | None = None
        self.field = ""

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            if tag == "br" and self.cur is not None and self.field == "text":
                self._put("\x00")  # a real line break, unlike the page's layout newlines
            return
        a = dict(attrs)
        cls = a.get("class") or ""
        classes = cls.split()
        role = ""
        if tag == "div" and "message" in classes and (a.get("id") or "").startswith("message"):
            num = a["id"][len("message"):]
            if num.isdigit():
                role = "message"
                self.cur = {"id": num, "service": "service" in classes, "joined": "joined" in classes,
                            "line": self.getpos()[0], "date": "", "author": "", "text": [], "fwd_text": [],
                            "forwarded": False, "reply": "", "media": "", "status": ""}
        elif self.cur is None:
            if tag == "div" and "page_header" in classes:
                role = "header"
            elif tag == "div" and "text" in classes and self._inside("header"):
                role, self.field = "title", "title"
        else:
            c = self.cur
            fwd = self._inside("forwarded")
            if tag == "div" and "forwarded" in classes and "body" in classes:
                role, c["forwarded"] = "forwarded", True
            elif "date" in classes and "details" in classes and not fwd and not c["date"]:
                c["date"] = a.get("title") or ""
            elif tag == "div" and "from_name" in classes and not fwd:
                role, self.field = "from", "from"
            elif tag == "div" and "text" in classes and not self._inside("media"):
                role, self.field = "text", "text"
            elif tag == "div" and "reply_to" in classes:
                role = "reply"
            elif tag == "a" and self._inside("reply"):
                m = _GOTO.search((a.get("onclick") or "") + " " + (a.get("href") or ""))
                if m:
                    c["reply"] = m.group(1) or m.group(2)
            elif tag == "div" and c["service"] and "body" in classes and "details" in classes:
                role, self.field = "text", "text"
            elif ("media" in cls or "_wrap" in cls) and not c["media"]:
                kind = next((m for key, m in _MEDIA if key in cls), "")
                if kind:
                    role, c["media"] = "media", kind
            elif tag == "div" and "status" in classes and self._inside("media"):
                role, self.field = "status", "status"
        self.stack.append((tag, role))

    def handle_endtag(self, tag):
        while self.stack:
            t, role = self.stack.pop()
            if role in ("from", "text", "title", "status"):
                self.field = ""
            if role == "message" and self.cur is not None:
                self._finish(self.cur)
                self.cur = None
            if t == tag:
                break

    def handle_data(self, data):
        if self.field == "title":
            self.title = (self.title + data).strip()
        elif self.cur is None or not self.field:
            return
        elif self.field == "from":
            self.cur["author"] += data
        elif self.field == "status":
            self.cur["status"] += data
        else:
            self._put(data)

    def _put(self, s: str) -> None:
        (self.cur["fwd_text"] if self._inside("forwarded") else self.cur["text"]).append(s)  # type: ignore[index]

    def _inside(self, role: str) -> bool:
        return any(r == role for _, r in self.stack)

    def _finish(self, c: dict) -> None:
        text = _clean("".join(c["text"]))
        if c["service"]:
            self.b.messages.append(Message("", text, "", None, "", "service", c["id"]))
            return
        ts = parse_html_date(c["date"])
        where = f"{self.path}:{c['line']}"
        if ts is None:
            self.b.skip("bad_timestamp", where, f"no date in message {c['id']} (title={c['date'][:40]!r})")
            return
        author = " ".join(c["author"].split()) or (self.last_author if c["joined"] else "")
        self.last_author = author
        media, kind = c["media"], "text"
        if c["forwarded"]:
            kind, text = "forward", text or _clean("".join(c["fwd_text"]))
        elif media == "sticker":
            emoji = c["status"].split(",", 1)[0].strip()
            kind, text = "sticker", emoji if emoji and not any(ch.isalnum() for ch in emoji) else ""
        elif media and not text:
            kind = "media"
        elif not text:
            kind = "other"
        self.b.messages.append(Message("", text, author, ts, "", kind, c["id"], c["reply"], False, media))


def _clean(s: str) -> str:
    """Drop the page's layout newlines and indentation; <br> (\\x00) becomes a newline."""
    return re.sub(r"[ \t]*\n\s*", "", s.strip()).replace("\x00", "\n").strip()
