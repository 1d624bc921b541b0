"""Find personal data in a text: candidates (start, end, type, key), then the non-overlapping winners.

`_Scanner(config, names).scan(text)` runs one regex pass per family of
candidates (URLs, IBANs, e-mails, passwords, IPv6, long tokens, numbers,
participant names, the blocklist; patterns in `patterns.py`), validates each
candidate with the checks in `checksums.py` and `phonenumbers`, and returns
(start, end, type, key) tuples: the key is the normalised value (E.164 phone,
card digits, the participant a name form belongs to) that decides placeholders.
`_resolve` keeps the most specific of overlapping candidates. `TYPES` maps each
type to its `PrivacyConfig` flag and placeholder tag.

    >>> from clonekit.privacy import PrivacyConfig
    >>> text = "звони +7 916 123-45-67"
    >>> [(s, e, t, k) for s, e, t, k in _Scanner(PrivacyConfig()).scan(text)]
    [(6, 22, 'phone', '+79161234567')]

Run the examples: python -m pytest --doctest-modules clonekit/privacy/scanner.py
"""

from __future__ import annotations

import re
from functools import lru_cache
from operator import methodcaller
from typing import TYPE_CHECKING, Sequence

from .checksums import _IBAN_LEN, _card_brand_ok, _passport_plausible, inn_ok, iban_ok, luhn_ok, snils_ok, wallet_ok
from .names import _block_matcher, _name_matcher, _name_passes
from .patterns import (_AT, _CARD_FMT, _DATE_GROUP, _DCOLON, _DROPPABLE, _EMAIL_LEFT, _EMAIL_RIGHT, _GROUP, _IBAN_HEAD,
                       _IBAN_SPAN, _IP6_LEFT, _IP6_RIGHT, _IPV4, _KEY, _KEY_CTX, _NEG_CTX, _NONDIGIT, _NUM, _P_IBAN,
                       _P_PW_PASSES, _P_TOK, _P_URL, _P_WWW, _PASSPORT_CTX, _PASSPORT_FMT, _PASSPORT_MARKED, _PHONE_CTX,
                       _PW_STOP, _PW_TAIL, _SNILS_FMT, _TRAIL, _TRUNK0, _URL_BODY, _URL_SCHEME, _VERSION_CTX,
                       _looks_random, _url_has_secret)

if TYPE_CHECKING:
    from . import PrivacyConfig

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


def _table(groups: dict[bytes, bytes], rest: bytes = b" ") -> bytes:
    table = bytearray(rest * 256)
    for chars, to in groups.items():
        for c in chars:
            table[c] = to[0]
    return bytes(table)


_IBAN_TABLE = _table({bytes(range(65, 91)): b"A", b"0123456789": b"0", b"?": b"?"})
_TOK_TABLE = _table({b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+/=-.:": b"t"})
_IBAN_DIGITS = {b"00", b"0?", b"?0", b"??"}
_TOK_RUN = b"t" * 20


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


class _Scanner:
    """Finds candidates in a text: list of (start, end, type, key)."""

    def __init__(self, config: PrivacyConfig, names: Sequence[str] = ()):
        self.on = {t for t, (flag, _) in TYPES.items() if t not in ("blocked", "name") and getattr(config, flag)}
        self.regions = list(config.phone_regions)
        self.allow = _allow_keys(tuple(config.allowlist))
        names = tuple(sorted(set(names)))
        self.name_re, self.name_key = _name_matcher(names, self.allow) if config.names and names else (None, {})
        self.name_passes = _name_passes(names, self.allow) if self.name_re is not None else ()
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
        # The charset-led passes (IBAN, tokens) cost ~5 ns a char in the regex engine even where
        # nothing matches; bytes.translate + a literal search over a 1-byte-per-char copy of the text
        # find the few places where they can match at a fraction of that.
        lat = text.encode("latin-1", "replace")  # one byte a char: other chars -> "?"
        if "iban" in on:
            tb, end = lat.translate(_IBAN_TABLE), 0
            p = tb.find(b"AA")
            while p >= 0:  # every IBAN match starts at "AA" followed by two digits ("?": maybe a non-ASCII \d)
                if p >= end and tb[p + 2:p + 4] in _IBAN_DIGITS:
                    m = _P_IBAN.match(text, p)
                    if m:
                        end = m.end()
                        self._iban(text, p, end, out)
                p = tb.find(b"AA", p + 1)
        if "email" in on and "@" in text:
            for m in _AT.finditer(text):
                self._email(text, m.start(), out)
        if "secret" in on:
            for m in _merge_passes(_P_PW_PASSES, text):
                if not _word_before(text, m.start(), "-"):
                    self._password(text, m, out)
        if "ip" in on and "::" in text:
            for m in _DCOLON.finditer(text):
                self._ip6_around(text, m.start(), out)
        n_tok = len(out)
        tb = lat.translate(_TOK_TABLE)  # token chars -> "t", the rest -> " "
        p = tb.find(_TOK_RUN)
        while p >= 0:  # a token match can only start where a run of 20+ token chars starts, and ends with it
            e = tb.find(b" ", p)
            m = _P_TOK.match(text, p)
            if m:
                self._token(text, p, m.end(), out)
            if e < 0:
                break
            p = tb.find(_TOK_RUN, e)
        if urls and len(out) > n_tok:  # a URL's own parts are judged by _url_has_secret, not as loose tokens
            out[n_tok:] = [c for c in out[n_tok:] if c[2] != "secret" or not any(a <= c[0] < b for a, b in urls)]
        for m in _NUM.finditer(text):
            self._number(text, m.start(), m.end(), out)
        if self.name_re is not None:
            key_of = self.name_key
            for m in _merge_passes(self.name_passes, text):
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


_START = methodcaller("start")


def _merge_passes(patterns: tuple[re.Pattern, ...], text: str) -> list[re.Match]:
    """Matches of patterns that start with different chars, as one alternation of them finds them:
    by position, leaving out a match that starts inside the previous one."""
    if len(patterns) == 1:
        return list(patterns[0].finditer(text))
    found = sorted((m for p in patterns for m in p.finditer(text)), key=_START)
    kept, end = [], 0
    for m in found:
        if m.start() >= end:
            kept.append(m)
            end = m.end()
    return kept


def _word_before(text: str, s: int, extra: str = "") -> bool:
    """Is the char before `s` part of a word (so a match at `s` starts mid-word)?"""
    if s == 0:
        return False
    c = text[s - 1]
    return c.isalnum() or c == "_" or c in extra


def _before(text: str, s: int, width: int) -> str:
    """Up to `width` chars before `s` in the same message (a scanned conversation joins them with clonekit.privacy._SEP)."""
    window = text[max(0, s - width):s]
    return window[window.rfind("\x1e") + 1:]


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
