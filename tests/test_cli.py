"""The `clonekit` command: every subcommand has help, user errors are one line with exit status 2, prepare works end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clonekit.cli import COMMANDS, build_parser, main

from conftest import ROOT

SAMPLE = ROOT / "data_samples" / "telegram" / "result.json"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example: clonekit " + command in out


def test_privacy_flags_come_from_the_privacy_config():
    from clonekit.config import config_from_args
    from clonekit.privacy import PrivacyConfig

    args = build_parser().parse_args(["prepare", str(SAMPLE), "--no-phones", "--blocklist", "Main street"])
    privacy = config_from_args(PrivacyConfig, args, enabled=True)
    assert privacy.phones is False and privacy.emails is True and privacy.blocklist == ["Main street"]


@pytest.mark.parametrize("argv, expected", [
    (["prepare", "/nonexistent/result.json"], "/nonexistent/result.json"),
    (["prepare", str(ROOT / "README.md")], "README.md"),
    (["prepare", str(SAMPLE), "--me", "Nobody Atall", "--tokenizer", "none"], "Nobody Atall"),
    (["prepare", str(SAMPLE), "--gap-hours", "0"], "gap_hours"),
])
def test_user_errors_are_one_line_and_exit_2(argv, expected, tmp_path, capsys):
    code = main([*argv, "--out", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and expected in err
    assert "Traceback" not in err


def test_empty_export_is_refused_with_the_file_name(tmp_path, capsys):
    empty = tmp_path / "result.json"
    empty.write_text("", encoding="utf-8")
    assert main(["prepare", str(empty), "--out", str(tmp_path / "data")]) == 2
    assert str(empty) in capsys.readouterr().err


def test_prepare_writes_dataset_manifest_and_canaries(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["prepare", str(SAMPLE), "--out", str(out), "--tokenizer", "none", "--canaries", "2", "--privacy-report"]) == 0
    printed = capsys.readouterr().out
    assert "dataset written to" in printed and "scrubbed" in printed
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    train = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert manifest["examples"]["train"] == len(train) > 0
    assert manifest["canaries"] == 2
    canaries = json.loads((out / "canaries.json").read_text(encoding="utf-8"))
    assert len(canaries) == 2
    for c in canaries:  # each planted secret is in exactly the training replies it names, never in validation
        carrying = [i for i, row in enumerate(train) if c["prefix"] + c["secret"] in row["messages"][-1]["content"]]
        assert carrying == c["examples"]
        assert c["secret"] not in (out / "validation.jsonl").read_text(encoding="utf-8")
    assert (out / "privacy_report.tsv").exists()


def test_too_many_canaries_is_a_clear_error(tmp_path, capsys):
    assert main(["prepare", str(SAMPLE), "--out", str(tmp_path / "d"), "--tokenizer", "none", "--canaries", "100000"]) == 2
    assert "--canaries 100000" in capsys.readouterr().err


def test_console_script_runs_as_a_module():
    r = subprocess.run([sys.executable, "-m", "clonekit.cli", "prepare", "/nonexistent.json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
