"""Tests for clonekit.privacy: detection, placeholders, reports, leakage probes (canaries: test_leakage.py).

The labelled set (tests/fixtures/privacy/labelled.jsonl) comes from make_labelled.py beside it;
bench/privacy_scrub.py prints the same per-type table with timings.
"""

from __future__ import annotations

import copy
import doctest
import sys
from collections import Counter
from pathlib import Path

import pytest

from clonekit import privacy
from clonekit.errors import ConfigError
from clonekit.privacy import (Finding, PrivacyConfig, RedactionState, iban_ok, inn_ok, luhn_ok, mask_value, redact_conversation,
                              redact_text, scrubbed_item_probes, snils_ok, wallet_ok, write_privacy_report)
from clonekit.records import Conversation, Message

FIXTURES = Path(__file__).parent / "fixtures" / "privacy"
sys.path.insert(0, str(FIXTURES))
import make_labelled  # noqa: E402

ALL_ON = PrivacyConfig()


def scrub(text: str, **kw) -> str:
    names = kw.pop("names", ())
    return redact_text(text, PrivacyConfig(**kw), names=names)[0]


def test_module_doctests():
    for module in (privacy, privacy.checksums, privacy.patterns, privacy.names, privacy.scanner, privacy.report):
        assert doctest.testmod(module).failed == 0, module.__name__


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize("text, expected", [
    ("звони +7 (916) 123-45-67", "звони <PHONE>"),
    ("тел 89161234567, вечером", "тел <PHONE>, вечером"),
    ("8-916-123-45-67 или 8 (916) 765 43 21", "<PHONE> или <PHONE_2>"),
    ("call (415) 555-2671 or +44 20 7946 0958", "call <PHONE> or <PHONE_2>"),
    ("BY: 8 029 491-19-11", "BY: <PHONE>"),
    ("карта 4276 3800 1234 5679", "карта <CARD>"),
    ("mail: Ivan.Petrov@Mail.ru.", "mail: <EMAIL>."),
    ("IBAN DE89 3704 0044 0532 0130 00 ok", "IBAN <IBAN> ok"),
    ("GB29NWBK60161331926819", "<IBAN>"),
    ("серия 45 10 № 123456", "серия <PASSPORT>"),
    ("паспорт 4510 123456", "паспорт <PASSPORT>"),
    ("ИНН 7707083893, СНИЛС 112-233-445 95", "ИНН <INN>, СНИЛС <SNILS>"),
    ("инн 500100732259", "инн <INN>"),
    ("server 192.168.1.10:8080", "server <IP>:8080"),
    ("ipv6 2001:db8::1", "ipv6 <IP>"),
    ("reset: https://example.com/reset?user=5&token=abcDEF123xyz", "reset: <URL>"),
    ("https://admin:hunter2@example.com/panel", "<URL>"),
    ("key sk-proj-abcdefghijklmnopqrstuvwx1234", "key <SECRET>"),
    ("AKIAIOSFODNN7EXAMPLE", "<SECRET>"),
    ("export TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789", "export TOKEN=<SECRET>"),
    ("пароль: котик", "пароль: <SECRET>"),
    ("my password is Qwerty123!", "my password is <SECRET>"),
    ("пин-код 4815", "пин-код <SECRET>"),
    ("вот ключ 8f9aK2mQx7LpZ3vN1bR5tY0wE4sD6gH", "вот ключ <SECRET>"),
    ("btc 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "btc <WALLET>"),
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "<WALLET>"),
    ("eth 0x52908400098527886E0F7030069857D2E4169EE7", "eth <WALLET>"),
])
def test_finds_each_type(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "встреча 12.05.2023 в 18:00", "deadline 2024-03-15", "цена 1 500 000 руб", "it's $1,299.99",
    "заказ № 48392017 в пути", "номер заказа 4829301857", "order #A-1029384", "артикул 4829-3810-22",
    "SKU 8806094939", "карта 4111 1111 1111 1112 не прошла", "4111111111111112", "version 10.2.3", "v1.2.3.4",
    "версия 1.2.3.4", "https://example.com/page?id=5&lang=ru", "commit 3f2a9c1b8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b",
    "ThisIsMyProjectName2023", "пароль не помню", "pass the salt", "pin it to the top", "ISBN 978-5-17-118366-7",
    "СНИЛС 123-456-789 00", "IBAN DE00 3704 0044 0532 0130 00", "+7 123 456-78-90", "@marina_s глянь",
    "10:00-12:00 и 14.00-16.00", "300.1.2.3", "192.168.1", "в 2023 году 123456 человек",
])
def test_lookalikes_are_kept(text):
    assert scrub(text, names=["Марина Соколова"]) == text


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert inn_ok("7707083893") and inn_ok("500100732259") and not inn_ok("500100732258")
    assert snils_ok("11223344595") and not snils_ok("11223344596")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE88370400440532013000")
    assert wallet_ok("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa") and not wallet_ok("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb")
    assert wallet_ok("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4") and not wallet_ok("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5")


