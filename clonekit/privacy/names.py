"""Chat participants' names as they are written inside messages, and the blocklist.

A participant "Марина Соколова" is also written "Марине", "Маринка", "Маша" or
"СОКОЛОВОЙ": `name_forms` gives Russian case forms (cheap rules, not a
morphology engine), `_participant_forms` adds diminutives and letter case, and
`_name_matcher` / `_block_matcher` compile one regex per set of names or
blocklist entries (cached: thousands of small chats share few names).

    >>> pattern, key_of = _name_matcher(("Марина Соколова",), frozenset())
    >>> [(m.group(), key_of.get(m.group())) for m in pattern.finditer("Маринка ела маринад с Соколовой")]
    [('Маринка', 'Марина Соколова'), ('маринад', None), ('Соколовой', 'Марина Соколова')]

Run the examples: python -m pytest --doctest-modules clonekit/privacy/names.py
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

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
    alternatives, key_of = _name_alternatives(names, allow)
    if not key_of:
        return None, {}
    return re.compile(f"(?:{'|'.join(alternatives)})\\w*"), key_of


@lru_cache(maxsize=4096)
def _name_passes(names: tuple[str, ...], allow: frozenset[str]) -> tuple[re.Pattern, ...]:
    """`_name_matcher`'s pattern split into one pattern per first letter.

    A pattern that starts with one literal char skips text ~10x faster than one that starts with a
    set of chars; `scanner._merge_passes` puts the matches back into the single pattern's order.
    """
    alternatives, key_of = _name_alternatives(names, allow)
    return tuple(re.compile(f"{alt}\\w*") for alt in alternatives) if key_of else ()


@lru_cache(maxsize=256)
def _name_alternatives(names: tuple[str, ...], allow: frozenset[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Regex alternatives for the stems of every participant's name forms (one per first letter), and form -> participant."""
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
    # Grouped by first letter, so the engine tries one group per candidate letter rather than every stem.
    # The match is the whole word (stem + \w*) whichever stem fits, so the order of the stems is free.
    by_first: dict[str, list[str]] = {}
    for st in sorted(stems, key=len, reverse=True):
        by_first.setdefault(st[0], []).append(re.escape(st[1:]))
    return tuple(re.escape(c) + "(?:" + "|".join(rests) + ")" for c, rests in by_first.items()), key_of


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
