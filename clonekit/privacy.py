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
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter, mul
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .config import check, opt
from .records import Conversation, Example

# type -> (PrivacyConfig flag, placeholder tag). Counters and reports use the type names.
TYPES: dict[str, tuple[str, str]] = {
    "email": ("emails", "EMAIL"), "phone": ("phones", "PHONE"), "card": ("cards", "CARD"),
    "iban": ("ibans", "IBAN"), "passport": ("ru_passports", "PASSPORT"), "inn": ("inn", "INN"),
    "snils": ("snils", "SNILS"), "ip": ("ips", "IP"), "url": ("secret_urls", "URL"),
    "secret": ("api_keys", "SECRET"), "wallet": ("crypto", "WALLET"), "name": ("names", "NAME"),
    "blocked": ("blocklist", "REDACTED"),
}
# Which of two overlapping finds wins (lower first): the more specific check.
_PRIORITY = {"blocked": 0, "url": 1, "email": 2, "secret": 3, "wallet": 4, "iban": 5, "card": 6, "snils": 7,
             "passport": 7, "inn": 7, "phone": 7, "ip": 8, "name": 9}


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


# ---------------------------------------------------------------- checksums


def luhn_ok(digits: str) -> bool:
    """Luhn check digit of a card number.

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        x = ord(ch) - 48
        if i % 2:
            x = x * 2 - 9 if x > 4 else x * 2
        total += x
    return total % 10 == 0


def _card_brand_ok(d: str) -> bool:
    n, p2, p3, p4 = len(d), int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if 2200 <= p4 <= 2204 or p2 == 62 or 3528 <= p4 <= 3589 or p4 == 6011 or p2 == 65 or 644 <= p3 <= 649:
        return 16 <= n <= 19  # Mir, UnionPay, JCB, Discover
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):
        return 14 <= n <= 19  # Diners
    return p2 in (50, 56, 57, 58, 63, 67) and 12 <= n <= 19  # Maestro


def inn_ok(d: str) -> bool:
    """Russian INN checksum (10 digits: organisations, 12: people).

    >>> inn_ok("7707083893"), inn_ok("7707083894")
    (True, False)
    """
    def ck(ds: str, ws: tuple[int, ...]) -> int:
        return sum(map(mul, map(int, ds), ws)) % 11 % 10

    if d[:2] == "00":
        return False
    if len(d) == 10:
        return ck(d, (2, 4, 10, 3, 5, 9, 4, 6, 8)) == int(d[9])
    if len(d) == 12:
        return ck(d, (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == int(d[10]) and ck(d, (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == int(d[11])
    return False


def snils_ok(d: str) -> bool:
    """Russian SNILS checksum (11 digits).

    >>> snils_ok("11223344595")
    True
    """
    if len(d) != 11 or d[:9] <= "001001998":
        return False
    s = sum(int(c) * (9 - i) for i, c in enumerate(d[:9]))
    c = s if s < 100 else (0 if s in (100, 101) else s % 101)
    return (0 if c == 100 else c) == int(d[9:])


_IBAN_LEN = dict(AD=24, AE=23, AL=28, AT=20, AZ=28, BA=20, BE=16, BG=22, BH=22, BR=29, BY=28, CH=21, CR=22, CY=28, CZ=24,
                 DE=22, DK=18, DO=28, EE=20, EG=29, ES=24, FI=18, FO=18, FR=27, GB=22, GE=22, GI=23, GL=18, GR=27, GT=28,
                 HR=21, HU=28, IE=22, IL=23, IQ=23, IS=26, IT=27, JO=30, KW=30, KZ=20, LB=28, LC=32, LI=21, LT=20, LU=20,
                 LV=21, MC=27, MD=24, ME=22, MK=19, MR=27, MT=31, MU=30, NL=18, NO=15, PK=24, PL=28, PS=29, PT=25, QA=29,
                 RO=24, RS=22, SA=24, SC=31, SE=24, SI=19, SK=24, SM=27, ST=25, SV=28, TL=23, TN=24, TR=26, UA=29, VA=22,
                 VG=24, XK=20)


def iban_ok(s: str) -> bool:
    """IBAN length per country and mod-97 check.

    >>> iban_ok("DE89370400440532013000")
    True
    """
    if _IBAN_LEN.get(s[:2]) != len(s) or not s.isalnum():
        return False
    return int("".join(str(int(ch, 36)) for ch in s[4:] + s[:4])) % 97 == 1


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _b58check(s: str) -> bytes | None:
    n = 0
    for ch in s:
        i = _B58.find(ch)
        if i < 0:
            return None
        n = n * 58 + i
    raw = b"\0" * (len(s) - len(s.lstrip("1"))) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    payload, ck = raw[:-4], raw[-4:]
    ok = len(raw) > 4 and hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == ck
    return payload if ok else None


def _bech32_ok(s: str) -> bool:
    if s.lower() != s and s.upper() != s:
        return False
    s = s.lower()
    hrp, _, data = s.rpartition("1")
    vals = [_B32.find(c) for c in data]
    if hrp not in ("bc", "tb", "ltc") or len(vals) < 6 or -1 in vals:
        return False
    chk = 1
    for v in [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + vals:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
            chk ^= g if (top >> i) & 1 else 0
    return chk in (1, 0x2BC830A3)  # bech32, bech32m


def wallet_ok(s: str) -> bool:
    """BTC (base58check or bech32), ETH (0x + 40 hex) or TRON (base58check, T...)."""
    if s[:2] == "0x":
        return len(s) == 42 and all(c in "0123456789abcdefABCDEF" for c in s[2:])
    if s[:3].lower() in ("bc1", "tb1"):
        return 14 <= len(s) <= 90 and _bech32_ok(s)
    if s[0] in "13T" and 26 <= len(s) <= 35:
        p = _b58check(s)
        return p is not None and len(p) == 21 and p[0] in ((0x41,) if s[0] == "T" else (0, 5))
    return False


# ---------------------------------------------------------------- patterns

# One pass per family of candidates. Each pattern starts with a literal or a small
# ASCII character class (not \d, which costs a Unicode lookup per char), so the regex
# engine skips plain, mostly Cyrillic, text in C; boundary checks sit after the first
# character for the same reason. Splitting passes this way measured faster than one
# alternation of everything (bench/privacy_scrub.py).
_P_URL = re.compile("://")  # a literal: the engine jumps between them; the scheme is checked after
_P_WWW = re.compile(r"www\.")
_P_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d\d(?:[ ]?[A-Z0-9]){10,32}")
_URL_SCHEME = re.compile(r"(?i:https?|ftp)$")
_URL_BODY = re.compile(r"[^\s<>\"'«»]+")
_P_PW = re.compile(r"(?:password|Password|PASSWORD|passwd|pwd|pass|Pass|PASS|pin|Pin|PIN|пароль|Пароль|ПАРОЛЬ|пароля|"
                   r"Пароля|паролем|пасс|пин|Пин|ПИН)(?:[ -]?(?:code|Code|CODE|код|коду|Код))?(?![\w-])")
_PASSPORT_MARKED = re.compile(r"\d\d ?\d\d[ \t]*(?:№|N|No\.?|номер|н\.)[ \t]*\d{6}", re.I)
# Long tokens: keys, wallets, high-entropy strings, full IPv6.
_P_TOK = re.compile(r"[A-Za-z0-9_](?<![\w+/=\-.:].)[A-Za-z0-9_+/=\-.:]{19,}")
_IBAN_SPAN = re.compile(r"[A-Z]{2}\d\d(?:[ ]?[A-Z0-9]){10,32}")
_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d\d(?: [A-Z0-9]{4})* ?$")
_NUM = re.compile(r"[+(0-9](?<![\w/#№+].)(?<!\w[-.].)(?:(?<=\+)\(?\d|(?<=\()\d|(?<=\d))"
                  r"(?:(?:[ \u00a0().\-]{0,2}\d){7,}"  # a run of 8+ digits,
                  r"|(?<=\d)\d{0,2}(?:\.\d{1,3}){3}(?![\d.])"  # an IPv4,
                  r"|(?<=\d)\d ?\d\d[ \t]*(?:№|N|No\.?|номер|н\.)[ \t]*\d{6}(?!\d))")  # or "45 10 № 123456"
_GROUP = re.compile(r"[^ \u00a0]+")
_DROPPABLE = re.compile(r"\d{1,2}|(?:19|20)\d\d|[0-3]?\d\.[01]?\d\.(?:\d{4}|\d\d)|\d{4}-[01]?\d-[0-3]?\d")
_IP6_LEFT = re.compile(r"[0-9A-Fa-f:]{1,40}$")
_IP6_RIGHT = re.compile(r"[0-9A-Fa-f:]{0,40}")
_NONDIGIT = re.compile(r"\D")
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
_DATE = re.compile(r"[0-3]?\d\.[01]?\d\.(?:\d{4}|\d\d)|[0-3]?\d([-/])[01]?\d\1\d{4}|\d{4}([-./])[01]?\d\2[0-3]?\d")
_DATE_GROUP = re.compile(r"(?<!\S)(?:" + _DATE.pattern + r")(?!\S)")  # a whole space-separated group
_CARD_FMT = re.compile(r"\d{13,19}|\d{4}([ \-])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?|\d{4}([ \-])\d{6}\2\d{4,5}")
_SNILS_FMT = re.compile(r"\d{3}-\d{3}-\d{3}[ \-]\d{2}|\d{3} \d{3} \d{3} \d{2}")
_PASSPORT_FMT = re.compile(r"\d{2} ?\d{2} \d{6}")
_VERSION_CTX = re.compile(r"(?<!\w)(?:version|versión|ver\.?|версия|версии|версию|build|сборка|v)[ \t]*$", re.I)
_NEG_CTX = re.compile(r"заказ|order|№|#|артикул|арт\.|sku|трек|track|invoice|накладн|ticket|тикет|\bid\b|серийн|serial|"
                      r"isbn|ean|штрих|barcode|ref\b|код товара|партия|batch|lot\b", re.I)
_PHONE_CTX = re.compile(r"тел|phone|номер|call|звон|whats|ватсап|вотсап|viber|вайбер|моб|mobile|cell|sms|смс")
_PASSPORT_CTX = re.compile(r"паспорт|passport|сери")
_KEY_CTX = re.compile(r"key|token|secret|api|ключ|токен|секрет|пароль|password|pass")
_TRUNK0 = {"GB", "DE", "UA", "FR", "IT", "AT", "CH", "NL", "BE", "PL", "TR", "IL", "AU", "NZ", "IE", "SE", "FI", "ES", "JP"}
_KEY = re.compile(r"""(?:
  sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{20,}
 |(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}
 |gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}
 |xox[abposr]-[A-Za-z0-9\-]{10,}
 |(?:AKIA|ASIA)[0-9A-Z]{16}
 |AIza[0-9A-Za-z_\-]{35}
 |glpat-[A-Za-z0-9_\-]{20,}|hf_[A-Za-z0-9]{30,}|ya29\.[A-Za-z0-9_\-]{20,}|y0_[A-Za-z0-9_\-]{30,}
 |eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}
 |\d{8,10}:AA[A-Za-z0-9_\-]{33}
)""", re.X)
_EMAIL_LEFT = re.compile(r"[\w.%+\-]{1,64}$")
_EMAIL_RIGHT = re.compile(r"(?:[\w\-]+\.)+[^\W\d_]{2,24}(?![\w\-])")
_PW_TAIL = re.compile(r"(?:[ \t]+(?:от|для|for|to|of)[ \t]+[^\s:=]{1,30})?[ \t]*"
                      r"(?P<sep>[:=]|[—–-](?=[ \t])|is\b|это\b|будет\b|такой\b)?[ \t]*[«\"'“]?(?P<v>[^\s,;«»\"'“”]+)", re.I)
_PW_STOP = {"не", "нет", "нету", "забыл", "забыла", "забыли", "помню", "сменил", "сменила", "такой", "такое", "какой",
            "тот", "же", "был", "была", "тоже", "надо", "нужен", "нужно", "есть", "от", "для", "пустой", "простой",
            "changed", "forgot", "reset", "the", "is", "was", "not", "same", "and", "for", "your", "my", "required",
            "manager", "protected", "again", "please", "expired", "wrong", "incorrect", "неверный", "неправильный"}
_URL_SECRET_PARAMS = {"token", "access_token", "refresh_token", "id_token", "auth", "auth_token", "authorization", "key",
                      "api_key", "apikey", "api-key", "sig", "signature", "secret", "client_secret", "password", "passwd",
                      "pwd", "pass", "session", "sessionid", "session_id", "sid", "jwt", "otp", "x-amz-signature",
                      "x-amz-credential", "x-amz-security-token", "private_token", "oauth_token", "access_key",
                      "secret_key", "private_key", "auth_key"}
_URL_USERINFO = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
_TRAIL = ".,;:!?)]}»\"'"


_PIECES = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+|.")


def _looks_random(t: str, relaxed: bool = False) -> bool:
    """High-entropy token test: mixed character classes, short camel-case pieces, high Shannon entropy.

    `relaxed` applies when a word such as "key" or "токен" stands just before the token.
    """
    n = len(t)
    if n < 20 or n > 300 or not all(c.isascii() and (c.isalnum() or c in "+/=_-") for c in t):
        return False
    kinds = (any(c.isupper() for c in t), any(c.islower() for c in t), any(c.isdigit() for c in t))
    # Identifiers split into few long camel-case words ("ThisIsMyProject2023": 3.8 chars a piece);
    # random base62 into short pieces (1.9 on average, under 3.4 for 99% of 20-char strings).
    piece = n / len(_PIECES.findall(t))
    ent = -sum(k / n * math.log2(k / n) for k in Counter(t).values())
    if relaxed:
        return sum(kinds) >= 2 and piece <= 4.0 and ent >= 3.2
    if all(c in "0123456789abcdef" for c in t) or all(c in "0123456789ABCDEF" for c in t):
        return False  # hashes and commit ids: only with a "key"/"token" word before them
    return (all(kinds) or (kinds[2] and n >= 32)) and piece <= (3.4 if n < 28 else 3.0) and ent >= 3.5


# ---------------------------------------------------------------- names

_DIMINUTIVES = [
    "Александр Александра Саша Шура Санёк Саня", "Алексей Лёша Леша Алёша", "Анастасия Настя", "Анна Аня Анечка",
    "Андрей Андрюша", "Артём Артем Тёма", "Борис Боря", "Валентина Валя", "Виктор Витя", "Виктория Вика",
    "Владимир Вова Володя", "Владислав Влад", "Галина Галя", "Григорий Гриша", "Дарья Даша", "Денис Дэн",
    "Дмитрий Дима", "Евгений Евгения Женя", "Екатерина Катя", "Елена Лена", "Елизавета Лиза", "Иван Ваня",
    "Илья Илюша", "Ирина Ира", "Кирилл Киря", "Константин Костя", "Ксения Ксюша", "Людмила Люда",
    "Максим Макс", "Маргарита Рита", "Мария Маша", "Михаил Миша", "Надежда Надя", "Наталья Наталия Наташа",
    "Николай Коля", "Ольга Оля", "Павел Паша", "Пётр Петр Петя", "Полина Поля", "Роман Рома", "Светлана Света",
    "Сергей Серёжа Сережа", "Софья София Соня", "Степан Стёпа", "Татьяна Таня", "Тимофей Тима", "Юлия Юля",
    "Юрий Юра", "Ярослав Слава", "Вячеслав Слава", "Станислав Стас", "Василий Вася", "Георгий Жора",
]
_GROUPS = {w: grp.split() for grp in _DIMINUTIVES for w in grp.split()}
# Names that are also ordinary words: matched only when capitalised.
_COMMON_WORD_NAMES = {"вера", "надежда", "любовь", "роман", "лев", "мира", "слава", "мир", "ян", "ника", "роза", "майя",
                      "лиля", "поля", "тима", "макс", "влад", "рита"}
_NOT_NAMES = {"deleted", "account", "user", "unknown", "telegram", "bot", "group", "chat", "me", "я", "the", "and"}
_CYR = re.compile(r"[а-яё]", re.I)


def name_forms(name: str) -> set[str]:
    """Case forms of one Russian first name or surname (cheap rules, not a morphology engine).

    >>> sorted(name_forms("Марина"))
    ['Марина', 'Марине', 'Мариной', 'Мариною', 'Марину', 'Марины']
    """
    forms = {name}
    low = name.lower()
    if not _CYR.search(name) or len(name) < 2:
        return forms
    stem, last = name[:-1], low[-1]
    if low.endswith(("ский", "цкий")):
        forms |= {name[:-2] + e for e in ("ого", "ому", "им", "ом")}
    elif low.endswith(("ская", "цкая")):
        forms |= {name[:-2] + e for e in ("ой", "ую")}
    elif low.endswith("ия"):
        forms |= {stem + e for e in ("и", "ю", "ей")}
    elif last == "я":
        forms |= {stem + e for e in ("и", "е", "ю", "ей", "ёй", "ею")}
    elif last == "а":
        hush = low[-2:-1] in tuple("гкхжшщчц")
        forms |= {stem + e for e in (("и" if hush else "ы"), "е", "у", "ой", "ою", *(("ей",) if low[-2:-1] in tuple("жшщчц") else ()))}
    elif last == "й":
        forms |= {stem + e for e in ("я", "ю", "ем", "е", "и")}
    elif last == "ь":
        forms |= {stem + e for e in ("я", "ю", "ем", "е", "и")}
    elif last not in "аеёиоуыэюя":
        forms |= {name + e for e in ("а", "у", "ом", "е", "ым", "ем")}
    return forms | {f.replace("ё", "е").replace("Ё", "Е") for f in forms}


def _name_words(participant: str) -> list[str]:
    return [w for w in re.findall(r"[^\W\d_]{2,}", participant) if w.lower() not in _NOT_NAMES]


@lru_cache(maxsize=4096)
def _participant_forms(participant: str) -> tuple[str, ...]:
    """Every written form of one participant's name words: cases, diminutives, upper and lower case."""
    forms: dict[str, None] = {}
    for word in _name_words(participant):
        base = word[:1].upper() + word[1:].lower() if word.isupper() or word.islower() else word
        variants = list(_GROUPS.get(base, [base]))
        variants += [v[:-1] + "ка" for v in variants if v.endswith("а") and _CYR.search(v)]  # Маринка, Машка
        for variant in variants:
            for form in sorted(name_forms(variant)):
                forms[form] = forms[form.upper()] = None
                if _CYR.search(form) and base.lower() not in _COMMON_WORD_NAMES and len(form) >= 3:
                    forms[form.lower()] = None
    return tuple(forms)


