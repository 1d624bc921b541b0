"""Checksums and shape checks that tell a real identifier from a look-alike.

Payment cards (Luhn digit, brand prefix and length), Russian INN and SNILS
(checksums), IBANs (length per country and mod-97), crypto wallets (BTC
base58check or bech32/bech32m, ETH, TRON) and the year in a Russian passport
series. Pure functions on strings; `scanner.py` calls them on candidates.

    >>> luhn_ok("4111111111111111"), iban_ok("DE89370400440532013000")
    (True, True)

Run the examples: python -m pytest --doctest-modules clonekit/privacy/checksums.py
"""

from __future__ import annotations

import hashlib
from operator import mul


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


def _passport_plausible(d: str) -> bool:
    yy = int(d[2:4])
    return d[:2] != "00" and (yy >= 97 or yy <= 30)
