"""The three records that flow through the pipeline.

Every export parser returns `Conversation`s of `Message`s; `dataset.py` turns
them into `Example`s (the rows of train.jsonl). Later stages never learn where
a conversation came from.

    >>> m = Message(role="user", content="hi", author="Alice")
    >>> Conversation(id="tg:1", messages=[m]).authors()
    ['Alice']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# What a message is, as the parser saw it. Only "text" (and "sticker", which
# carries its emoji) become training text; the dataset stage counts the rest.
KINDS = ("text", "sticker", "media", "service", "forward", "deleted", "bot", "other")


@dataclass
class Message:
    """One message. `role` is "user"/"assistant"/"system" once roles are assigned;
    parsers leave it "" and fill `author` with the sender's display name."""

    role: str
    content: str
    author: str = ""
    timestamp: datetime | None = None
    author_id: str = ""
    kind: str = "text"
    id: str = ""
    reply_to: str = ""
    edited: bool = False
    media: str = ""  # e.g. "photo", "voice_message": what a media placeholder stood for


@dataclass
class Conversation:
    """A chat (or a piece of one) with its messages in time order.

    `skipped` counts what the parser could not read (reason -> count) and
    `problems` keeps a few examples of it ("file:line: why"), so that nothing
    is dropped silently.
    """

    id: str
    messages: list[Message] = field(default_factory=list)
    source: str = ""  # file the conversation came from
    format: str = ""  # "telegram", "whatsapp", ...
    title: str = ""
    participants: list[str] = field(default_factory=list)
    owner: str = ""  # the export owner's display name, when the export says
    owner_id: str = ""
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def authors(self) -> list[str]:
        """Distinct authors in order of first appearance."""
        seen: dict[str, None] = {}
        for m in self.messages:
            seen.setdefault(m.author, None)
        return list(seen)


@dataclass
class Example:
    """One training row: the chat messages (OpenAI style) the model learns from.

    The persona's turns have role "assistant"; the loss is taken on them.
    """

    messages: list[dict[str, str]]
    conversation_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "conversation_id": self.conversation_id, **({"meta": self.meta} if self.meta else {})}