@lru_cache(maxsize=4096)
def _name_matcher(names: tuple[str, ...], allow: frozenset[str]) -> tuple[re.Pattern | None, dict[str, str]]:
    """A regex for the stems of every participant's name forms, and exact form -> participant.

    The regex only finds words that start with a stem ("Марин" finds "Марину" and
    "маринад"); the dict then keeps exact forms. A short alternation of stems
    compiles in well under a millisecond, which matters with thousands of small chats.
    """
    key_of: dict[str, str] = {}
    stems: dict[str, None] = {}
    for participant in sorted(names):
        forms = [f for f in _participant_forms(participant) if f.lower() not in allow]
        for f in forms:
            key_of.setdefault(f, participant)
        by_start: dict[str, list[str]] = {}
        for f in forms:
            by_start.setdefault(f[:3], []).append(f)
        for group in by_start.values():
            stems[os.path.commonprefix(group)] = None
    if not key_of:
        return None, {}
    pattern = "|".join(re.escape(st) for st in sorted(stems, key=len, reverse=True))
    return re.compile(f"(?:{pattern})\\w*"), key_of


@lru_cache(maxsize=64)
def _block_matcher(entries: tuple[str, ...]) -> tuple[re.Pattern | None, dict[str, str]]:
    key_of = {}
    for entry in entries:
        entry = " ".join(entry.split())
        forms = name_forms(entry) if " " not in entry else {entry}
        for f in forms:
            key_of.setdefault(f.lower(), entry.lower())
    if not key_of:
        return None, {}
    pattern = "|".join(re.escape(f).replace(r"\ ", r"\s+") for f in sorted(key_of, key=len, reverse=True))
    return re.compile(r"(?<!\w)(?:" + pattern + r")(?!\w)", re.I), key_of


