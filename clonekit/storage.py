"""Where every file lives, and writing it safely.

All paths come from here: the home folder (`CLONEKIT_HOME`, default
`~/.cache/clonekit`), the model cache, the notebooks' work folder
(`CLONEKIT_WORK`; on Colab the fast local disk, with Drive as the copy that
survives a disconnect: see drive.py), the standard names inside a run folder
and a work folder, the latest checkpoint. Writes are
atomic (temp file + rename), so a disconnect never leaves half a file.

    >>> run_paths("/tmp/run").adapter.name
    'adapter'
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import InputError


def home_dir() -> Path:
    """clonekit's own folder: `$CLONEKIT_HOME`, else `~/.cache/clonekit`."""
    return Path(os.environ.get("CLONEKIT_HOME") or Path.home() / ".cache" / "clonekit").expanduser()


def model_cache_dir() -> Path:
    return home_dir() / "models"


COLAB_WORK = Path("/content/clonekit_work")
COLAB_DRIVE = Path("/content/drive/MyDrive")


def work_dir() -> Path:
    """The notebooks' work folder: `$CLONEKIT_WORK`, else /content/clonekit_work on Colab, else CLONEKIT_HOME/work.

    On Colab this is the VM's local disk (fast, but wiped on disconnect); every
    stage copies its results to the Drive folder too (clonekit.drive). Off
    Colab it lives in clonekit's home, not in the current folder, so running
    the notebooks in a checkout leaves nothing beside them to commit by mistake.
    """
    env = os.environ.get("CLONEKIT_WORK")
    if env:
        return Path(env).expanduser().resolve()
    return COLAB_WORK if is_colab() else (home_dir() / "work").resolve()


def mounted_drive_dir() -> Path | None:
    """My Drive when it is mounted (`drive.mount('/content/drive')`), else None."""
    return COLAB_DRIVE if COLAB_DRIVE.is_dir() else None


@dataclass(frozen=True)
class WorkPaths:
    """The fixed layout of a work folder: one subfolder per stage (as `clonekit demo` writes it)."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run(self) -> Path:
        return self.root / "clone"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def gguf(self) -> Path:
        return self.root / "gguf"

    @property
    def stats(self) -> Path:
        return self.root / "stats"


def work_paths(root: str | Path | None = None) -> WorkPaths:
    """`work_paths("/w").run` is /w/clone; no argument: the default work folder.

    >>> work_paths("/w").run.as_posix()
    '/w/clone'
    """
    return WorkPaths(Path(root) if root is not None else work_dir())


def repo_root() -> Path:
    """The source checkout (for data_samples/), when clonekit runs from one."""
    return Path(__file__).resolve().parent.parent


def data_samples_dir() -> Path:
    return repo_root() / "data_samples"


@dataclass(frozen=True)
class RunPaths:
    """The fixed layout of a training run folder."""

    root: Path

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def train_config(self) -> Path:
        return self.root / "train_config.json"

    @property
    def dataset_config(self) -> Path:
        return self.root / "dataset_config.json"

    @property
    def history(self) -> Path:
        return self.root / "loss_history.json"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def result(self) -> Path:
        return self.root / "train_result.json"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"


def run_paths(root: str | Path) -> RunPaths:
    return RunPaths(Path(root))


def dataset_paths(root: str | Path) -> dict[str, Path]:
    root = Path(root)
    return {
        "train": root / "train.jsonl",
        "validation": root / "validation.jsonl",
        "manifest": root / "manifest.json",
        "config": root / "dataset_config.json",
        "privacy_report": root / "privacy_report.tsv",
    }


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist. Check the path, or run the stage that writes it first.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}). Re-create it by running the stage again.") from e


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically; returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist. Run `clonekit prepare` first, or pass the folder that holds train.jsonl.")
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{i}: not a JSON line ({e.msg}). Fix or delete that line.") from e
    return rows


_CKPT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints (those with trainer_state.json), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").exists():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint in `folder`, or None."""
    ckpts = list_checkpoints(folder)
    return ckpts[-1] if ckpts else None


def is_colab() -> bool:
    return "google.colab" in __import__("sys").modules or "COLAB_RELEASE_TAG" in os.environ


def dir_size(path: str | Path) -> int:
    """Bytes in all files under `path` (0 if missing)."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else (path.stat().st_size if path.exists() else 0)
