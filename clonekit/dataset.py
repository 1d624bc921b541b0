"""Stage 1: chat exports -> training examples (train.jsonl, validation.jsonl, manifest.json).

Pipeline, each step a pure function on records:
  parse (formats/) -> assign roles (--me is the assistant, others become "User")
  -> filter (service, media, forwards, ... counted) -> scrub personal data (privacy/)
  -> merge consecutive messages of one sender -> split at time gaps
  -> examples (each persona reply with up to N prior turns) -> split by conversation.

Run as: clonekit prepare data_samples/telegram/result.json --out runs/data
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import storage
from .chat_template import DEFAULT_SYSTEM_PROMPT
from .config import check, config_to_dict, opt, save_config
from .errors import ClonekitError, InputError
from .privacy import PrivacyConfig
from .records import Conversation, Example, Message

READY_FORMATS = ("openai_jsonl", "sharegpt", "alpaca")
_URL = re.compile(r"https?://\S+|www\.\S+")


@dataclass
class DatasetConfig:
    inputs: list[str] = opt([], "export files or folders (Telegram result.json, WhatsApp .txt, VK/Discord/Messenger exports, .zip, JSONL datasets)")
    format: str = opt("auto", "export format: auto (detect), telegram, telegram_html, whatsapp, vk, discord, messenger, instagram, openai_jsonl, sharegpt, alpaca, csv")
    out_dir: str = opt("runs/data", "folder for train.jsonl, validation.jsonl and manifest.json")
    me: list[str] = opt([], "who to clone: display name or id, one per export if they differ (default: the export's owner)")
    gap_hours: float = opt(4.0, "start a new conversation after this many hours of silence")
    context_turns: int = opt(6, "how many earlier turns each example keeps as context")
    merge_consecutive: bool = opt(True, "join consecutive messages of one sender into one turn")
    system_prompt: str = opt(DEFAULT_SYSTEM_PROMPT, "system message at the start of every example ('' for none)")
    validation_fraction: float = opt(0.1, "share of conversations held out for validation (whole conversations: no leakage)")
    seed: int = opt(42, "seed of the train/validation split")
    max_message_chars: int = opt(2000, "drop messages longer than this (pasted logs, articles); counted as too_long")
    drop_links_only: bool = opt(True, "drop messages that are only a link")
    keep_stickers: bool = opt(True, "keep stickers as their emoji")
    tokenizer: str = opt("auto", "tokenizer used to count tokens in the manifest ('auto': the default base model's; 'none': estimate)")
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig, metadata={"help": "personal-data scrubbing (on by default)", "cli": False})
    privacy_report: bool = opt(False, "write privacy_report.tsv listing each scrubbed item (type, place, masked value) for review")
    canaries: int = opt(0, "plant N random canary secrets in training replies (canaries.json) to measure memorization later with `clonekit eval --leakage`")
    canary_repeats: int = opt(1, "how many training examples carry each canary")

    def __post_init__(self):
        if isinstance(self.privacy, dict):
            self.privacy = PrivacyConfig(**self.privacy)
        if isinstance(self.inputs, (str, Path)):
            self.inputs = [str(self.inputs)]
        if isinstance(self.me, str):
            self.me = [self.me] if self.me else []
        problems = []
        if self.gap_hours <= 0:
            problems.append(f"gap_hours must be > 0, got {self.gap_hours}")
        if self.context_turns < 0:
            problems.append(f"context_turns must be >= 0, got {self.context_turns}")
        if not 0 <= self.validation_fraction < 1:
            problems.append(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.canaries < 0 or self.canary_repeats < 1:
            problems.append(f"canaries must be >= 0 and canary_repeats >= 1, got {self.canaries} and {self.canary_repeats}")
        if self.max_message_chars < 1:
            problems.append(f"max_message_chars must be >= 1, got {self.max_message_chars}")
        check(problems, "DatasetConfig")


@dataclass
class PrepareResult:
    out_dir: Path
    train_path: Path
    validation_path: Path
    manifest: dict[str, Any]


# ---------------------------------------------------------------- persona and roles


def _matches(m: Message, wanted: set[str]) -> bool:
    return m.author.casefold() in wanted or (m.author_id != "" and m.author_id.casefold() in wanted)


def persona_names(conv: Conversation, me: list[str]) -> set[str]:
    """The lower-cased names/ids that identify the persona in this conversation."""
    if me:
        return {x.casefold() for x in me}
    if conv.owner or conv.owner_id:
        return {x.casefold() for x in (conv.owner, conv.owner_id) if x}
    return set()


def _top_senders(counts: Counter, n: int = 5) -> str:
    return ", ".join(f"{a!r} ({k} messages)" for a, k in counts.most_common(n)) or "no senders"


def assign_roles(conv: Conversation, wanted: set[str]) -> Conversation:
    """Persona -> "assistant"; everyone else -> "user", renamed to neutral "User"/"User 2"...

    In group chats the other speakers' neutral names prefix their text so the
    model can tell them apart; names never reach the training data.
    """
    others: dict[str, str] = {}
    for m in conv.messages:
        if m.kind != "service" and m.author and not _matches(m, wanted) and m.author not in others:
            others[m.author] = "User" if not others else f"User {len(others) + 1}"
    group = len(others) > 1
    out = []
    for m in conv.messages:
        if _matches(m, wanted):
            out.append(replace(m, role="assistant", author="Me"))
        else:
            alias = others.get(m.author, "User")
            content = f"{alias}: {m.content}" if group and m.content and m.kind in ("text", "sticker") else m.content
            out.append(replace(m, role="user", author=alias, content=content))
    return replace(conv, messages=out)


def with_roles(conv: Conversation, me: list[str]) -> Conversation | None:
    """The conversation with roles set: ready datasets as they are, chats via `assign_roles`;
    None when the persona does not speak in it. LookupError when nothing says who the persona is."""
    if conv.format in READY_FORMATS or all(m.role for m in conv.messages):
        return conv
    wanted = persona_names(conv, me)
    if not wanted:
        raise LookupError(conv.id)
    if not any(_matches(m, wanted) for m in conv.messages if m.kind != "service"):
        return None
    return assign_roles(conv, wanted)


# ---------------------------------------------------------------- filters


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[\W_]+", " ", text).strip()


def filter_messages(conv: Conversation, config: DatasetConfig, skipped: Counter) -> Conversation:
    """Keep the messages that are someone's own words; count every other one by reason."""
    kept: list[Message] = []
    last_norm: dict[str, str] = {}
    for m in conv.messages:
        reason = None
        if m.kind == "service":
            reason = "service"
        elif m.kind == "sticker" and not config.keep_stickers:
            reason = "sticker"
        elif m.kind in ("media", "forward", "deleted", "bot", "other"):
            reason = {"media": "media_only"}.get(m.kind, m.kind)
        elif not m.content.strip():
            reason = "empty"
        elif len(m.content) > config.max_message_chars:
            reason = "too_long"
        elif config.drop_links_only and not _URL.sub("", m.content).strip():
            reason = "link_only"
        else:
            norm = _normalize(m.content)
            if norm and last_norm.get(m.author) == norm:
                reason = "near_duplicate"
            last_norm[m.author] = norm
        if reason:
            skipped[reason] += 1
        else:
            kept.append(m)
    return replace(conv, messages=kept)