def _compact(s: str) -> str:
    return "".join(c for c in s.lower() if c.isalnum())


@lru_cache(maxsize=64)
def _allow_keys(entries: tuple[str, ...]) -> frozenset[str]:
    keys = set()
    for e in entries:
        keys |= {e.lower().strip(), _compact(e)}
        digits = _NONDIGIT.sub("", e)
        if len(digits) >= 7:
            norm = _phone_norm(e, "RU")
            if norm:
                keys.add(norm)
    return frozenset(k for k in keys if k)


def _phone_norm(raw: str, region: str | None) -> str | None:
    import phonenumbers

    try:
        num = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(num):
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


# ---------------------------------------------------------------- masking

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
    n = sum(c.isalnum() for c in value)
    if n < 6 or head + tail > n // 2:  # short values show at most their first character
        head, tail = min(head, 1), 0
    out, i = [], 0
    for c in value:
        if c.isalnum():
            out.append(c if i < head or i >= n - tail else "*")
            i += 1
        else:
            out.append(c)
    return "".join(out)


# ---------------------------------------------------------------- scanning


class _Scanner:
    """Finds candidates in a text: list of (start, end, type, key)."""

    def __init__(self, config: PrivacyConfig, names: Sequence[str] = ()):
        self.on = {t for t, (flag, _) in TYPES.items() if t not in ("blocked", "name") and getattr(config, flag)}
        self.regions = list(config.phone_regions)
        self.allow = _allow_keys(tuple(config.allowlist))
        names = tuple(sorted(set(names)))
        self.name_re, self.name_key = _name_matcher(names, self.allow) if config.names and names else (None, {})
        self.block_re, self.block_key = _block_matcher(tuple(config.blocklist))

    def scan(self, text: str) -> list[tuple[int, int, str, str]]:
        out: list[tuple[int, int, str, str]] = []
        on = self.on
        urls = []
        if "url" in on or "secret" in on:
            for m in _P_URL.finditer(text):
                scheme = _URL_SCHEME.search(text, max(0, m.start() - 5), m.start())
                if scheme and not _word_before(text, scheme.start()):
                    s = scheme.start()
                    urls.append((s, self._url(text, s, _URL_BODY.match(text, s).end(), out)))
            for m in _P_WWW.finditer(text):
                s = m.start()
                if not _word_before(text, s, "/."):
                    urls.append((s, self._url(text, s, _URL_BODY.match(text, s).end(), out)))
        if "iban" in on:
            for m in _P_IBAN.finditer(text):
                self._iban(text, m.start(), m.end(), out)
        if "email" in on and "@" in text:
            for m in _AT.finditer(text):
                self._email(text, m.start(), out)
        if "secret" in on:
            for m in _P_PW.finditer(text):
                if not _word_before(text, m.start(), "-"):
                    self._password(text, m, out)
        if "ip" in on and "::" in text:
            for m in _DCOLON.finditer(text):
                self._ip6_around(text, m.start(), out)
        n_tok = len(out)
        for m in _P_TOK.finditer(text):
            self._token(text, m.start(), m.end(), out)
        if urls and len(out) > n_tok:  # a URL's own parts are judged by _url_has_secret, not as loose tokens
            out[n_tok:] = [c for c in out[n_tok:] if c[2] != "secret" or not any(a <= c[0] < b for a, b in urls)]
        for m in _NUM.finditer(text):
            self._number(text, m.start(), m.end(), out)
        if self.name_re is not None:
            key_of = self.name_key
            for m in self.name_re.finditer(text):
                key = key_of.get(m.group())
                if key is not None and not _word_before(text, m.start(), "@"):
                    out.append((m.start(), m.end(), "name", key))
        if self.block_re is not None:
            for m in self.block_re.finditer(text):
                key = self.block_key.get(" ".join(m.group().lower().split()), m.group().lower())
                out.append((m.start(), m.end(), "blocked", key))
        if self.allow:
            out = [c for c in out if not self._allowed(text[c[0]:c[1]], c[3])]
        return out

    def _allowed(self, raw: str, key: str) -> bool:
        return raw.lower() in self.allow or _compact(raw) in self.allow or key.lower() in self.allow

    # --- numbers: phones, cards, INN, SNILS, passports, IPv4
    def _number(self, text: str, s: int, e: int, out: list, sub: bool = False) -> bool:
        if s >= 5 and text[s - 1] == " " and ("A" <= text[s - 2] <= "Z" or "0" <= text[s - 2] <= "9"):
            window = _before(text, s, 40)
            head = _IBAN_HEAD.search(window)
            if head:  # IBAN written in groups ("DE89 3704 0044 ..."): valid or not, it is no phone
                start = s - len(window) + head.start()
                span = _IBAN_SPAN.match(text, start)
                if span:
                    self._iban(text, start, span.end(), out)
                return True
        nxt = text[e:e + 1]
        if nxt and (nxt.isalpha() or nxt == "_"):  # "4829381022abc", "500р": a code or an amount
            return False
        raw = text[s:e]
        digits = _NONDIGIT.sub("", raw)
        n, on = len(digits), self.on
        if "." in raw and _IPV4.fullmatch(raw):
            if "ip" in on and not _VERSION_CTX.search(_before(text, s, 12)):
                out.append((s, e, "ip", raw))
            return True
        if n < 8:
            return False
        if n == 10 and not raw[5:6].isdigit() and _PASSPORT_MARKED.fullmatch(raw):
            if "passport" in on and _passport_plausible(digits):
                out.append((s, e, "passport", digits))
            return True
        if ("." in raw or "-" in raw or "/" in raw) and _DATE_GROUP.search(raw):
            return not sub and self._subruns(text, s, e, out)
        plus = raw[0] == "+"
        bare = raw == digits
        if 13 <= n <= 19 and not plus and _CARD_FMT.fullmatch(raw) and luhn_ok(digits) and _card_brand_ok(digits):
            if "card" in on:
                out.append((s, e, "card", digits))
            return True
        if n == 11 and _SNILS_FMT.fullmatch(raw):  # SNILS-shaped: a SNILS or nothing
            if snils_ok(digits) and "snils" in on:
                out.append((s, e, "snils", digits))
            return True
        if n == 10 and _PASSPORT_FMT.fullmatch(raw) and _passport_plausible(digits):
            if "passport" in on:
                out.append((s, e, "passport", digits))
            return True
        if plus:
            norm = _phone_norm(raw, None) if n >= 8 else None
            if norm:
                if "phone" in on:
                    out.append((s, e, "phone", norm))
                return True
            return not sub and self._subruns(text, s, e, out)
        ctx = _before(text, s, 24).lower()
        if _NEG_CTX.search(ctx):
            return False
        if bare:
            if n == 12 and inn_ok(digits):
                if "inn" in on:
                    out.append((s, e, "inn", digits))
                return True
            if n == 11 and snils_ok(digits) and ("снилс" in ctx or "snils" in ctx or not (
                    digits[0] in "78" and self._phone(raw, digits))):
                if "snils" in on:
                    out.append((s, e, "snils", digits))
                return True
            if n == 10:
                inn = inn_ok(digits)
                if inn and ("инн" in ctx or "inn" in ctx):
                    if "inn" in on:
                        out.append((s, e, "inn", digits))
                    return True
                if _PASSPORT_CTX.search(ctx) and _passport_plausible(digits):
                    if "passport" in on:
                        out.append((s, e, "passport", digits))
                    return True
                if inn and digits[0] != "9" and not _PHONE_CTX.search(ctx):
                    if "inn" in on:
                        out.append((s, e, "inn", digits))
                    return True
        norm = self._phone(raw, digits)
        if norm:
            if "phone" in on:
                out.append((s, e, "phone", norm))
            return True
        if bare and n == 10 and inn_ok(digits):
            if "inn" in on:
                out.append((s, e, "inn", digits))
            return True
        return not sub and self._subruns(text, s, e, out)

    def _phone(self, raw: str, d: str) -> str | None:
        """A number written without +: only lengths and prefixes that real national formats use."""
        n = len(d)
        if d[0] == "0":
            regions = [r for r in self.regions if r in _TRUNK0] if n >= 9 else []
        elif n == 11 and d[0] in "78":
            regions = [r for r in self.regions if r in ("RU", "KZ", "BY")]
        elif n == 10:
            regions = [r for r in self.regions if r in ("RU", "KZ", "US", "CA")]
        elif n == 11 and d[0] == "1":
            regions = [r for r in self.regions if r in ("US", "CA")]
        else:
            regions = []
        for region in regions:
            norm = _phone_norm(raw, region)
            if norm:
                return norm
        return None

    def _subruns(self, text: str, s: int, e: int, out: list) -> bool:
        """A run that is nothing as a whole may hold a number beside dates, years or small
        counts ("12.05.2023 8 916 123-45-67", "8 916 123 45 67 2 раза"): drop those from the ends."""
        groups = [m.span() for m in _GROUP.finditer(text, s, e)]
        g = len(groups)
        if g < 2 or not (_DROPPABLE.fullmatch(text, *groups[0]) or _DROPPABLE.fullmatch(text, *groups[-1])):
            return False
        drop = [bool(_DROPPABLE.fullmatch(text, a, b)) for a, b in groups]
        for length in range(g - 1, 0, -1):
            for i in range(g - length + 1):
                if all(drop[:i]) and all(drop[i + length:]):
                    a, b = groups[i][0], groups[i + length - 1][1]
                    if _NUM.fullmatch(text, a, b) and self._number(text, a, b, out, sub=True):
                        return True
        return False

    # --- tokens: API keys, wallets, high-entropy strings, long IPv6
    def _token(self, text: str, s: int, e: int, out: list) -> None:
        tok = text[s:e].rstrip(".:-")
        e = s + len(tok)
        if len(tok) < 20 or "://" in tok or tok.startswith("www."):  # URLs have their own pass
            return
        eq = tok.find("=")
        if 0 < eq < len(tok) - 2 and tok[eq + 1] != "=":  # "API_KEY=sk-...": judge the value alone
            if len(tok) - eq - 1 >= 20:
                self._token(text, s + eq + 1, e, out)
            return
        m = _KEY.match(tok)
        if m and (m.end() == len(tok) or not tok[m.end()].isalnum()):
            if "secret" in self.on:
                out.append((s, s + m.end(), "secret", m.group()))
            return
        if wallet_ok(tok):
            if "wallet" in self.on:
                out.append((s, e, "wallet", tok))
            return
        if ":" in tok and tok.count(":") >= 2:
            self._ip6(text, s, e, out)
            return
        if not any(c.isalpha() for c in tok):  # "12.05.2023-15.06.2023": the number pass looks inside
            return
        if "secret" in self.on:
            relaxed = _KEY_CTX.search(_before(text, s, 40).lower()) is not None
            if _looks_random(tok, relaxed):
                out.append((s, e, "secret", tok))

    def _ip6_around(self, text: str, at: int, out: list) -> None:
        left = _IP6_LEFT.search(text, max(0, at - 40), at)
        s = left.start() if left else at
        e = _IP6_RIGHT.match(text, at).end()
        if not _word_before(text, s) and not (text[e:e + 1].isalnum() or text[e:e + 1] == "_"):
            self._ip6(text, s, e, out)

    def _ip6(self, text: str, s: int, e: int, out: list) -> None:
        import ipaddress

        raw = text[s:e]
        if "ip" not in self.on or len(raw) < 6 or not ("::" in raw or raw.count(":") == 7):
            return
        try:
            out.append((s, e, "ip", str(ipaddress.IPv6Address(raw))))
        except ValueError:
            pass

    def _iban(self, text: str, s: int, e: int, out: list) -> bool:
        want = _IBAN_LEN.get(text[s:s + 2])
        chars, end = [], s
        for i in range(s, e):
            if text[i] != " ":
                chars.append(text[i])
                end = i + 1
                if len(chars) == want:
                    break
        compact = "".join(chars)
        nxt = text[end:end + 1]
        if want and len(compact) == want and not nxt.isalnum() and iban_ok(compact):
            if "iban" in self.on:
                out.append((s, end, "iban", compact))
            return True
        return False

    def _email(self, text: str, at: int, out: list) -> None:
        left = _EMAIL_LEFT.search(text, max(0, at - 64), at)
        right = _EMAIL_RIGHT.match(text, at + 1)
        if not left or not right:
            return
        s = left.start()
        while s < at and text[s] in ".-+":
            s += 1
        if s < at:
            out.append((s, right.end(), "email", text[s:right.end()].lower()))

    def _url(self, text: str, s: int, e: int, out: list) -> int:
        url = text[s:e].rstrip(_TRAIL)
        e = s + len(url)
        if "url" in self.on and _url_has_secret(url):
            out.append((s, e, "url", url))
        return e

    def _password(self, text: str, m: re.Match, out: list) -> None:
        t = _PW_TAIL.match(text, m.end())
        if not t:
            return
        v, vs = t.group("v"), t.start("v")
        stripped = v.rstrip(".,;:?)]}»\"'")  # not "!": passwords end with it more often than sentences do
        v, ve = stripped, vs + len(stripped)
        if len(v) < 4 or v.lower() in _PW_STOP:
            return
        keyword = m.group().lower()
        if keyword.startswith(("pin", "пин")):
            ok = v.isdigit() and len(v) <= 8
        elif t.group("sep") in (":", "="):
            ok = True
        else:
            ok = any(not c.isalpha() for c in v) or any(c.isupper() for c in v[1:])
        if ok:
            out.append((vs, ve, "secret", v))


