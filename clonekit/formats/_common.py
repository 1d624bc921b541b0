"""Helpers every export parser shares: building conversations, counting what
was skipped, reading text with clear encoding errors, fixing mojibake.

Parsers stay pure about data: they turn bytes into `Conversation`s and
report every line they could not read in `Conversation.skipped` (and a few
examples in `Conversation.problems`) instead of raising.

    >>> fix_mojibake("\\u00d0\\u009f\\u00d1\\u0080\\u00d0\\u00b8\\u00d0\\u00b2\\u00d0\\u00b5\\u00d1\\u0082")
    'Привет'
"""

from __future__ import annotations

import codecs
import gc
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from ..errors import ExportFormatError, InputError
from ..records import Conversation, Message

MAX_PROBLEMS = 5  # examples kept per conversation; the counts in `skipped` are complete
PIECE_MESSAGES = 50_000  # a chat longer than this is yielded in pieces (bounded memory)
PIECE_GAP_S = 3600  # ... cut at the first pause of an hour after the limit, so dialogues stay whole


class ConversationBuilder:
    """Collects one chat's messages and hands them out as `Conversation`s.

    A very long chat is cut into pieces of about `PIECE_MESSAGES` messages, at a
    pause of `PIECE_GAP_S` (piece k > 1 gets the id "<id>#k"), so that a 1 GB
    export never holds more than one piece in memory.
    """

    def __init__(self, id: str, source: str, format: str, title: str = "", owner: str = "",
                 owner_id: str = "", max_messages: int | None = None):
        self.id, self.source, self.format, self.title = id, source, format, title
        self.owner, self.owner_id = owner, owner_id
        self.max_messages = max_messages or PIECE_MESSAGES
        self.messages: list[Message] = []
        self.names: dict[str, None] = {}  # participants seen outside the messages (actors, members, title)
        self.hidden: set[str] = set()  # author labels that are not names ("Вы"/"You" in VK)
        self.skipped: dict[str, int] = {}
        self.problems: list[str] = []
        self.pieces = 0
        self.scanned = 0  # find_cut already looked at messages[:scanned]

    def skip(self, reason: str, where: str, why: str) -> None:
        """Count one unreadable record; keep the first few as examples."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {why}")

    def add_name(self, name: str) -> None:
        if name:
            self.names.setdefault(name, None)

    def take_pieces(self) -> Iterable[Conversation]:
        """Yield full pieces once the chat has grown past the limit (call after each batch)."""
        while len(self.messages) >= self.max_messages:
            cut = find_cut(self.messages, self.max_messages, PIECE_GAP_S, self.scanned)
            if cut is None:
                self.scanned = len(self.messages)
                return
            yield self._piece(cut)

    def finish(self) -> Conversation | None:
        """The last piece (None when the chat had nothing at all)."""
        if not self.messages and not self.skipped:
            return None
        return self._piece(len(self.messages))

    def _piece(self, cut: int) -> Conversation:
        msgs = self.messages[:cut]
        del self.messages[:cut]  # the same list object: parsers hold its bound append
        self.scanned = 0
        self.pieces += 1
        for name in dict.fromkeys([m.author for m in msgs]):  # service actors take part too
            if name and name not in self.hidden:
                self.names.setdefault(name, None)
        conv = Conversation(
            id=self.id if self.pieces == 1 else f"{self.id}#{self.pieces}",
            messages=msgs, source=self.source, format=self.format, title=self.title,
            participants=list(self.names), owner=self.owner, owner_id=self.owner_id,
            skipped=self.skipped, problems=self.problems,
        )
        self.skipped, self.problems = {}, []
        return conv


class paused_gc:
    """Keep the cyclic GC off while a chat is parsed: parsing creates no cycles, and
    the GC would rescan every live message again and again (~20% of the time).

    Call `resume()` before yielding to the caller and `pause()` after, so that
    the caller's code always runs with the GC as it left it.
    """

    def __enter__(self) -> "paused_gc":
        self.was = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc: object) -> None:
        self.resume()

    def resume(self) -> None:
        if self.was:
            gc.enable()

    def pause(self) -> None:
        gc.disable()


def find_cut(messages: list[Message], limit: int, gap_s: float, start: int = 0) -> int | None:
    """Where to end a piece: the first pause >= gap_s after `limit` messages,
    or 2*limit when the chat never pauses; None if neither is reached yet.

    >>> t = lambda s: datetime.fromtimestamp(s, timezone.utc)
    >>> ms = [Message("", "x", timestamp=t(s)) for s in (0, 10, 20, 5000, 5010)]
    >>> find_cut(ms, 2, 3600)
    3
    """
    for i in range(max(limit, start, 1), len(messages)):
        a, b = messages[i - 1].timestamp, messages[i].timestamp
        if a is not None and b is not None and (b - a).total_seconds() >= gap_s:
            return i
        if i >= 2 * limit:
            return i
    return None


def fix_mojibake(s: str) -> str:
    """Undo UTF-8 that was written as latin-1 escapes (Facebook/Instagram JSON).

    Strings that are already fine (any char above U+00FF, or not valid UTF-8
    once re-encoded) come back unchanged.
    """
    if not s or s.isascii():
        return s
    try:
        return s.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return s


def check_file(path: Path, what: str = "export") -> int:
    """Fail early on a missing or empty input; returns its size in bytes."""
    if not path.exists():
        raise InputError(f"{path} does not exist. Check the path to your {what} (a file, a folder or a .zip).")
    size = path.stat().st_size
    if path.is_file() and size == 0:
        raise InputError(f"{path} is empty (0 bytes). Export the chat again; the copy may have failed.")
    return size


def decode_text(data: bytes, path: Path | str, encoding: str = "utf-8") -> str:
    """Decode a whole text export; a wrong encoding is an InputError naming the byte offset.

    A UTF-8 BOM is dropped and UTF-16 (BOM) files are read as UTF-16.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"{path}: not valid {encoding} at byte offset {e.start} (line {line}, byte {data[e.start:e.start + 1]!r}). "
            f"Export the chat again without changing the file, or convert it to UTF-8 first "
            f"(e.g. `iconv -f cp1251 -t utf-8 in.txt > out.txt`)."
        ) from None


def read_text(path: Path, encoding: str = "utf-8") -> str:
    return decode_text(path.read_bytes(), path, encoding)


def from_unix(value: object) -> datetime | None:
    """Seconds since the epoch (int or digit string) -> aware UTC datetime."""
    try:
        return datetime.fromtimestamp(int(value), timezone.utc)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def parse_iso(value: str) -> datetime | None:
    """ISO 8601 (with or without zone; "Z" ok) or unix seconds; None if neither."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return from_unix(value)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def no_messages_error(path: Path | str, fmt: str, hint: str) -> ExportFormatError:
    return ExportFormatError(f"No {fmt} messages found in {path}. {hint}")
