"""The regular expressions and shape tests the scanner (`scanner.py`) runs over chat text.

Everything here is a compiled pattern, a constant set or a pure test on one
string: `_looks_random` (is a token a high-entropy secret?) and
`_url_has_secret` (does a URL carry a token, a key or a password?). Nothing
here decides what to replace; `scanner.py` does.

    >>> _url_has_secret("https://x.io/reset?token=abc123"), _url_has_secret("https://x.io/page?id=5")
    (True, False)

Run the examples: python -m pytest --doctest-modules clonekit/privacy/patterns.py
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

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
# The keywords password|Password|PASSWORD|passwd|pwd|pass|Pass|PASS|pin|Pin|PIN|пароль|Пароль|ПАРОЛЬ|пароля|Пароля|
# паролем|пасс|пин|Пин|ПИН as a trie: the engine tries a branch or two per "p"/"п" instead of all 21 words (at most
# one keyword can be followed by the rest of the pattern, so the order of the words does not change a match).
_PW_WORDS = (r"p(?:ass(?:word|wd)?|wd|in)", r"P(?:ass(?:word)?|ASS(?:WORD)?|in|IN)", r"п(?:ар(?:оль|оля|олем)|асс|ин)",
             r"П(?:ароль|ароля|АРОЛЬ|ин|ИН)")
_PW_END = r"(?:[ -]?(?:code|Code|CODE|код|коду|Код))?(?![\w-])"
_P_PW = re.compile(f"(?:{'|'.join(_PW_WORDS)}){_PW_END}")
# The same, one pattern per first letter: a literal first char skips text ~10x faster than a set of chars.
# No match can start inside another one, so their matches merged by position are _P_PW's.
_P_PW_PASSES = tuple(re.compile(w + _PW_END) for w in _PW_WORDS)
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
_RANDOM_CHARS = re.compile(r"[A-Za-z0-9+/=_\-]+")  # ASCII letters and digits, "+/=_-"
_UPPER, _LOWER, _DIGITS = frozenset(string.ascii_uppercase), frozenset(string.ascii_lowercase), frozenset(string.digits)
_HEX_LOWER, _HEX_UPPER = frozenset("0123456789abcdef"), frozenset("0123456789ABCDEF")


def _looks_random(t: str, relaxed: bool = False) -> bool:
    """High-entropy token test: mixed character classes, short camel-case pieces, high Shannon entropy.

    `relaxed` applies when a word such as "key" or "токен" stands just before the token.
    """
    n = len(t)
    if n < 20 or n > 300 or not _RANDOM_CHARS.fullmatch(t):
        return False
    # t is ASCII from here on: set tests in C instead of a Python loop per character
    kinds = (not _UPPER.isdisjoint(t), not _LOWER.isdisjoint(t), not _DIGITS.isdisjoint(t))
    # Identifiers split into few long camel-case words ("ThisIsMyProject2023": 3.8 chars a piece);
    # random base62 into short pieces (1.9 on average, under 3.4 for 99% of 20-char strings).
    piece = n / len(_PIECES.findall(t))
    ent = -sum([k / n * _log2(k / n) for k in Counter(t).values()])  # a list: same sum, no generator frames
    if relaxed:
        return sum(kinds) >= 2 and piece <= 4.0 and ent >= 3.2
    if _HEX_LOWER.issuperset(t) or _HEX_UPPER.issuperset(t):
        return False  # hashes and commit ids: only with a "key"/"token" word before them
    return (all(kinds) or (kinds[2] and n >= 32)) and piece <= (3.4 if n < 28 else 3.0) and ent >= 3.5


_AT = re.compile("@")
_PARAM_SEP = re.compile(r"[&;]")
_log2 = math.log2
_DCOLON = re.compile("::")


def _url_has_secret(url: str) -> bool:
    if _URL_USERINFO.search(url):
        return True
    rest = url.split("://", 1)[-1]
    path, _, query = rest.partition("?")
    query, _, frag = query.partition("#")
    if "#" in path:
        path, _, frag = path.partition("#")
    for part in _PARAM_SEP.split(query + "&" + frag):
        name, eq, value = part.partition("=")
        name = name.lower()
        if eq and value and (name in _URL_SECRET_PARAMS or name.endswith(("token", "_key", "secret", "signature"))):
            return True
    return any(_KEY.fullmatch(seg) or _looks_random(seg) for seg in path.split("/")[1:] if len(seg) >= 20)
