"""storage: atomic writes, JSONL errors with line numbers, checkpoint discovery."""

from __future__ import annotations

import pytest

from clonekit import storage
from clonekit.errors import InputError


def test_home_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CLONEKIT_HOME", str(tmp_path / "h"))
    assert storage.home_dir() == tmp_path / "h" and storage.model_cache_dir() == tmp_path / "h" / "models"


def test_jsonl_round_trip_and_bad_line_named(tmp_path):
    path = tmp_path / "d" / "train.jsonl"
    assert storage.write_jsonl(path, [{"a": "привет"}, {"b": 2}]) == 2
    assert storage.read_jsonl(path) == [{"a": "привет"}, {"b": 2}]
    assert not list(path.parent.glob(".*.tmp"))  # the temp file was renamed, not left behind
    path.write_text('{"a": 1}\n{broken\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"train\.jsonl:2"):
        storage.read_jsonl(path)
    with pytest.raises(InputError, match="clonekit prepare"):
        storage.read_jsonl(tmp_path / "missing.jsonl")


def test_latest_checkpoint_skips_incomplete_ones(tmp_path):
    for n, complete in ((5, True), (40, True), (100, False), (7, True)):
        d = tmp_path / f"checkpoint-{n}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in storage.list_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-7", "checkpoint-40"]
    assert storage.latest_checkpoint(tmp_path).name == "checkpoint-40"
    assert storage.latest_checkpoint(tmp_path / "none") is None


def test_read_json_names_the_broken_place(tmp_path):
    p = tmp_path / "m.json"
    p.write_text('{"a": 1,\n "b": }', encoding="utf-8")
    with pytest.raises(InputError, match=r"line 2"):
        storage.read_json(p)
