"""What may be written about scrubbed items: masked values and the review file.

`mask_value` keeps a value's shape and a few characters ("+7 9** ***-**-67");
`write_privacy_report` writes one masked `Finding` per line (TSV) for the user
to review (`clonekit prepare --privacy-report`). No raw value is ever written.

Run the examples: python -m pytest --doctest-modules clonekit/privacy/report.py
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from . import Finding

_KEEP = {"phone": (2, 2), "card": (1, 4), "iban": (2, 2), "passport": (0, 2), "inn": (0, 2), "snils": (0, 2),
         "ip": (1, 0), "wallet": (3, 2), "name": (1, 0), "blocked": (1, 0), "secret": (0, 0)}


def mask_value(value: str, type_: str) -> str:
    """Hide a value for the review file, keeping its shape and a few characters.

    >>> mask_value("+7 916 123-45-67", "phone"), mask_value("4111 1111 1111 1111", "card")
    ('+7 9** ***-**-67', '4*** **** **** 1111')
    """
    if type_ == "email" and "@" in value:
        local, _, domain = value.rpartition("@")
        labels = domain.split(".")
        return local[:1] + "*" * (len(local) - 1) + "@" + ".".join(
            [lab[:1] + "*" * (len(lab) - 1) for lab in labels[:-1]] + labels[-1:])
    if type_ == "url":
        m = re.match(r"([a-zA-Z]+://|www\.)([^/?#@]*@)?([^/?#]*)", value)
        head = (m.group(1) + m.group(3)) if m else ""
        return head + re.sub(r"\w", "*", value[m.end():] if m else value)
    head, tail = _KEEP.get(type_, (1, 0))
    if type_ == "secret" and len(value) >= 16:
        head = 3
    starred, n = _ALNUM.subn("*", value)  # [^\W_] is exactly str.isalnum
    if n < 6 or head + tail > n // 2:  # short values show at most their first character
        head, tail = min(head, 1), 0
    a = b = 0  # value[:a] shows the first `head` alnum chars, value[len - b:] the last `tail`
    if head:
        m = _HEADS[head].match(value)
        a = m.end() if m else 0  # no match: no alnum char at all
    if tail:
        b = _HEADS[tail].match(value[::-1]).end()
    return value[:a] + starred[a:len(value) - b] + value[len(value) - b:]


_ALNUM = re.compile(r"[^\W_]")
_HEADS = {k: re.compile(r"(?:[\W_]*[^\W_]){%d}" % k) for k in range(1, 5)}  # up to the k-th alnum char


def write_privacy_report(findings: Iterable[Finding], path: str | Path) -> Path:
    """Write the review file: one masked item per line (TSV), never a raw value."""
    from ..storage import atomic_write_text

    findings = list(findings)
    counts = Counter(f.type for f in findings)
    lines = [
        "# clonekit privacy report: what was replaced before training. Values are masked; positions are",
        "# character offsets in the original message text. Turn a type off with e.g. --no-phones; keep a value with --allowlist.",
        "# counts: " + (", ".join(f"{t}={n}" for t, n in sorted(counts.items())) or "nothing found"),
        "conversation_id\tmessage_index\tstart\tend\ttype\tplaceholder\tmasked",
    ]
    clean = str.maketrans({"\t": " ", "\n": " ", "\r": " "})
    lines += [f"{f.conversation_id}\t{f.message_index}\t{f.start}\t{f.end}\t{f.type}\t{f.placeholder}\t{f.masked.translate(clean)}"
              for f in findings]
    return atomic_write_text(path, "\n".join(lines) + "\n")