_AT = re.compile("@")
_DCOLON = re.compile("::")


def _word_before(text: str, s: int, extra: str = "") -> bool:
    """Is the char before `s` part of a word (so a match at `s` starts mid-word)?"""
    if s == 0:
        return False
    c = text[s - 1]
    return c.isalnum() or c == "_" or c in extra


def _before(text: str, s: int, width: int) -> str:
    """Up to `width` chars before `s` in the same message (a scanned conversation joins them with _SEP)."""
    window = text[max(0, s - width):s]
    return window[window.rfind("\x1e") + 1:]


def _passport_plausible(d: str) -> bool:
    yy = int(d[2:4])
    return d[:2] != "00" and (yy >= 97 or yy <= 30)


def _url_has_secret(url: str) -> bool:
    if _URL_USERINFO.search(url):
        return True
    rest = url.split("://", 1)[-1]
    path, _, query = rest.partition("?")
    query, _, frag = query.partition("#")
    if "#" in path:
        path, _, frag = path.partition("#")
    for part in re.split(r"[&;]", query + "&" + frag):
        name, eq, value = part.partition("=")
        name = name.lower()
        if eq and value and (name in _URL_SECRET_PARAMS or name.endswith(("token", "_key", "secret", "signature"))):
            return True
    return any(_KEY.fullmatch(seg) or _looks_random(seg) for seg in path.split("/")[1:] if len(seg) >= 20)


