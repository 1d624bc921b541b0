"""VK (VKontakte) data archive -> Conversations: messages/<peer>/messages*.html.

Run: `python -c "from clonekit.formats import parse_export; print(next(parse_export('Archive.zip')))"`

Request the archive at vk.com/data_protection (section "Messages"). Each peer
folder holds pages of 50 messages in windows-1251 HTML:

    <div class="message" data-id="812">
      <div class="message__header"><a href="https://vk.com/id2002">Марина</a>, 12 янв 2023 в 14:05:33 (ред.)</div>
      <div>text<br>more<div class="kludges"><div class="attachment">
        <div class="attachment__description">Фотография</div> ...</div></div></div></div>

Your own messages say "Вы" (or "You") instead of a linked name: they get
author_id "self" and become the conversation's owner. Dates are Russian
("12 янв 2023 в 14:05:33") or English ("at 2:05:33 pm on 12 Jan 2023") local
times without a zone, so timestamps are naive. The archive keeps only the
count of forwarded messages ("1 прикреплённое сообщение"), not their text.
"""

from __future__ import annotations

import re
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from ..records import Conversation, Message
from ._common import ConversationBuilder, check_file, decode_text, no_messages_error

HINT = "Request the archive at vk.com/data_protection (tick Messages) and pass the unpacked folder or the .zip."
SELF = {"вы", "you"}
_RU_MONTHS = ("янв", "фев", "мар", "апр", "мая", "июн", "июл", "авг", "сен", "окт", "ноя", "дек")
_EN_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_RU_DATE = re.compile(r"(\d{1,2}) ([а-яё]{3})[а-яё]* (\d{4}) в (\d{1,2}):(\d{2}):(\d{2})", re.IGNORECASE)
_EN_DATE = re.compile(r"at (\d{1,2}):(\d{2}):(\d{2}) ([ap]m) on (\d{1,2}) ([a-z]{3})[a-z]* (\d{4})", re.IGNORECASE)
_CHARSET = re.compile(rb'charset=["\']?([\w-]+)', re.IGNORECASE)
_ATTACH = (  # description prefix (lowercase) -> media
    ("фотограф", "photo"), ("photo", "photo"), ("видеозап", "video"), ("video", "video"),
    ("голосов", "voice_message"), ("аудиосообщ", "voice_message"), ("voice", "voice_message"),
    ("аудиозап", "audio_file"), ("audio", "audio_file"), ("стикер", "sticker"), ("sticker", "sticker"),
    ("документ", "file"), ("файл", "file"), ("document", "file"), ("file", "file"), ("ссылка", "link"),
    ("link", "link"), ("запись на стене", "wall_post"), ("wall post", "wall_post"), ("подарок", "gift"),
    ("gift", "gift"), ("карта", "location"), ("map", "location"), ("граффити", "graffiti"),
    ("история", "story"), ("story", "story"), ("опрос", "poll"), ("poll", "poll"), ("звонок", "call"),
    ("call", "call"),
)
_FORWARD = re.compile(r"прикрепл[её]нн|пересланн|forwarded|attached message", re.IGNORECASE)


def parse_vk(path: str | Path) -> Iterator[Conversation]:
    """Yield one Conversation per peer folder (or for one messages*.html page)."""
    path = Path(path)
    check_file(path)
    pages = sorted(path.glob("messages*.html")) if path.is_dir() else [path]
    folder = path if path.is_dir() else path.parent
    b = ConversationBuilder(f"vk:{folder.name}", str(folder if path.is_dir() else path), "vk", owner_id="self")
    b.hidden = {"Вы", "You"}  # the archive calls its owner "you": not a name to scrub
    rows: list[tuple[datetime, int, Message]] = []
    for page in pages:
        page_parser = _Page(page, b)
        page_parser.feed(read_page(page))
        page_parser.close()
        rows.extend(page_parser.rows)
        b.title = b.title or page_parser.title
    if not rows and not b.skipped:
        raise no_messages_error(path, "VK", HINT)
    rows.sort(key=lambda r: (r[0], r[1]))  # pages run newest-first; ids break ties
    b.messages = [m for _, _, m in rows]
    if b.title and not b.title.lower().startswith(("сообщения", "messages")):
        b.add_name(b.title)
    b.owner = next((m.author for m in b.messages if m.author_id == "self"), "")
    yield from b.take_pieces()
    last = b.finish()
    if last is not None:
        yield last


def read_page(path: Path) -> str:
    """Decode a page in the charset it declares (windows-1251 by default)."""
    data = path.read_bytes()
    m = _CHARSET.search(data[:2048])
    enc = m.group(1).decode("ascii").lower() if m else "windows-1251"
    return decode_text(data, path, "cp1251" if enc in ("windows-1251", "cp1251") else enc)