# ---------------------------------------------------------------- turns and conversations


def _elapsed(a, b) -> timedelta:
    """b - a; when only one of them has a time zone (a CSV row without an offset), compare wall clocks."""
    if (a.tzinfo is None) != (b.tzinfo is None):
        a, b = a.replace(tzinfo=None), b.replace(tzinfo=None)
    return b - a


def public_conversation_id(cid: str) -> str:
    """The id written to the JSONL: the format and a hash, never the chat's title or a person's name.

    >>> public_conversation_id("whatsapp:Marina Volkova#2")
    'whatsapp:4f6833e9784d#2'
    """
    base, _, piece = cid.partition("#")
    fmt, _, rest = base.partition(":")
    digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:12]
    return f"{fmt if rest else 'chat'}:{digest}" + (f"#{piece}" if piece else "")


def split_by_gap(conv: Conversation, gap_hours: float) -> list[Conversation]:
    """Cut a chat wherever nobody wrote for `gap_hours`; pieces get ids `<id>#<n>`."""
    gap = timedelta(hours=gap_hours)
    pieces: list[list[Message]] = []
    for m in conv.messages:
        prev = pieces[-1][-1] if pieces else None
        if prev is None or (m.timestamp and prev.timestamp and _elapsed(prev.timestamp, m.timestamp) > gap):
            pieces.append([m])
        else:
            pieces[-1].append(m)
    return [replace(conv, id=f"{conv.id}#{i}", messages=p) for i, p in enumerate(pieces)]


def merge_consecutive(conv: Conversation) -> Conversation:
    """Join runs of messages with one role into one turn (newline-separated).

    In a group chat the other speakers share the "user" role (each line keeps
    its "User 2: " prefix), so turns strictly alternate, as templates like
    Gemma's require.
    """
    out: list[Message] = []
    for m in conv.messages:
        if out and out[-1].role == m.role and (m.role or out[-1].author == m.author):
            out[-1] = replace(out[-1], content=out[-1].content + "\n" + m.content)
        else:
            out.append(m)
    return replace(conv, messages=out)