def _resolve(cands: list[tuple[int, int, str, str]], text: str) -> list[tuple[int, int, str, str]]:
    """Keep non-overlapping candidates: specific types first, then longer spans."""
    if len(cands) <= 1:
        return list(cands)
    cands = sorted(set(cands), key=lambda c: (_PRIORITY[c[2]], c[0] - c[1], c[0]))
    kept: list[tuple[int, int, str, str]] = []
    for c in cands:
        if all(c[1] <= k[0] or c[0] >= k[1] for k in kept):
            kept.append(c)
    kept.sort()
    merged: list[tuple[int, int, str, str]] = []
    for c in kept:  # "Марина Соколова" -> one <NAME>, not two
        if merged and c[2] == "name" == merged[-1][2] and c[3] == merged[-1][3] and text[merged[-1][1]:c[0]] in (" ", "\u00a0"):
            merged[-1] = (merged[-1][0], c[1], "name", c[3])
        else:
            merged.append(c)
    return merged


def _add_ner(text: str, cands: list[tuple[int, int, str, str]]) -> list[tuple[int, int, str, str]]:
    """Add person names an NER model finds, where no participant name or blocklist entry was found."""
    backend = _ner_backend("ru" if _CYR.search(text) else "en")
    if backend is None or not text:
        return cands
    known = [(s, e) for s, e, t, _ in cands if t in ("name", "blocked")]
    extra = [(s, e, "name", "ner:" + text[s:e].lower()) for s, e in backend(text)
             if not any(s < b and a < e for a, b in known)]
    return cands + extra