def test_masking_keeps_shape_not_value():
    assert mask_value("+7 916 123-45-67", "phone") == "+7 9** ***-**-67"
    assert mask_value("ivan.petrov@mail.ru", "email") == "i**********@m***.ru"
    assert mask_value("Марина", "name") == "М*****"
    assert "hunter2" not in mask_value("hunter2", "secret")
    assert mask_value("https://x.io/r?token=abc123", "url") == "https://x.io/*?*****=******"


# ---------------------------------------------------------------- names, lists, switches


def test_names_with_russian_cases_and_diminutives():
    names = ["Марина Соколова", "Александр Петров", "Emily Clark"]
    text = ("Передай Марине, что Маша... нет, Маринка звонила; видел Сашу с Мариной Соколовой у Петрова. "
            "Emily's bag. марина опоздает. Читаю роман, у метро маринад.")
    out, found = redact_text(text, ALL_ON, names=names)
    assert out == ("Передай <NAME>, что Маша... нет, <NAME> звонила; видел <NAME_2> с <NAME> у <NAME_2>. "
                   "<NAME_3>'s bag. <NAME> опоздает. Читаю роман, у метро маринад.")
    assert {f.type for f in found} == {"name"}
    # "Роман" is a name and a word: scrubbed only when capitalised
    assert scrub("Роман придёт, он читает роман", names=["Роман Егоров"]) == "<NAME> придёт, он читает роман"


def test_blocklist_allowlist_and_per_type_switches():
    text = "Живу в Зеленограде, ул. Ленина, 15. Звони 8 916 123-45-67 или на 8 800 555-35-35, пиши ivan@mail.ru"
    cfg = PrivacyConfig(blocklist=["Зеленоград", "ул. Ленина, 15"], allowlist=["+7 800 555 35 35"])
    assert redact_text(text, cfg)[0] == "Живу в <REDACTED>, <REDACTED_2>. Звони <PHONE> или на 8 800 555-35-35, пиши <EMAIL>"
    assert scrub(text, phones=False).count("<PHONE>") == 0 and "<EMAIL>" in scrub(text, phones=False)
    assert "ivan@mail.ru" in scrub(text, emails=False)
    assert scrub("Марина, привет", names=["Марина"]) == "<NAME>, привет"
    assert redact_text("Марина, привет", PrivacyConfig(names=False), names=["Марина"])[0] == "Марина, привет"
    assert scrub(text, enabled=False) == text