def build_examples(conv: Conversation, config: DatasetConfig) -> list[Example]:
    """One example per persona turn: up to `context_turns` earlier turns, then the reply.

    Earlier persona turns inside the context carry `"weight": 0` (OpenAI's
    fine-tuning convention): each reply is learned exactly once.
    """
    turns = [{"role": m.role, "content": m.content} for m in conv.messages if m.role in ("user", "assistant")]
    examples = []
    for i, t in enumerate(turns):
        if t["role"] != "assistant":
            continue
        start = max(0, i - config.context_turns)
        while start < i and turns[start]["role"] != "user":
            start += 1  # context opens with the other person, as a chat template expects
        if start == i:
            continue  # a reply with nothing to reply to (conversation opener)
        window = [dict(x, weight=0) if x["role"] == "assistant" else dict(x) for x in turns[start:i]] + [dict(t)]
        if config.system_prompt:
            window.insert(0, {"role": "system", "content": config.system_prompt})
        examples.append(Example(messages=window, conversation_id=public_conversation_id(conv.id), meta={"format": conv.format}))
    return examples


def split_conversations(ids: list[str], fraction: float, seed: int) -> set[str]:
    """Validation conversation ids, chosen by a stable hash (adding data does not reshuffle old ones)."""
    if fraction <= 0 or len(ids) < 2:
        return set()

    def h(cid: str) -> float:
        return int(hashlib.sha256(f"{seed}:{cid}".encode()).hexdigest()[:12], 16) / 16**12

    ranked = sorted(ids, key=h)
    n = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    return set(ranked[:n])


