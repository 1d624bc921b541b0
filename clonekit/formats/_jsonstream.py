"""Stream the `"messages": [...]` arrays of a large JSON export, in bounded memory.

Used by the Telegram and Discord parsers. `ijson.items(f, "chats.list.item.messages.item")`
alone cannot say where one chat ends and the next begins, and a Python loop
over `ijson.parse` events is 3x slower than a C parser building the dicts. So:

* An unescaped `"messages": [` can only be an object key (a quote inside a JSON
  string is always escaped), so a bytes regex finds where each array starts.
  What precedes the key (chat name, type, id; Discord's guild and channel) is
  handed to the caller as raw bytes (`ArrayStart.header`) to read as it likes.
* Pretty-printed files (Telegram Desktop and DiscordChatExporter write them)
  take the fast path: a raw newline never occurs inside a JSON string, so
  "newline + the array's item indent + `},` + newline + indent + `{`" can only
  be the boundary between two messages. The array is cut at such boundaries
  into ~512 KB batches, each decoded by orjson (the stdlib's C `json.loads` when orjson
  is missing or refuses a batch; both beat ijson's builder: bench/parse_throughput.py).
* Otherwise (compact JSON, or a layout the fast path does not recognise) the
  array goes to an ijson `items` generator (C backend when installed) through a
  file-like view that stops at the next key; the parser sees the rest of the
  enclosing object after the array and stops with yajl's "trailing garbage",
  which is how we know the array is complete.

    >>> import io
    >>> [(start, list(items)) for start, items in stream_arrays(io.BytesIO(b'{"id": 1, "messages": [{"a": 1}]}'), "x")]
    [(ArrayStart(offset=22, header=b'{"id": 1, '), [{'a': 1}])]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import chain
from typing import Any, BinaryIO, Iterable, Iterator

import ijson

from ..errors import ExportFormatError

try:  # orjson decodes 3-4x faster than the stdlib; anything it refuses goes through json.loads below
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover
    _fast_loads = json.loads

KEY = re.compile(rb'"messages"\s*:\s*\[')
PRETTY = re.compile(rb"\[(\r?\n[ \t]*)\{")  # "[", newline + indent, "{": an indented array of objects
CHUNK = 1 << 20  # bytes read from the file at a time
HEADER = 1 << 16  # bytes before each array kept as its header
BATCH = 1 << 19  # pretty path: bytes of messages decoded per json.loads call
GIVE_UP = 64 << 20  # pretty path: no message boundary in this many bytes -> let ijson read the array
_DONE = ("trailing garbage", "Additional data")  # yajl / pure-python backend wording
NOT_UTF8 = "not UTF-8"


@dataclass
class ArrayStart:
    """A `"messages"` array begins at byte `offset` (its "["); `header` = bytes just before the key."""

    offset: int
    header: bytes


def stream_arrays(f: BinaryIO, path: object) -> Iterator[tuple[ArrayStart, Iterator[Any]]]:
    """Yield (ArrayStart, items) per `"messages"` array; consume `items` before the next step.

    Raises ExportFormatError naming the byte offset for broken or truncated JSON.
    """
    s = _Splitter(f)
    while True:
        start = s.next_array()
        if start is None:
            break
        nl = s.pretty_indent()
        if nl:
            yield start, chain.from_iterable(_batches(s, nl, path))
        else:
            yield start, _items(s, start.offset, path)
    if s.found and s.tail.rstrip()[-1:] not in (b"}", b"]"):
        raise _truncated(path, s.size)


def _items(s: _Splitter, arr: int, path: object) -> Iterator[Any]:
    """The array's items through ijson (compact files, and the fast path's fallback)."""
    try:
        yield from ijson.items(s, "item", use_float=True, buf_size=1 << 16)
    except ijson.JSONError as e:
        why = str(e).split("\n", 1)[0]
        if any(x in why for x in _DONE):
            return  # the parser read past the array's "]": it is complete
        if "premature EOF" in why or "Incomplete" in why:
            if s.key is None:
                raise _truncated(path, s.size) from None
            raise _broken(path, arr, s.key, "this messages array never ends") from None
        raise _broken(path, arr, s.pos, why) from None
    if s.key is None and s.at_eof():
        raise _truncated(path, s.size)  # the array ended exactly at the end of the file


def _batches(s: _Splitter, nl: bytes, path: object) -> Iterator[Iterable[Any]]:
    """Lists of items of a pretty-printed array, cut at message boundaries (see the module doc)."""
    sep = nl + b"}," + nl + b"{"
    end = re.compile(re.escape(nl) + rb"\}\s*\]")
    s.pos += 1 + len(nl)  # the first "{"
    while True:
        rel, j = s.pos - s.wstart, -1
        while True:
            if len(s.win) - rel > BATCH:
                j = s.win.find(sep, rel + BATCH)
                if j != -1:
                    break
            if len(s.win) - rel > GIVE_UP or not s._load():
                break
            rel = s.pos - s.wstart
        start = s.pos
        if j != -1:
            # usually a full batch; if the array ended before j, j is in the next chat and
            # json.loads fails on the "]" + chat header in between: then cut at the real end
            items = _loads(s.win, rel, j + len(nl) + 1, start, path, strict=False)
            if items is not None:
                s.pos = s.wstart + j + len(sep) - 1
                yield items
                continue
        e = end.search(s.win, rel, len(s.win) if j == -1 else j)
        if e is None:
            if j != -1:
                _loads(s.win, rel, j + len(nl) + 1, start, path)  # raises with the error's byte offset
            s.inject = b"["  # no boundary where one should be: ijson reads the rest of the array
            yield _items(s, s.pos, path)
            return
        s.pos = s.wstart + e.end()
        yield _loads(s.win, rel, e.start() + len(nl) + 1, start, path)
        return


def _loads(win: bytes, a: int, b: int, offset: int, path: object, strict: bool = True) -> list | None:
    """Decode win[a:b] ("{...},{...}", file bytes from `offset`) as a list; None on a JSON error
    unless strict (then ExportFormatError naming the byte offset)."""
    buf = bytearray(memoryview(win)[a - 1:b + 1])  # one copy; the bytes around become "[" and "]"
    buf[0], buf[-1] = 0x5B, 0x5D
    try:
        return _fast_loads(buf)
    except ValueError:  # orjson's JSONDecodeError subclasses it; json's own verdict decides below
        pass
    try:
        return json.loads(buf)
    except (json.JSONDecodeError, UnicodeDecodeError):
        if not strict:
            return None
    batch = bytes(buf[1:-1])
    try:
        text = batch.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, _where(path, offset + e.start)) from None
    try:
        json.loads("[" + text + "]")
    except json.JSONDecodeError as e:
        where = _where(path, offset + len(text[:max(e.pos - 1, 0)].encode("utf-8")))
        raise ExportFormatError(f"{path}: invalid JSON at {where} ({e.msg}). Export again; "
                                f"do not edit the file by hand.") from None
    raise AssertionError("json.loads failed on bytes but not on the same text")


class _Splitter:
    """The file in a sliding window: finds the keys, and is the file-like view ijson reads."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.win, self.wstart = b"", 0  # file bytes [wstart, wstart + len(win))
        self.pos = 0  # next byte to hand out
        self.search = 0  # look for the next key from here
        self.key: int | None = None  # file offset of the next key, once seen
        self.arr = 0
        self.found = 0
        self.eof = False
        self.inject = b""  # handed to ijson before the file bytes

    @property
    def size(self) -> int:
        return self.wstart + len(self.win)

    @property
    def tail(self) -> bytes:
        return self.win[-64:]

    def at_eof(self) -> bool:
        return self.eof and self.pos >= self.size

    def _load(self) -> bool:
        """Read the next chunk; keep what is not handed out yet (and HEADER bytes for headers)."""
        if self.eof:
            return False
        data = self.f.read(CHUNK)
        if not data:
            self.eof = True
            return False
        keep = max(min(self.pos - 16, self.size - HEADER), self.wstart)  # the byte before pos: see _loads
        self.win = self.win[keep - self.wstart:] + data
        self.wstart = keep
        return True

    def _find_key(self) -> None:
        m = KEY.search(self.win, max(self.search - self.wstart, 0))
        if m is None:
            self.search = max(self.search, self.wstart + len(self.win) - 64)  # a key may straddle the next read
        else:
            self.key, self.arr = self.wstart + m.start(), self.wstart + m.end() - 1

    def next_array(self) -> ArrayStart | None:
        """Skip to the next `"messages": [` (after the current array) and start handing it out."""
        self.search = max(self.search, self.pos)
        while self.key is None:
            self._find_key()
            self.pos = max(self.pos, self.search)  # what lies before is not ours: let the window slide
            if self.key is None and not self._load():
                return None
        k, arr = self.key - self.wstart, self.arr
        header = self.win[max(k - HEADER, 0):k]
        self.pos, self.search, self.key = arr, arr + 1, None
        self.found += 1
        return ArrayStart(arr, header)

    def pretty_indent(self) -> bytes:
        """Newline + indent of the array's items when the array is pretty-printed, else b""."""
        while self.size - self.pos < 4096 and self._load():
            pass
        m = PRETTY.match(self.win, self.pos - self.wstart)
        if m is None:
            return b""
        nl = m.group(1)
        close = self.win.find(nl + b"}", m.end())  # the first item must end at the same indent
        if close == -1 or not re.match(rb",\s*\{|\s*\]", self.win[close + len(nl) + 1:close + len(nl) + 1 + 256]):
            return b""
        return nl

    def read(self, n: int) -> bytes:
        if n == 0:
            return b""  # ijson probes with read(0) for bytes vs str
        if self.inject:
            out, self.inject = self.inject, b""
            return out
        while True:
            end = self.size
            if self.pos < end:
                if self.key is None:
                    self._find_key()
                limit = end if self.key is None else min(end, self.key)
                if self.pos >= limit:
                    return b""
                take = min(n, limit - self.pos)
                i = self.pos - self.wstart
                self.pos += take
                return self.win[i:i + take]
            if not self._load():
                return b""