@pytest.mark.parametrize("flag, text", [
    ("cards", "4276 3800 1234 5679"), ("ibans", "DE89370400440532013000"), ("ru_passports", "паспорт 4510 123456"),
    ("inn", "ИНН 7707083893"), ("snils", "112-233-445 95"), ("ips", "10.0.0.1"), ("crypto", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"),
    ("secret_urls", "https://x.io/a?token=abcdef123456"), ("api_keys", "AKIAIOSFODNN7EXAMPLE"),
])
def test_each_type_can_be_turned_off(flag, text):
    assert scrub(text) != text
    assert scrub(text, **{flag: False}) == text


def test_config_collects_all_problems():
    with pytest.raises(ConfigError) as err:
        PrivacyConfig(phone_regions=["RU", "XX"], blocklist="Марина")
    assert "blocklist must be a list" in str(err.value)
    with pytest.raises(ConfigError) as err:
        PrivacyConfig(phone_regions=["RU", "XX"], blocklist=["a"])
    assert "XX" in str(err.value) and "at least 2 characters" in str(err.value)


def test_ner_is_optional(monkeypatch):
    text = "Вчера видел Петра Васильева у метро"
    assert redact_text(text, PrivacyConfig(ner=False))[0] == text
    privacy._ner_backend.cache_clear()
    monkeypatch.setitem(sys.modules, "natasha", None)  # as if not installed: skipped, no error
    monkeypatch.setitem(sys.modules, "spacy", None)
    assert redact_text(text, PrivacyConfig(ner=True))[0] == text
    privacy._ner_backend.cache_clear()
    monkeypatch.undo()
    pytest.importorskip("natasha")
    assert redact_text(text, PrivacyConfig(ner=True))[0] == "Вчера видел <NAME> у метро"
    privacy._ner_backend.cache_clear()


# ---------------------------------------------------------------- conversations, reports


def make_conv() -> Conversation:
    msgs = ["Марина, мой номер +7 916 123-45-67", "ок, записала 8 (916) 123-45-67", "а второй? 8 903 765-43-21",
            "пиши на ivan@mail.ru, Марине передай", "пароль: Qwerty123!", "просто текст"]
    return Conversation(id="tg:42", participants=["Марина Соколова", "Иван"],
                        messages=[Message(role="", content=c, author=["Иван", "Марина Соколова"][i % 2]) for i, c in enumerate(msgs)])


def test_redact_conversation_is_consistent_and_leaves_input_alone():
    conv = make_conv()
    before = copy.deepcopy(conv)
    new, counts, findings = redact_conversation(conv, ALL_ON)
    assert conv == before
    assert new is not conv and all((a is b) == (i == 5) for i, (a, b) in enumerate(zip(new.messages, conv.messages)))
    assert [m.content for m in new.messages] == [
        "<NAME>, мой номер <PHONE>", "ок, записала <PHONE>", "а второй? <PHONE_2>", "пиши на <EMAIL>, <NAME> передай",
        "пароль: <SECRET>", "просто текст"]
    assert counts == Counter({"phone": 3, "name": 2, "email": 1, "secret": 1})
    assert counts == Counter(f.type for f in findings)
    for f in findings:
        raw = conv.messages[f.message_index].content[f.start:f.end]
        assert f.conversation_id == "tg:42" and raw and f.masked != raw
        assert new.messages[f.message_index].content[f.out_start:].startswith(f.placeholder)
    many, total, all_findings = privacy.redact_conversations([conv, make_conv()], ALL_ON, progress=False)
    assert [m.content for m in many[1].messages] == [m.content for m in new.messages]
    assert total == counts + counts and len(all_findings) == 2 * len(findings)
    # the same number written two ways is one placeholder; a state carries across texts
    state = RedactionState()
    assert redact_text("+79161234567", ALL_ON, state)[0] == redact_text("8 916 123 45 67", ALL_ON, state)[0] == "<PHONE>"
    assert "916" not in repr(state)


def test_empty_and_none_content():
    conv = Conversation(id="x", messages=[Message(role="", content=""), Message(role="", content=None),  # type: ignore[arg-type]
                                          Message(role="", content="ivan@mail.ru")])
    new, counts, _ = redact_conversation(conv, ALL_ON)
    assert [m.content for m in new.messages] == ["", None, "<EMAIL>"] and counts == {"email": 1}


def test_privacy_report_is_masked(tmp_path):
    rows = make_labelled.load_labelled()
    findings: list[Finding] = []
    for conv in make_labelled.conversations_from_rows(rows):
        findings += redact_conversation(conv, PrivacyConfig(blocklist=make_labelled.BLOCKLIST))[2]
    path = write_privacy_report(findings, tmp_path / "privacy_report.tsv")
    lines = path.read_text(encoding="utf-8").splitlines()
    body = [line.split("\t") for line in lines if not line.startswith("#")]
    assert body[0] == ["conversation_id", "message_index", "start", "end", "type", "placeholder", "masked"]
    assert len(body) - 1 == len(findings) and all(len(r) == 7 for r in body)
    assert "phone=" in lines[2] and "email=" in lines[2]
    text = path.read_text(encoding="utf-8")
    raw_values = [r["text"][s["start"]:s["end"]] for r in rows for s in r["spans"]]
    leaked = [v for v in raw_values if len(v) >= 6 and v in text]
    assert not leaked


# ---------------------------------------------------------------- labelled set


def test_labelled_fixture_is_what_the_generator_makes():
    assert make_labelled.make_labelled() == make_labelled.load_labelled()


def test_labelled_set_precision_and_recall():
    rows = make_labelled.load_labelled()
    kinds = Counter(r["kind"] for r in rows)
    assert len(rows) >= 500 and kinds["lookalike"] >= 150 and {"ru", "en"} == {r["lang"] for r in rows}
    result = make_labelled.evaluate(rows, PrivacyConfig(blocklist=make_labelled.BLOCKLIST))
    per_type = result["per_type"]
    assert set(make_labelled.STRUCTURED) <= set(per_type)
    assert result["structured_recall"] >= 0.99, result["misses"]
    assert result["precision"] >= 0.95, result["false_positives"]
    for t in make_labelled.STRUCTURED:
        assert per_type[t]["recall"] >= 0.95, (t, per_type[t])
    for t, row in per_type.items():
        assert row.get("precision") is None or row["precision"] >= 0.95, (t, row)
    # with everything switched off nothing is found: the score is not an artefact of the scorer
    off = make_labelled.evaluate(rows, PrivacyConfig(enabled=False))
    assert off["recall"] == 0


# ---------------------------------------------------------------- leakage probes (canaries: test_leakage.py)


def test_scrubbed_item_probes_give_redacted_context_and_raw_value():
    conv = make_conv()
    conv = Conversation(id=conv.id, participants=conv.participants,
                        messages=[Message(role=("user", "assistant")[i % 2], content=m.content, author=m.author) for i, m in enumerate(conv.messages)])
    new, _, findings = redact_conversation(conv, ALL_ON)
    probes = scrubbed_item_probes(conv, new, findings, role="assistant")
    values = [v for _, _, v in probes]
    assert "8 (916) 123-45-67" in values and "Марине" in values  # items of the assistant's (persona's) messages only
    assert "+7 916 123-45-67" not in values and "Qwerty123!" not in values  # those were the user's
    for before, partial, value in probes:
        assert value not in partial and not any(value in t["content"] for t in before)
        assert before[-1]["role"] == "user" and "<PHONE>" in before[0]["content"]
