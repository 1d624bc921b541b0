"""Stage configs: flags from fields, JSON round-trip, all problems reported at once."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from clonekit.config import add_config_flags, check, config_from_args, load_config, opt, save_config
from clonekit.errors import ConfigError


@dataclass
class ToyConfig:
    steps: int = opt(10, "training steps")
    rate: float = opt(0.1, "a rate")
    name: str = opt("x", "a name")
    flag: bool = opt(False, "a switch")
    layers: list[str] = opt(["a"], "layer names")

    def __post_init__(self):
        check([f"steps must be >= 1, got {self.steps}"] if self.steps < 1 else [], "ToyConfig")


def test_flags_come_from_fields_and_defaults_stay():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, ToyConfig)
    cfg = config_from_args(ToyConfig, parser.parse_args(["--steps", "3", "--flag", "--layers", "q", "v"]))
    assert cfg == ToyConfig(steps=3, rate=0.1, name="x", flag=True, layers=["q", "v"])
    assert "training steps" in parser.format_help()


def test_json_round_trip(tmp_path):
    path = save_config(ToyConfig(steps=4, layers=["k"]), tmp_path / "c.json")
    assert load_config(ToyConfig, path) == ToyConfig(steps=4, layers=["k"])
    assert load_config(ToyConfig, path, steps=9).steps == 9


def test_check_lists_problems():
    with pytest.raises(ConfigError, match="ToyConfig: steps must be >= 1, got 0"):
        ToyConfig(steps=0)
    with pytest.raises(ConfigError) as e:
        check(["a is bad", "b is bad"], "X")
    assert e.value.problems == ["a is bad", "b is bad"] and str(e.value) == "X: a is bad; b is bad"
