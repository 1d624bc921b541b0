"""What every stage config shares: JSON round-trip, collected checks, CLI flags.

Each stage has one `@dataclass` config (`DatasetConfig`, `TrainConfig`, ...)
whose fields carry `metadata={"help": ...}`. The notebook builds one, the CLI
builds one from flags (`add_config_flags`), the tests build one with tiny
values; it is saved as JSON beside the stage's output.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class DemoConfig:
    ...     steps: int = opt(10, "training steps")
    >>> config_to_dict(DemoConfig(steps=3))
    {'steps': 3}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def opt(default: Any, help: str, **extra: Any) -> Any:
    """A config field with a default and one line of help."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **extra})
    return dataclasses.field(default=default, metadata={"help": help, **extra})


def config_to_dict(config: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = config_to_dict(v)
        out[f.name] = str(v) if isinstance(v, Path) else v
    return out


def save_config(config: Any, path: str | Path) -> Path:
    from .storage import write_json

    return write_json(path, {"type": type(config).__name__, **config_to_dict(config)})


def load_config(cls: type[T], path: str | Path, **overrides: Any) -> T:
    """Read a config saved by `save_config`; unknown keys are ignored (newer versions may add some)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**kwargs)


def check(problems: list[str], where: str) -> None:
    """Raise one ConfigError listing every problem, or nothing."""
    if problems:
        raise ConfigError(problems, where)


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if args else str
    return tp


def add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one `--flag` per config field (the field's help, its default shown)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("cli") is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(tp) in (list, tuple):
            parser.add_argument(flag, dest=f.name, nargs="+", default=None, help=help_text)
        elif typing.get_origin(tp) is dict:
            parser.add_argument(flag, dest=f.name, type=json.loads, default=None, help=help_text + " as JSON")
        else:
            parser.add_argument(flag, dest=f.name, type=tp if tp in (int, float) else str, default=None, help=help_text)


def config_from_args(cls: type[T], args: argparse.Namespace, **fixed: Any) -> T:
    """Build a config from parsed flags: flags left out keep the dataclass default."""
    kwargs = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    kwargs.update({k: v for k, v in fixed.items() if v is not None})
    return cls(**kwargs)