@lru_cache(maxsize=2)
def _ner_backend(lang: str) -> Callable[[str], list[tuple[int, int]]] | None:
    """natasha (Russian) or spaCy en_core_web_sm (English), or None when not installed."""
    try:
        if lang == "ru":
            from natasha import Doc, NewsEmbedding, NewsNERTagger, Segmenter

            segmenter, tagger = Segmenter(), NewsNERTagger(NewsEmbedding())

            def run(text: str) -> list[tuple[int, int]]:
                doc = Doc(text)
                doc.segment(segmenter)
                doc.tag_ner(tagger)
                return [(sp.start, sp.stop) for sp in doc.spans if sp.type == "PER"]

            return run
        import spacy

        nlp = spacy.load("en_core_web_sm")
        return lambda text: [(ent.start_char, ent.end_char) for ent in nlp(text).ents if ent.label_ == "PERSON"]
    except (ImportError, OSError):
        return None


# ---------------------------------------------------------------- public API


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


def write_privacy_report(findings: Iterable[Finding], path: str | Path) -> Path:
    """Write the review file: one masked item per line (TSV), never a raw value."""
    from .storage import atomic_write_text

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


# ---------------------------------------------------------------- memorisation checks


@dataclass(frozen=True)
class Canary:
    """A planted random secret: the model sees `prefix + secret` in `examples` (indices)."""

    prefix: str
    secret: str
    examples: tuple[int, ...]

    @property
    def text(self) -> str:
        return self.prefix + self.secret


