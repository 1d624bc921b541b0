"""Chat exports -> `Conversation`s: one parser per export, one entry point.

    detect_format(path) -> "telegram" | "telegram_html" | "whatsapp" | "vk" | "discord" | "messenger"
                           | "instagram" | "openai_jsonl" | "sharegpt" | "alpaca" | "csv"
    parse_export(path, fmt=None) -> Iterator[Conversation]   (streaming: one per chat / dataset row)

`path` is a file, a folder (every export of the detected kind inside it is
read) or a .zip of either (the text files are unpacked to a temporary folder;
media are left in the zip). Chat parsers leave `Message.role` "" and set the
author; ready datasets come with roles set. Bad lines are counted in
`Conversation.skipped`; bad inputs raise `InputError`/`ExportFormatError` with
a one-line message that says what to do.

Run: `python -c "from clonekit.formats import *; print(sum(len(c.messages) for c in parse_export('result.json')))"`

    >>> from clonekit.storage import data_samples_dir
    >>> detect_format(data_samples_dir() / "telegram" / "result.json")
    'telegram'
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ClonekitError, ExportFormatError, InputError
from ..records import Conversation
from . import detect
from .datasets import parse_csv_chat, parse_dataset
from .detect import FORMATS
from .discord import parse_discord
from .messenger import parse_messenger
from .telegram import HINT as TELEGRAM_HINT
from .telegram import parse_telegram
from .telegram_html import parse_telegram_html
from .vk import parse_vk
from .whatsapp import parse_whatsapp

__all__ = ["FORMATS", "detect_format", "parse_export"]

PARSERS: dict[str, Callable[[Path], Iterator[Conversation]]] = {
    "telegram": parse_telegram,
    "telegram_html": parse_telegram_html,
    "whatsapp": parse_whatsapp,
    "vk": parse_vk,
    "discord": parse_discord,
    "openai_jsonl": lambda p: parse_dataset(p, "openai_jsonl"),
    "sharegpt": lambda p: parse_dataset(p, "sharegpt"),
    "alpaca": lambda p: parse_dataset(p, "alpaca"),
    "csv": parse_csv_chat,
}
UNKNOWN = ("not a chat export clonekit can read (looked for Telegram JSON/HTML, WhatsApp .txt, VK archive, "
           "DiscordChatExporter JSON, Messenger/Instagram JSON, OpenAI/ShareGPT/Alpaca datasets, CSV "
           "timestamp,sender,text). " + TELEGRAM_HINT + " Or name the format with --format.")


def detect_format(path: str | Path) -> str:
    """The export format of a file, folder or .zip; raises ExportFormatError if none fits."""
    path = _existing(path)
    if _is_zip(path):
        try:
            with zipfile.ZipFile(path) as zf:
                fmt = detect.pick(detect.scan_zip(zf))
        except zipfile.BadZipFile as e:
            raise InputError(f"{path}: not a readable zip ({e}). Download or copy it again.") from None
    elif path.is_dir():
        fmt = detect.pick(detect.scan_folder(path))
    else:
        with open(path, "rb") as f:
            fmt = detect.sniff_file(str(path), f.read(detect.HEAD))
        if fmt == "messenger" and "instagram" in str(path).lower():
            fmt = "instagram"
    if fmt is None:
        raise ExportFormatError(f"{path}: {UNKNOWN}")
    return fmt


def parse_export(path: str | Path, fmt: str | None = None) -> Iterator[Conversation]:
    """Stream the Conversations of an export (a file, a folder or a .zip).

    Problems with the input as a whole (missing, empty, unknown format) raise
    here, before the first conversation; broken JSON raises when reached.
    """
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"Unknown format {fmt!r}; use one of: {', '.join(FORMATS)} (or leave it out to detect).")
    path = _existing(path)
    fmt = fmt or detect_format(path)
    if _is_zip(path):
        return _parse_zip(path, fmt)
    if path.is_dir():
        files = detect.scan_folder(path).get(fmt, [])
        if not files:
            raise ExportFormatError(f"{path}: no {fmt} export inside this folder. Pass the export file itself, "
                                    f"or leave the format out to detect it.")
        return _parse_units(detect.units(fmt, files), fmt)
    return _parse_units([path], fmt)


def _parse_units(units: list[Path], fmt: str) -> Iterator[Conversation]:
    if fmt in ("messenger", "instagram"):
        yield from parse_messenger(units, fmt)
        return
    for unit in units:
        yield from PARSERS[fmt](unit)


def _parse_zip(path: Path, fmt: str) -> Iterator[Conversation]:
    """Unpack the text files of a zip to a temp folder, parse, report paths inside the zip."""
    tmp = Path(tempfile.mkdtemp(prefix="clonekit-zip-"))
    root = tmp / path.stem  # keeps "WhatsApp Chat - Marina" as the folder name for the title
    shown, real = str(path), str(root)
    try:
        with zipfile.ZipFile(path) as zf:
            rels = detect.scan_zip(zf).get(fmt, [])
            if not rels:
                raise ExportFormatError(f"{path}: no {fmt} export inside this zip. Leave the format out to detect it.")
            wanted = set(rels)
            if fmt in detect.FOLDER_FORMATS:  # all pages of the chosen folders
                folders = {r.rpartition("/")[0] for r in rels}
                wanted |= {n for n in zf.namelist() if n.rpartition("/")[0] in folders
                           and n.lower().endswith(detect.SUFFIXES)}
            for name in sorted(wanted):
                zf.extract(name, root)
        files = [root / r for r in rels]
        try:
            for conv in _parse_units(detect.units(fmt, files), fmt):
                conv.source = conv.source.replace(real, shown)
                conv.problems = [p.replace(real, shown) for p in conv.problems]
                yield conv
        except ClonekitError as e:
            if isinstance(e, InputError):
                raise type(e)(str(e).replace(real, shown)) from None
            raise
    except zipfile.BadZipFile as e:
        raise InputError(f"{path}: not a readable zip ({e}). Download or copy it again.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist. Check the path to your export (a file, a folder or a .zip).")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes). Export the chat again; the copy may have failed.")
    return path


def _is_zip(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix.lower() == ".zip":
        return True
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"