def parse_vk_date(text: str) -> datetime | None:
    """'12 янв 2023 в 14:05:33' or 'at 2:05:33 pm on 12 Jan 2023' -> naive datetime.

    >>> parse_vk_date("Марина, 12 янв 2023 в 14:05:33")
    datetime.datetime(2023, 1, 12, 14, 5, 33)
    """
    try:
        m = _RU_DATE.search(text)
        if m:
            d, mon, y, hh, mm, ss = m.groups()
            return datetime(int(y), _RU_MONTHS.index(mon.lower()) + 1, int(d), int(hh), int(mm), int(ss))
        m = _EN_DATE.search(text)
        if m:
            hh, mm, ss, ampm, d, mon, y = m.groups()
            hour = int(hh) % 12 + (12 if ampm.lower() == "pm" else 0)
            return datetime(int(y), _EN_MONTHS.index(mon.lower()) + 1, int(d), hour, int(mm), int(ss))
    except ValueError:
        return None
    return None


class _Page(HTMLParser):
    """Collects the messages of one messages*.html page."""

    def __init__(self, path: Path, b: ConversationBuilder):
        super().__init__(convert_charrefs=True)
        self.path, self.b = path, b
        self.rows: list[tuple[datetime, int, Message]] = []
        self.title = ""
        self.stack: list[str] = []  # role of each open div
        self.cur: dict | None = None
        self.field = ""  # where text goes: header, link, body, desc, crumb

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "br" and self.field == "body" and self.cur is not None:
            self.cur["body"].append("\n")
            return
        if tag == "a" and self.cur is not None and self.field == "header":
            self.cur["href"] = a.get("href") or ""
            self.field = "link"
            return
        if tag != "div":
            return
        role = ""
        if "message" in cls and a.get("data-id") is not None:
            role = "message"
            self.cur = {"id": a["data-id"], "header": [], "author": [], "href": "", "body": [], "att": [],
                        "line": self.getpos()[0]}
        elif "ui_crumb" in cls:
            role, self.field = "crumb", "crumb"
            self.title = ""
        elif self.cur is not None:
            if "message__header" in cls:
                role, self.field = "header", "header"
            elif "kludges" in cls:
                role, self.field = "kludges", ""
            elif "attachment__description" in cls:
                role, self.field = "desc", "desc"
                self.cur["att"].append("")
            elif not cls and self.field == "" and not self.cur["body"] and self.stack[-1:] == ["message"]:
                role, self.field = "body", "body"
        self.stack.append(role)

    def handle_endtag(self, tag):
        if tag == "a" and self.field == "link":
            self.field = "header"
            return
        if tag != "div" or not self.stack:
            return
        role = self.stack.pop()
        if role in ("header", "desc", "crumb", "body"):
            self.field = ""
        elif role == "message" and self.cur is not None:
            self._finish(self.cur)
            self.cur, self.field = None, ""

    def handle_data(self, data):
        if self.field == "crumb":
            self.title += data.strip()
        elif self.cur is None:
            return
        elif self.field == "link":
            self.cur["author"].append(data)
        elif self.field == "header":
            self.cur["header"].append(data)
        elif self.field == "body":
            self.cur["body"].append(data)
        elif self.field == "desc":
            self.cur["att"][-1] += data

    def _finish(self, c: dict) -> None:
        header = "".join(c["header"]).strip()
        where = f"{self.path}:{c['line']}"
        ts = parse_vk_date(header)
        if ts is None:
            who = "".join(c["author"]).strip()
            self.b.skip("bad_timestamp", where, f"no date in message header {(who + header)[:60]!r}")
            return
        author = "".join(c["author"]).strip()
        href = c["href"]
        if author:
            author_id = href.rstrip("/").rsplit("/", 1)[-1]
        else:
            who = header.split(",", 1)[0].strip()
            author, author_id = (who, "self") if who.lower() in SELF else (who, "")
        text = "".join(c["body"]).strip()
        kind, media = "text", ""
        descs = [d.strip() for d in c["att"] if d.strip()]
        forwarded = any(_FORWARD.search(d) for d in descs)
        for d in descs:
            if not _FORWARD.search(d):
                media = next((m for key, m in _ATTACH if d.lower().startswith(key)), "file")
                break
        if re.match(r"^(public|club|event)\d+$", author_id):
            kind = "bot"  # a community writing to you: a bot or a mailing
        elif not text and forwarded:
            kind = "forward"
        elif media == "call":
            kind = "service"
        elif not text and media:
            kind = "media"
        elif not text:
            kind = "other"
        edited = bool(re.search(r"\((ред\.|edited)\)", header))
        try:
            num = int(c["id"])
        except ValueError:
            num = 0
        self.rows.append((ts, num, Message("", text, author, ts, author_id, kind, str(c["id"]), "", edited, media)))
