"""Privacy by default: replace personal data in chat text with typed placeholders.

This stage runs between parsing and the dataset stage and is on unless
`PrivacyConfig(enabled=False)`. It finds e-mails, phone numbers (checked with
`phonenumbers`), payment cards (Luhn), IBANs (mod-97), Russian passports, INN and
SNILS (checksums), IP addresses, URLs that carry tokens, API keys, passwords and
high-entropy strings, crypto wallets (BTC base58check/bech32, ETH, TRON), the
chat participants' names inside messages (with Russian case and diminutive
forms), a user blocklist, and optionally person names from an NER model.

Placeholder scheme: each type has a tag (`<PHONE>`, `<CARD>`, `<EMAIL>`, ...).
Within one conversation the first distinct value of a type becomes `<PHONE>`,
the second `<PHONE_2>`, the third `<PHONE_3>`; the same value (compared after
normalising: E.164 phones, lower-case e-mails, digits of cards, the participant
a name form belongs to) gets the same placeholder every time.

Nothing written holds a raw value: `Finding` keeps the type, the position
(conversation id, message index, char offsets in the original text) and a
masked value ("+7 9** ***-**-67"). Run it through `clonekit prepare`
(`--no-phones`, `--blocklist ...`, `--privacy-report`) or directly:

    >>> text, found = redact_text("call +7 916 123-45-67 or ivan@example.com", PrivacyConfig())
    >>> text
    'call <PHONE> or <EMAIL>'
    >>> [(f.type, f.masked) for f in found]
    [('phone', '+7 9** ***-**-67'), ('email', 'i***@e******.com')]

After training, `canary_exposure` (the exposure test of Carlini et al. 2019,
"The Secret Sharer") and `leakage_probe` check what the model memorised.

The package, one job per module (this file: the config, the records and the
redact_* entry points; everything public is importable from `clonekit.privacy`):
checksums.py (Luhn, INN, SNILS, IBAN, wallets), patterns.py (regexes and shape
tests), names.py (name forms, diminutives, name and blocklist matchers),
scanner.py (candidates and overlaps), ner.py (optional NER models), report.py
(masking and the review file), leakage.py (canaries and leakage probes).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Callable, Iterable, Sequence

from ..config import check, opt
from ..records import Conversation
from .checksums import iban_ok, inn_ok, luhn_ok, snils_ok, wallet_ok
from .leakage import Canary, canary_exposure, insert_canaries, leakage_probe, scrubbed_item_probes
from .names import name_forms
from .ner import _add_ner, _ner_backend  # noqa: F401  (_ner_backend: tests clear its cache)
from .report import mask_value, write_privacy_report
from .scanner import TYPES, _resolve, _Scanner

__all__ = [
    "TYPES", "PrivacyConfig", "Finding", "RedactionState", "redact_text", "redact_conversation", "redact_conversations",
    "write_privacy_report", "mask_value", "name_forms", "luhn_ok", "inn_ok", "snils_ok", "iban_ok", "wallet_ok",
    "Canary", "insert_canaries", "canary_exposure", "scrubbed_item_probes", "leakage_probe",
]


@dataclass
class PrivacyConfig:
    """What to scrub before training. Defaults: everything on except NER."""

    enabled: bool = opt(True, "scrub personal data before training (turn off only for text you could publish as it is)")
    emails: bool = opt(True, "replace e-mail addresses with <EMAIL>")
    phones: bool = opt(True, "replace phone numbers (validated with the phonenumbers library) with <PHONE>")
    cards: bool = opt(True, "replace payment card numbers (Luhn-checked) with <CARD>")
    ibans: bool = opt(True, "replace IBANs (mod-97 checked) with <IBAN>")
    ru_passports: bool = opt(True, "replace Russian passport series and numbers with <PASSPORT>")
    inn: bool = opt(True, "replace Russian INN (10 or 12 digits, checksum) with <INN>")
    snils: bool = opt(True, "replace Russian SNILS (checksum) with <SNILS>")
    ips: bool = opt(True, "replace IPv4/IPv6 addresses with <IP> (not versions written 'v1.2.3.4' or 'version 1.2.3.4')")
    secret_urls: bool = opt(True, "replace URLs carrying tokens (token=, key=, sig=, access_token=, user:pass@...) with <URL>")
    api_keys: bool = opt(True, "replace API keys (sk-, ghp_, xoxb-, AKIA...), 'password: ...' values and high-entropy strings with <SECRET>")
    crypto: bool = opt(True, "replace crypto wallet addresses (BTC, ETH, TRON) with <WALLET>")
    names: bool = opt(True, "replace chat participants' names (plus Russian case and diminutive forms) inside messages with <NAME>")
    ner: bool = opt(False, "also replace person names found by an NER model (natasha for Russian, spaCy en_core_web_sm "
                           "for English); skipped silently when neither is installed: pip install natasha")
    blocklist: list[str] = opt([], "extra words or phrases to replace with <REDACTED> (names, addresses...); case-insensitive")
    allowlist: list[str] = opt([], "values never replaced, e.g. a public support phone or a name that is also a common word")
    phone_regions: list[str] = opt(["RU", "KZ", "BY", "UA", "US", "GB", "DE"],
                                   "regions tried for phone numbers written without +country code (ISO 3166 codes)")

    def __post_init__(self) -> None:
        import phonenumbers

        problems = []
        for name in ("blocklist", "allowlist", "phone_regions"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                problems.append(f"{name} must be a list of strings, got {value!r}")
        if not problems:
            self.phone_regions = [r.upper() for r in self.phone_regions]
            bad = [r for r in self.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
            if bad:
                problems.append(f"phone_regions has unknown region codes {bad}; use ISO codes such as RU, US, GB")
            short = [w for w in self.blocklist if len(w.strip()) < 2]
            if short:
                problems.append(f"blocklist entries must have at least 2 characters, got {short}")
        check(problems, "PrivacyConfig")


@dataclass(frozen=True)
class Finding:
    """One scrubbed item. `start`/`end` index the original message text;
    `out_start` indexes the redacted text. The raw value is never kept."""

    type: str
    conversation_id: str
    message_index: int
    start: int
    end: int
    masked: str
    placeholder: str
    out_start: int = 0


@dataclass
class RedactionState:
    """Placeholders handed out in one conversation: (type, normalised value) -> placeholder.

    Holds normalised values in memory only (`repr` hides them); never save it.
    """

    seen: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    distinct: Counter = field(default_factory=Counter)

    def placeholder(self, type_: str, key: str) -> str:
        ph = self.seen.get((type_, key))
        if ph is None:
            tag = TYPES[type_][1]
            self.distinct[tag] += 1
            k = self.distinct[tag]
            ph = self.seen[(type_, key)] = f"<{tag}>" if k == 1 else f"<{tag}_{k}>"
        return ph


def _apply(text: str, cands: list, state: RedactionState, conv_id: str = "", index: int = 0) -> tuple[str, list[Finding]]:
    spans = _resolve(cands, text)
    pieces, findings, pos, out_len = [], [], 0, 0
    for s, e, type_, key in spans:
        ph = state.placeholder(type_, key)
        pieces.append(text[pos:s])
        out_len += s - pos
        findings.append(Finding(type_, conv_id, index, s, e, mask_value(text[s:e], type_), ph, out_len))
        pieces.append(ph)
        out_len += len(ph)
        pos = e
    pieces.append(text[pos:])
    return "".join(pieces), findings


def redact_text(text: str, config: PrivacyConfig, state: RedactionState | None = None,
                names: Sequence[str] = ()) -> tuple[str, list[Finding]]:
    """Scrub one text; pass the same `state` for texts of one conversation.

    >>> redact_text("Марина, позвони Марине: 8 916 123-45-67", PrivacyConfig(), names=["Марина Соколова"])[0]
    '<NAME>, позвони <NAME>: <PHONE>'
    """
    if not config.enabled or not text:
        return text, []
    state = state if state is not None else RedactionState()
    cands = _Scanner(config, names).scan(text)
    if config.ner:
        cands = _add_ner(text, cands)
    return _apply(text, cands, state)


def _clone(obj: Any, _new: Callable = object.__new__) -> Any:
    """copy.copy for plain dataclass records, 3x faster."""
    new = _new(type(obj))
    new.__dict__ = obj.__dict__.copy()
    return new


_GET_CONTENT, _GET_AUTHOR = attrgetter("content"), attrgetter("author")
_SEP = "\n\x1e\n"  # between messages when a conversation is scanned as one text; no pattern crosses it


def redact_conversation(conv: Conversation, config: PrivacyConfig) -> tuple[Conversation, Counter, list[Finding]]:
    """Scrub every message of a conversation; returns (new conversation, counts per type, findings).

    The input is left untouched: scrubbed messages are new `Message`s, while
    messages with nothing to scrub are shared with the input rather than copied
    (copying every message cost a quarter of the run time; clonekit treats records
    as immutable, so copy a message before changing it in place). Names come from
    `conv.participants` and the message authors; placeholders are consistent
    across the conversation.
    """
    if not config.enabled:
        return copy.deepcopy(conv), Counter(), []
    msgs = conv.messages
    contents = list(map(_GET_CONTENT, msgs))
    if None in contents:
        contents = [c or "" for c in contents]
    names = {*conv.participants, *map(_GET_AUTHOR, msgs)}
    names.discard("")
    joined = _SEP.join(contents)  # one scan over the whole chat: per-message overhead dominates otherwise
    per_msg: dict[int, list] = {}
    i, start, pos = 0, 0, 0
    for s, e, type_, key in sorted(_Scanner(config, tuple(names)).scan(joined)):
        if s >= start + len(contents[i]):  # walk forward to the message holding s
            i += joined.count("\x1e", pos, s)
            start = joined.rfind("\x1e", 0, s) + 2
            pos = s
        assert start <= s and e <= start + len(contents[i]), (s, e, i)
        per_msg.setdefault(i, []).append((s - start, e - start, type_, key))
    if config.ner:  # per message: the models work on sentences, not on a whole chat
        for i, c in enumerate(contents):
            found = _add_ner(c, per_msg.get(i, []))
            if found:
                per_msg[i] = found
    state, findings = RedactionState(), []
    messages = list(msgs)
    for i in sorted(per_msg):
        messages[i] = _clone(msgs[i])
        messages[i].content, found = _apply(contents[i], per_msg[i], state, conv.id, i)
        findings += found
    out = _clone(conv)
    out.messages = messages
    out.participants, out.skipped, out.problems = list(conv.participants), dict(conv.skipped), list(conv.problems)
    return out, Counter(f.type for f in findings), findings


def redact_conversations(convs: Iterable[Conversation], config: PrivacyConfig,
                         progress: bool = True) -> tuple[list[Conversation], Counter, list[Finding]]:
    """`redact_conversation` over many chats with one progress bar; counts and findings summed."""
    from tqdm.auto import tqdm

    convs = list(convs)
    out, counts, findings = [], Counter(), []
    for conv in tqdm(convs, desc="privacy", unit="chat", disable=not progress or len(convs) < 20):
        new, c, f = redact_conversation(conv, config)
        out.append(new)
        counts += c
        findings += f
    return out, counts, findings