def conversation_key(conv: Conversation) -> str:
    """Fingerprint for removing the same conversation found in two exports."""
    h = hashlib.sha256()
    for m in conv.messages:
        h.update(f"{m.timestamp.isoformat() if m.timestamp else ''}|{m.content}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------- the stage


def count_tokens(examples: list[Example], tokenizer) -> int:
    if tokenizer is None:  # rough estimate when no tokenizer is available
        return sum(len(m["content"]) // 3 + 4 for e in examples for m in e.messages)
    from .chat_template import render_conversation

    return sum(len(render_conversation(tokenizer, e.messages)[0]) for e in examples)


def _load_tokenizer(name: str):
    if name == "none":
        return None
    try:
        from .models import load_tokenizer, resolve_base_model

        return load_tokenizer(resolve_base_model(name if name != "auto" else "auto", device="cpu"))
    except Exception:  # counting tokens is a nicety; an estimate is recorded instead
        return None


def run_prepare(config: DatasetConfig) -> PrepareResult:
    """Parse, clean, scrub and split every input; write the dataset folder."""
    from tqdm.auto import tqdm

    from .formats import parse_export
    from .privacy import redact_conversation, write_privacy_report

    if not config.inputs:
        raise InputError("No export given. Pass the export file(s), e.g.: clonekit prepare result.json --out runs/data")
    by_sender: Counter = Counter()
    skipped: Counter = Counter()
    scrubbed: Counter = Counter()
    findings: list = []
    problems: list[str] = []
    segments: list[Conversation] = []
    seen: set[str] = set()
    n_chats = 0
    for i, path in enumerate(config.inputs):
        me = [config.me[i]] if len(config.me) == len(config.inputs) > 1 else config.me
        senders: Counter = Counter()  # this export's senders, for messages about --me
        # Parsers stream: chats are read one at a time, never the whole export at once.
        chats = parse_export(path, None if config.format == "auto" else config.format)
        for conv in tqdm(chats, desc=f"prepare {Path(path).name}", unit="chat", delay=2):  # a bar only when it takes a while
            n_chats += 1
            skipped.update(conv.skipped)
            problems.extend(conv.problems[:5])
            for m in conv.messages:
                if m.kind != "service":
                    by_sender[m.author or m.role] += 1
                    if m.author:
                        senders[m.author] += 1
            try:
                roled = with_roles(conv, me)
            except LookupError:
                raise ClonekitError(f"{path}: the export does not say whose it is. Pass --me NAME; senders: {_top_senders(senders)}.") from None
            if roled is None:
                skipped["chats_without_persona"] += 1
                continue
            kept = filter_messages(roled, config, skipped)
            if config.privacy.enabled:
                kept, counts, found = redact_conversation(kept, config.privacy)
                scrubbed.update(counts)
                findings.extend(found)
            if config.merge_consecutive:
                kept = merge_consecutive(kept)
            for seg in split_by_gap(kept, config.gap_hours):
                key = conversation_key(seg)
                if key in seen:
                    skipped["duplicate_conversations"] += 1
                    continue
                seen.add(key)
                segments.append(seg)
    if config.me and not any(m.role == "assistant" for s in segments for m in s.messages):
        raise ClonekitError(f"No messages from {', '.join(config.me)} in {', '.join(config.inputs)}. Check the spelling; senders found: {_top_senders(by_sender)}.")
    val_ids = split_conversations([s.id for s in segments if any(m.role == "assistant" for m in s.messages)], config.validation_fraction, config.seed)
    splits: dict[str, list[Example]] = {"train": [], "validation": []}
    for seg in segments:
        splits["validation" if seg.id in val_ids else "train"].extend(build_examples(seg, config))
    if not splits["train"]:
        raise ClonekitError(f"No training examples could be built from {', '.join(config.inputs)}: the persona never replies to anyone. Check --me, or lower --gap-hours.")
    out = Path(config.out_dir)
    paths = storage.dataset_paths(out)
    planted = []
    if config.canaries:
        from .privacy import insert_canaries

        try:
            splits["train"], planted = insert_canaries(splits["train"], n=config.canaries, seed=config.seed, repeats=config.canary_repeats)
        except ValueError as e:
            raise ClonekitError(f"--canaries {config.canaries}: {e}. Plant fewer canaries.") from None
        storage.write_json(out / "canaries.json", [{"prefix": c.prefix, "secret": c.secret, "examples": list(c.examples)} for c in planted])
    for name in ("train", "validation"):
        storage.write_jsonl(paths[name], (e.to_json() for e in splits[name]))
    tok = _load_tokenizer(config.tokenizer)
    manifest = {
        "inputs": [str(p) for p in config.inputs],
        "messages_by_sender": dict(by_sender.most_common()),
        "skipped": dict(sorted(skipped.items())),
        "scrubbed": dict(sorted(scrubbed.items())),
        "chats": n_chats,
        "conversations": {"train": len({e.conversation_id for e in splits["train"]}), "validation": len({e.conversation_id for e in splits["validation"]})},
        "examples": {k: len(v) for k, v in splits.items()},
        "tokens": {k: count_tokens(v, tok) for k, v in splits.items()},
        "tokens_estimated": tok is None,
        "problems": problems[:20],
        "canaries": len(planted),
    }
    storage.write_json(paths["manifest"], manifest)
    save_config(config, paths["config"])
    if config.privacy_report:
        write_privacy_report(findings, paths["privacy_report"])
    return PrepareResult(out, paths["train"], paths["validation"], manifest)


def scrubbed_probes(data_dir: str | Path, limit: int = 32) -> tuple[list[tuple[list[dict[str, str]], str, str]], str]:
    """Re-read the exports a dataset was built from and rebuild the probes of `privacy.scrubbed_item_probes`
    for items scrubbed from the persona's messages (values stay in memory). Returns (probes, note)."""
    from .config import load_config
    from .formats import parse_export
    from .privacy import redact_conversation, scrubbed_item_probes

    cfg_path = storage.dataset_paths(data_dir)["config"]
    if not cfg_path.exists():
        return [], f"no {cfg_path}: cannot find the exports to probe"
    config = load_config(DatasetConfig, cfg_path)
    missing = [p for p in config.inputs if not Path(p).exists()]
    if missing or not config.privacy.enabled:
        return [], (f"the exports are not here any more ({', '.join(missing)})" if missing else "scrubbing was off")
    probes: list = []
    for i, path in enumerate(config.inputs):
        me = [config.me[i]] if len(config.me) == len(config.inputs) > 1 else config.me
        for conv in parse_export(path, None if config.format == "auto" else config.format):
            try:
                roled = with_roles(conv, me)
            except LookupError:
                roled = None
            if roled is None:
                continue
            kept = filter_messages(roled, config, Counter())
            redacted, _, found = redact_conversation(kept, config.privacy)
            probes += scrubbed_item_probes(kept, redacted, found, config.context_turns)
            if len(probes) >= limit:
                return probes[:limit], ""
    return probes, "" if probes else "nothing was scrubbed from the persona's messages"


def load_examples(data_dir: str | Path, split: str = "train") -> list[dict[str, Any]]:
    """Rows of train.jsonl / validation.jsonl as plain dicts ({"messages": [...]})."""
    return storage.read_jsonl(storage.dataset_paths(data_dir)[split])


__all__ = ["DatasetConfig", "PrepareResult", "run_prepare", "build_examples", "assign_roles", "filter_messages",
           "split_by_gap", "merge_consecutive", "split_conversations", "load_examples", "config_to_dict"]