_CANARY_PREFIXES = ("my pin code is ", "мой пин-код ", "the safe code is ", "код от сейфа ")


def insert_canaries(examples: Sequence[Example], n: int = 1, seed: int = 0, repeats: int = 1,
                    digits: int = 6) -> tuple[list[Example], list[Canary]]:
    """Plant `n` random canaries ("my pin code is 4 8 1 5 9 2"), each in `repeats` examples'
    last assistant turn. Call it after scrubbing; returns new examples (inputs untouched).

    >>> ex = [Example([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]) for _ in range(3)]
    >>> new, canaries = insert_canaries(ex, n=1, seed=1)
    >>> sum(canaries[0].text in e.messages[-1]["content"] for e in new), ex[0].messages[-1]["content"]
    (1, 'hey')
    """
    rng = random.Random(seed)
    usable = [i for i, e in enumerate(examples) if any(m.get("role") == "assistant" for m in e.messages)]
    if n * repeats > len(usable):
        raise ValueError(f"{n} canaries x {repeats} repeats need {n * repeats} examples with an assistant turn; "
                         f"only {len(usable)} have one")
    chosen = rng.sample(usable, n * repeats)
    out = list(examples)
    canaries = []
    for k in range(n):
        secret = " ".join(str(rng.randrange(10)) for _ in range(digits))
        prefix = _CANARY_PREFIXES[rng.randrange(len(_CANARY_PREFIXES))]
        idx = tuple(sorted(chosen[k * repeats:(k + 1) * repeats]))
        for i in idx:
            ex = copy.deepcopy(out[i])
            last = max(j for j, m in enumerate(ex.messages) if m.get("role") == "assistant")
            ex.messages[last]["content"] = (ex.messages[last]["content"].rstrip() + " " + prefix + secret).strip()
            ex.meta = {**ex.meta, "canary": True}
            out[i] = ex
        canaries.append(Canary(prefix, secret, idx))
    return out, canaries


def _sample_candidates(secret: str, space: Any, n: int, rng: random.Random) -> tuple[list[str], float]:
    """n distinct random alternatives to `secret` and log2 of the space they come from."""
    if space is None or space == "shape":
        def draw(r: random.Random) -> str:
            return "".join(str(r.randrange(10)) if c.isdigit() else chr(97 + r.randrange(26)) if c.islower()
                           else chr(65 + r.randrange(26)) if c.isupper() else c for c in secret)
        log2_space = sum(math.log2(10) if c.isdigit() else math.log2(26) if c.isalpha() else 0 for c in secret)
    elif callable(space):
        draw, log2_space = space, float("nan")
    else:
        pool = [c for c in dict.fromkeys(space) if c != secret]
        return rng.sample(pool, min(n, len(pool))), math.log2(len(pool) + 1)
    seen: dict[str, None] = {}
    for _ in range(n * 20):
        c = draw(rng)
        if c != secret:
            seen.setdefault(c, None)
        if len(seen) >= n:
            break
    return list(seen), log2_space