def _truncated(path: object, size: int) -> ExportFormatError:
    return ExportFormatError(
        f"{path}: truncated JSON, it ends at byte offset {size} in the middle of the messages "
        f"(the export or the copy was interrupted). Export again and wait until it finishes."
    )


def _not_utf8(path: object, where: str) -> ExportFormatError:
    return ExportFormatError(f"{path}: not valid UTF-8 at {where}: the export was re-saved in another "
                             f"encoding. Use the file exactly as exported (or export it again).")


def _broken(path: object, start: int, end: int, why: str) -> ExportFormatError:
    found = locate_json_error(path, start, end)
    if found and found[1] == NOT_UTF8:
        return _not_utf8(path, found[0])
    where, why = found or (f"between byte offsets {start} and {end}", why)
    return ExportFormatError(f"{path}: invalid JSON at {where} ({why}). Export again; do not edit the file by hand.")


def locate_json_error(path: object, start: int, end: int, limit: int = 64 << 20) -> tuple[str, str] | None:
    """Exact place of a JSON error inside file bytes [start, end) (an array), found with the
    slower stdlib decoder; None when the region is too big or the decoder disagrees."""
    if not isinstance(path, (str, bytes)) and not hasattr(path, "__fspath__") or end - start > limit:
        return None
    with open(path, "rb") as f:  # type: ignore[arg-type]
        f.seek(start)
        data = f.read(end - start)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(data) - 4:
            return _where(path, start + e.start), NOT_UTF8
        text = data[:e.start].decode("utf-8")
    try:
        json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as e:
        if e.pos >= len(text) - 1:
            return None
        return _where(path, start + len(text[:e.pos].encode("utf-8"))), e.msg
    return None


def _where(path: object, offset: int) -> str:
    line = 1
    with open(path, "rb") as f:  # type: ignore[arg-type]
        left = offset
        while left > 0:
            block = f.read(min(left, CHUNK))
            if not block:
                break
            line += block.count(b"\n")
            left -= len(block)
    return f"byte offset {offset} (line {line})"
