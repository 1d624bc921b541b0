"""Recognise an export from its file names and first 64 KB: a file, a folder or a .zip.

    >>> sniff_file("result.json", b'{"about": "x", "personal_information": {"user_id": 1}, "chats": {')
    'telegram'
    >>> sniff_file("chat.txt", b"[31.12.23, 21:05:13] Marina: hi")
    'whatsapp'
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import ijson

from .whatsapp import HEADER as WHATSAPP_HEADER

# the order decides when a folder holds more than one kind (chat exports before datasets)
FORMATS = ("telegram", "telegram_html", "whatsapp", "vk", "discord", "messenger", "instagram",
           "openai_jsonl", "sharegpt", "alpaca", "csv")
FOLDER_FORMATS = ("telegram_html", "vk", "messenger", "instagram")  # one conversation per folder of pages
HEAD = 1 << 16
SUFFIXES = (".json", ".jsonl", ".txt", ".html", ".htm", ".csv")
MAX_FILES = 20_000
_CSV_NAMES = {"timestamp": ("timestamp", "date", "time", "datetime"), "sender": ("sender", "author", "from", "name",
              "user"), "text": ("text", "message", "content", "body")}


def sniff_file(name: str, head: bytes) -> str | None:
    """The format of one file from its name and first bytes, or None."""
    low = name.lower()
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if low.endswith((".html", ".htm")) or body[:1] == b"<":
        if b"message__header" in head or b"item__main" in head:
            return "vk"
        if b"page_wrap" in head and (b'class="history"' in head or b"message default" in head):
            return "telegram_html"
        return None
    if body[:1] in (b"{", b"["):
        fmt = _sniff_json(name, head)
        if fmt or body[:1] == b"{":
            return fmt  # "[" may still be an iOS WhatsApp line: "[31.12.23, 21:05:13] ..."
    first = body.split(b"\n", 1)[0].decode("utf-8", "replace").lower()
    cols = [c.strip().strip('"') for c in first.split(",")]
    if len(cols) >= 3 and all(any(n in cols for n in names) for names in _CSV_NAMES.values()):
        return "csv"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", "replace")
    else:
        text = head.decode("utf-8", "replace")
    lines = text.splitlines()[:40]
    for line in lines:  # a header with a "Name: text" sender, not just a dated log line
        m = WHATSAPP_HEADER.match(line)
        if m and 0 < m.group(9).find(": ") <= 40:
            return "whatsapp"
    return None


def _sniff_json(name: str, head: bytes) -> str | None:
    paths: set[str] = set()
    try:
        for prefix, event, value in ijson.parse(io.BytesIO(head.lstrip(b"\xef\xbb\xbf")), multiple_values=True):
            if event == "map_key":
                paths.add(f"{prefix}.{value}" if prefix else value)
    except ijson.JSONError:
        pass  # the head usually stops mid-file
    if "personal_information" in paths or "chats.list" in paths:
        return "telegram"
    if "messages" in paths and "guild" in paths and "channel" in paths:
        return "discord"
    if "messages.item.sender_name" in paths or ("participants" in paths and "messages" in paths):
        instagram = "instagram" in name.lower() or ("messages.item.type" not in paths
                                                    and "messages.item.sender_name" in paths)
        return "instagram" if instagram else "messenger"
    if "messages.item.role" in paths or "item.messages.item.role" in paths:
        return "openai_jsonl"
    if "messages" in paths and ({"name", "type", "id"} & paths or "messages.item.from_id" in paths
                                or "messages.item.date_unixtime" in paths):
        return "telegram"
    if "conversations" in paths or "item.conversations" in paths:
        return "sharegpt"
    if "instruction" in paths or "item.instruction" in paths:
        return "alpaca"
    return None


def _group_key(rel: str) -> str:
    """messages0.html and messages50.html (or message_1/2.json) in one folder: sniff one of them."""
    folder, _, name = rel.replace("\\", "/").rpartition("/")
    return folder + "/" + re.sub(r"\d+", "#", name)


def scan(names: Iterable[str], read_head: Callable[[str], bytes]) -> dict[str, list[str]]:
    """Format -> files (relative names) among `names`, reading one head per group of pages."""
    found: dict[str, list[str]] = {}
    verdict: dict[str, str | None] = {}
    for rel in sorted(names, key=lambda n: (n.count("/"), _natural(n))):
        if not rel.lower().endswith(SUFFIXES) or "/." in "/" + rel or "__MACOSX" in rel:
            continue
        key = _group_key(rel)
        if key not in verdict:
            try:
                verdict[key] = sniff_file(rel, read_head(rel))
            except OSError:
                verdict[key] = None
        fmt = verdict[key]
        if fmt == "messenger" and "instagram" in rel.lower():
            fmt = "instagram"
        if fmt:
            found.setdefault(fmt, []).append(rel)
    return found


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def scan_folder(folder: Path) -> dict[str, list[Path]]:
    names = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel_root = os.path.relpath(root, folder)
        for f in files:
            names.append(f if rel_root == "." else f"{rel_root}/{f}".replace(os.sep, "/"))
        if len(names) > MAX_FILES:
            break

    def head(rel: str) -> bytes:
        with open(folder / rel, "rb") as fh:
            return fh.read(HEAD)

    return {fmt: [folder / r for r in rels] for fmt, rels in scan(names, head).items()}


def scan_zip(zf: zipfile.ZipFile) -> dict[str, list[str]]:
    def head(rel: str) -> bytes:
        with zf.open(rel) as fh:
            return fh.read(HEAD)

    return scan([i.filename for i in zf.infolist() if not i.is_dir()][:MAX_FILES], head)


def pick(found: dict[str, list]) -> str | None:
    return next((f for f in FORMATS if found.get(f)), None)


def units(fmt: str, files: list[Path]) -> list[Path]:
    """What one parser call takes: the file, or for page-based formats its folder."""
    if fmt not in FOLDER_FORMATS:
        return files
    return list(dict.fromkeys(p.parent for p in files))