def _continuation_logprobs(model: Any, tokenizer: Any, prefix: str, continuations: Sequence[str],
                           batch_size: int = 32) -> list[float]:
    """Sum of log p(continuation tokens | prefix) for each continuation."""
    import torch

    head = prefix.rstrip()
    gap = prefix[len(head):]  # trailing space belongs to the continuation's first token
    p_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        p_ids = [tokenizer.bos_token_id] + p_ids
    rows = []
    for cont in continuations:
        full = tokenizer(head + gap + cont, add_special_tokens=False)["input_ids"]
        if full[:len(p_ids)] == p_ids:
            rows.append((p_ids, full[len(p_ids):]))
        else:
            rows.append((p_ids, tokenizer(gap + cont, add_special_tokens=False)["input_ids"]))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    scores = []
    model.eval()
    with torch.no_grad():
        for b in range(0, len(rows), batch_size):
            batch = rows[b:b + batch_size]
            seqs = [p + c for p, c in batch]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for j, s in enumerate(seqs):
                ids[j, :len(s)] = torch.tensor(s)
                mask[j, :len(s)] = 1
            logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
            for j, (p, c) in enumerate(batch):
                pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)
                scores.append(float(logp[j, pos, torch.tensor(c)].sum()))
    return scores


def canary_exposure(model: Any, tokenizer: Any, canary_prefix: str, secret: str, candidate_space: Any = None,
                    n_candidates: int = 100, seed: int = 0, batch_size: int = 32) -> dict[str, Any]:
    """Exposure of a planted secret (Carlini et al. 2019, "The Secret Sharer").

    Ranks log p(secret | prefix) among `n_candidates` random alternatives from
    `candidate_space` (None: same shape as the secret, random digits/letters; a
    list of strings; or a function rng -> str). exposure = log2(n_candidates + 1)
    - log2(rank): the maximum means the model prefers the true secret to every
    candidate; about 1-2 bits is what an unmemorised secret gets. `exposure_fit`
    extrapolates to the whole space with a normal fit of the candidates' scores.
    """
    rng = random.Random(seed)
    cands, log2_space = _sample_candidates(secret, candidate_space, n_candidates, rng)
    scores = _continuation_logprobs(model, tokenizer, canary_prefix, [secret, *cands], batch_size)
    true, others = scores[0], scores[1:]
    rank = 1 + sum(x > true for x in others)
    total = len(others) + 1
    mean = sum(others) / len(others)
    sd = math.sqrt(sum((x - mean) ** 2 for x in others) / len(others)) or 1e-9
    tail = 0.5 * math.erfc((true - mean) / sd / math.sqrt(2))
    fit = -math.log2(max(tail, 1e-300))
    return {"exposure": math.log2(total) - math.log2(rank), "max_exposure": math.log2(total), "rank": rank,
            "n_candidates": len(others), "secret_logprob": true, "candidates_logprob_mean": mean,
            "candidates_logprob_std": sd, "exposure_fit": min(fit, log2_space) if log2_space == log2_space else fit,
            "space_log2": log2_space}


def scrubbed_item_probes(original: Conversation, redacted: Conversation, findings: Sequence[Finding],
                         context_turns: int = 6, role: str = "assistant") -> list[tuple[list[dict[str, str]], str, str]]:
    """Probes for the leakage test: for each item scrubbed from a `role` message,
    (the redacted turns before it, its message's redacted text up to the item, the original value).

    The model learned the redacted text; prompted with it, it must not write the
    original value. Values exist only in the returned tuples (in memory), never on disk.

    >>> from clonekit.records import Message
    >>> orig = Conversation("c", [Message("user", "твой номер?"), Message("assistant", "пиши на bob@mail.ru ок")])
    >>> red, _, found = redact_conversation(orig, PrivacyConfig(names=False))
    >>> scrubbed_item_probes(orig, red, found)
    [([{'role': 'user', 'content': 'твой номер?'}], 'пиши на ', 'bob@mail.ru')]
    """
    probes = []
    for f in findings:
        msg = original.messages[f.message_index]
        if msg.role != role:
            continue
        before = [{"role": m.role, "content": m.content} for m in redacted.messages[max(0, f.message_index - context_turns):f.message_index]
                  if m.role in ("user", "assistant")]
        probes.append((before, redacted.messages[f.message_index].content[:f.out_start], msg.content[f.start:f.end]))
    return probes


def leakage_probe(model: Any, tokenizer: Any, prefixes: Sequence[str], secrets: Sequence[str],
                  max_new_tokens: int | None = None, batch_size: int = 8) -> dict[str, Any]:
    """Prompt with the text before each scrubbed item and check the original value does not come out.

    Greedy, short generations (by default as many tokens as the longest secret
    in the batch, plus 4). A secret counts as leaked when it (or its digits, for
    numbers of 6+ digits) appears in the output. Only masked values are returned.
    """
    import torch

    assert len(prefixes) == len(secrets), (len(prefixes), len(secrets))
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    outputs: list[str] = []
    model.eval()
    try:
        with torch.no_grad():
            for b in range(0, len(prefixes), batch_size):
                enc = tokenizer(list(prefixes[b:b + batch_size]), return_tensors="pt", padding=True, add_special_tokens=False)
                budget = max_new_tokens or 4 + max(len(tokenizer(" " + x, add_special_tokens=False)["input_ids"])
                                                   for x in secrets[b:b + batch_size])
                gen = model.generate(**enc.to(device), max_new_tokens=budget, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                outputs += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    leaked = []
    for i, (out, secret) in enumerate(zip(outputs, secrets)):
        digits = _NONDIGIT.sub("", secret)
        if secret.lower() in out.lower() or (len(digits) >= 6 and digits in _NONDIGIT.sub("", out)):
            leaked.append({"index": i, "masked": mask_value(secret, "name")})
    return {"n": len(outputs), "leaked": len(leaked), "leak_rate": len(leaked) / max(1, len(outputs)), "items": leaked}
