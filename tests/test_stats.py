"""compute_stats on hand-made conversations with known answers; plot_stats writes a PNG."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from clonekit.formats import parse_export
from clonekit.records import Conversation, Message
from clonekit.stats import compute_stats, find_emoji, plot_stats


def msg(author, text, day, kind="text"):
    return Message("", text, author, datetime(2024, 3, day, 12, 0, tzinfo=timezone.utc), kind=kind)


def sample():
    a = Conversation("a", [
        msg("Ann", "hi 👋", 1), msg("Bob", "hello there, how are you doing today?", 1),
        msg("Ann", "good 😂😂", 2), msg("Ann", "", 2, kind="media"), msg("Bob", "👍🏽", 2, kind="sticker"),
        msg("", "Ann pinned a message", 2, kind="service"),
    ])
    b = Conversation("b", [msg("Bob", "x" * 600, 3), msg("Cat", "❤️ ok", 3), Message("", "no time", "Cat")])
    return [a, b]


def test_known_answers():
    s = compute_stats(iter(sample()))  # an iterator is consumed once
    assert s["conversations"] == 2 and s["messages"] == 9 and s["counted_messages"] == 8
    assert s["per_sender"] == {"Ann": 3, "Bob": 3, "Cat": 2}
    assert s["per_kind"] == {"text": 6, "media": 1, "sticker": 1, "service": 1}
    assert s["per_day"] == {"2024-03-01": 2, "2024-03-02": 3, "2024-03-03": 2}
    # text lengths: "hi 👋"=4, 37, "good 😂😂"=7, 600, "❤️ ok"=5, "no time"=7
    assert dict(zip(s["length_histogram"]["labels"], s["length_histogram"]["counts"])) == {
        "1-5": 2, "6-10": 2, "11-20": 0, "21-50": 1, "51-100": 0, "101-200": 0, "201-500": 0, ">500": 1}
    assert s["top_emoji"] == [["😂", 2], ["👋", 1], ["👍🏽", 1], ["❤️", 1]]
    assert s["first_message"] == "2024-03-01T12:00:00+00:00" and s["last_message"] == "2024-03-03T12:00:00+00:00"


def test_empty_and_emoji():
    s = compute_stats([])
    assert s["conversations"] == 0 and s["per_sender"] == {} and s["top_emoji"] == []
    assert find_emoji("🇷🇺 flag, 1️⃣ keycap, 👩‍💻 zwj, → not emoji, ✓ no") == ["🇷🇺", "1️⃣", "👩\u200d💻"]


def test_plot(tmp_path):
    sample_export = Path(__file__).parent.parent / "data_samples" / "telegram" / "result.json"
    s = compute_stats(parse_export(sample_export))
    assert s["per_sender"]["Алексей Смирнов"] > s["per_sender"]["Marina Volkova"]
    out = plot_stats(s, tmp_path / "plots" / "stats.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    empty = plot_stats(compute_stats([]), tmp_path / "empty.png")
    assert empty.exists()
