"""Describe parsed chats: who writes how much, when, how long, with which emoji.

Run: `python -c "from clonekit.formats import parse_export; from clonekit.stats import *;
s = compute_stats(parse_export('data_samples/telegram/result.json')); plot_stats(s, 'stats.png'); print(s['per_sender'])"`

`compute_stats` is pure (conversations in, a JSON-ready dict out); `plot_stats`
draws it as a 2x2 figure with matplotlib's Agg backend. Service messages
(joins, calls, pins) are left out of every count except `per_kind`; message
lengths are measured on text messages only; emoji come from text and sticker
messages. Days are taken in each timestamp's own zone (UTC for Telegram).

    >>> from clonekit.records import Conversation, Message
    >>> s = compute_stats([Conversation("c", [Message("", "hi 🙂", "Ann"), Message("", "yo", "Bob")])])
    >>> s["per_sender"], s["top_emoji"]
    ({'Ann': 1, 'Bob': 1}, [['🙂', 1]])
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from .records import Conversation

LENGTH_BINS = (5, 10, 20, 50, 100, 200, 500)  # upper bounds (characters, inclusive); the last bin is open
TOP_EMOJI = 10
_PICTO = ("\U0001F000-\U0001F3FA\U0001F400-\U0001FAFF\u2600-\u2604\u2607-\u2712\u2714-\u2716\u2718-\u27BF"
          "\u2B50\u2B55\u2B1B\u2B1C\u231A\u231B\u23E9-\u23F3\u23F8-\u23FA\u2934\u2935\u3030\u303D\u3297\u3299")
_TONE = "\U0001F3FB-\U0001F3FF"
# (approximate, stdlib only: ✓ ✗ ★ ☆ and arrows are text symbols, not emoji)
# one emoji = a flag pair, a keycap, or a pictograph with its variation selector, skin tone and ZWJ chain
EMOJI = re.compile(
    "[\U0001F1E6-\U0001F1FF]{2}"
    "|[#*0-9]\uFE0F?\u20E3"
    f"|[{_PICTO}]\uFE0F?[{_TONE}]?(?:\u200D[{_PICTO}]\uFE0F?[{_TONE}]?)*"
)


def find_emoji(text: str) -> list[str]:
    """The emoji in `text`, ZWJ sequences and skin tones kept whole.

    >>> find_emoji("ok 👍🏽 ❤️ 👨‍👩‍👧 →")
    ['👍🏽', '❤️', '👨\u200d👩\u200d👧']
    """
    return EMOJI.findall(text)


def length_label(i: int) -> str:
    lo = 1 if i == 0 else LENGTH_BINS[i - 1] + 1
    return f"{lo}-{LENGTH_BINS[i]}" if i < len(LENGTH_BINS) else f">{LENGTH_BINS[-1]}"


def compute_stats(conversations: Iterable[Conversation]) -> dict[str, Any]:
    """Counts over the conversations (consumes an iterator once)."""
    n_conv = n_msg = 0
    senders: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    days: Counter[str] = Counter()
    emoji: Counter[str] = Counter()
    lengths = [0] * (len(LENGTH_BINS) + 1)
    first = last = None
    for conv in conversations:
        n_conv += 1
        for m in conv.messages:
            n_msg += 1
            kinds[m.kind] += 1
            if m.kind == "service":
                continue
            senders[m.author or m.role or "(unknown)"] += 1
            if m.timestamp is not None:
                days[m.timestamp.date().isoformat()] += 1
                ts = m.timestamp.isoformat()
                first = ts if first is None or ts < first else first
                last = ts if last is None or ts > last else last
            if m.kind == "text" and m.content:
                n = len(m.content)
                lengths[next((i for i, hi in enumerate(LENGTH_BINS) if n <= hi), len(LENGTH_BINS))] += 1
            if m.kind in ("text", "sticker"):
                emoji.update(find_emoji(m.content))
    return {
        "conversations": n_conv,
        "messages": n_msg,
        "counted_messages": sum(senders.values()),
        "per_sender": dict(senders.most_common()),
        "per_kind": dict(kinds.most_common()),
        "per_day": dict(sorted(days.items())),
        "length_histogram": {"labels": [length_label(i) for i in range(len(lengths))], "counts": lengths},
        "top_emoji": [[e, n] for e, n in emoji.most_common(TOP_EMOJI)],
        "first_message": first,
        "last_message": last,
    }


def _emoji_label(e: str) -> str:
    # DejaVu Sans has no emoji glyphs: label bars with the Unicode name instead
    return unicodedata.name(e[0], f"U+{ord(e[0]):04X}").lower()[:22]


def plot_stats(stats: dict[str, Any], out_png: str | Path) -> Path:
    """Save a 2x2 figure (senders, messages per day, lengths, emoji) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    senders = list(stats["per_sender"].items())[:10][::-1]
    ax[0, 0].barh([s for s, _ in senders], [n for _, n in senders], color="tab:blue")
    ax[0, 0].set_title(f"Messages per sender ({stats['counted_messages']} in {stats['conversations']} chats)")
    days = stats["per_day"]
    ax[0, 1].bar(range(len(days)), list(days.values()), color="tab:green")
    step = max(1, len(days) // 8)
    ax[0, 1].set_xticks(range(0, len(days), step), [d[5:] for d in list(days)[::step]], rotation=45)
    ax[0, 1].set_title("Messages per day")
    hist = stats["length_histogram"]
    ax[1, 0].bar(hist["labels"], hist["counts"], color="tab:orange")
    ax[1, 0].set_title("Text message length (characters)")
    ax[1, 0].tick_params(axis="x", rotation=45)
    top = stats["top_emoji"][::-1]
    ax[1, 1].barh([_emoji_label(e) for e, _ in top], [n for _, n in top], color="tab:purple")
    ax[1, 1].set_title("Top emoji")
    for a in ax.flat:
        if not a.has_data():
            a.text(0.5, 0.5, "no data", ha="center", va="center", transform=a.transAxes)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
