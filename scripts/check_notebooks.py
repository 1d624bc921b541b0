#!/usr/bin/env python3
"""Check the notebooks before they are committed; exit 1 naming each problem.

A notebook run on your own export shows your messages in its outputs (and in
the saved widget state), so committed notebooks must carry none. Also checked,
because a newcomer only ever clicks the badge and runs the cells:
  - `skip-execution` (nbmake skips the cell) only on Colab-only cells
    (`%pip install`, `google.colab`), and every Colab-only cell has it;
  - the Colab badge opens this very notebook from the repository in
    clonekit.colab.REPO_URL, and the install cell installs from that repository;
  - the install cell pins torch to the build Colab ships (`"torch=={torch.__version__}"`),
    so pip never swaps Colab's CUDA torch for a multi-GB download;
  - Colab's "omit code cell output when saving" is on (`metadata.colab.private_outputs`),
    so the copy Colab saves to your Drive does not keep your messages either.

Run as: python scripts/check_notebooks.py [--fix] [NOTEBOOK.ipynb ...]   (default: notebooks/*.ipynb)
--fix clears outputs, execution counts and widget state in place, then checks.
As a git pre-commit hook:
    printf '#!/bin/sh\\nexec .venv/bin/python scripts/check_notebooks.py\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SKIP_TAG = "skip-execution"
COLAB_ONLY = re.compile(r"^\s*[%!]pip\s+install|google\.colab", re.M)
BADGE = re.compile(r"https://colab\.research\.google\.com/github/([^/\s)]+/[^/\s)]+)/blob/([^/\s)]+)/([^\s)]+\.ipynb)")
TORCH_PIN = '"torch=={torch.__version__}"'


def repo_url() -> str:
    """clonekit.colab.REPO_URL, read from the source (this check must not need clonekit installed)."""
    text = (ROOT / "clonekit" / "colab.py").read_text(encoding="utf-8")
    m = re.search(r'^REPO_URL\s*=\s*"([^"]+)"', text, re.M)
    assert m, "REPO_URL not found in clonekit/colab.py"
    return m.group(1)


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def check_notebook(nb: dict[str, Any], rel_path: str, repo: str) -> list[str]:
    """Problems in one notebook (empty: fine). `rel_path` is its path in the repository, e.g. notebooks/01_x.ipynb."""
    problems = []
    slug = repo.removeprefix("https://github.com/").rstrip("/")
    if "widgets" in nb.get("metadata", {}):
        problems.append("saved widget state in the notebook metadata (it can hold your messages): clear it")
    if nb.get("metadata", {}).get("colab", {}).get("private_outputs") is not True:
        problems.append("metadata.colab.private_outputs is not true: Colab would save the outputs (your messages) with the notebook")
    badges = []
    for i, cell in enumerate(nb.get("cells", [])):
        where = f"cell {i}"
        src = _source(cell)
        tags = cell.get("metadata", {}).get("tags", [])
        badges += [(where, m) for m in BADGE.finditer(src)]
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"{where}: has {len(cell['outputs'])} output(s) (they may show your messages): clear all outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"{where}: execution count {cell['execution_count']}: clear all outputs")
        if "execution" in cell.get("metadata", {}):
            problems.append(f"{where}: execution timestamps in the cell metadata: clear all outputs")
        colab_only = bool(COLAB_ONLY.search(src))
        if SKIP_TAG in tags and not colab_only:
            problems.append(f"{where}: tagged {SKIP_TAG} but is not a Colab-only cell: nbmake must run it")
        if colab_only and SKIP_TAG not in tags:
            problems.append(f"{where}: Colab-only cell (pip install / google.colab) without the {SKIP_TAG} tag")
        if re.search(r"^\s*[%!]pip\s+install", src, re.M):
            if TORCH_PIN not in src:
                problems.append(f"{where}: the install cell must pin {TORCH_PIN} so pip keeps Colab's torch")
            named = re.findall(r'REPO\s*=\s*"([^"]+)"', src)
            if named != [repo]:
                problems.append(f"{where}: the install cell must set REPO = \"{repo}\" (clonekit.colab.REPO_URL), found {named}")
            if "git+{REPO}" not in src:
                problems.append(f"{where}: the install cell must install from git+{{REPO}}")
    if not badges:
        problems.append("no Open-in-Colab badge")
    for where, m in badges:
        if (m.group(1), m.group(2), m.group(3)) != (slug, "main", rel_path):
            problems.append(f"{where}: the Colab badge opens {m.group(1)}/blob/{m.group(2)}/{m.group(3)}, "
                            f"expected {slug}/blob/main/{rel_path}")
    return problems


def check_readme(text: str, repo: str) -> list[str]:
    """The README's Colab badges point at the same repository and at notebooks that exist."""
    slug = repo.removeprefix("https://github.com/").rstrip("/")
    problems = []
    for m in BADGE.finditer(text):
        if m.group(1) != slug or m.group(2) != "main":
            problems.append(f"README.md: a Colab badge opens {m.group(1)}/blob/{m.group(2)}, expected {slug}/blob/main")
        if not (ROOT / m.group(3)).exists():
            problems.append(f"README.md: a Colab badge opens {m.group(3)}, which does not exist")
    return problems


def clear_outputs(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook without outputs, execution counts, execution timestamps or widget state."""
    nb = json.loads(json.dumps(nb))
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        cell.get("metadata", {}).pop("execution", None)
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    ap.add_argument("--fix", action="store_true", help="clear outputs in place first")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    repo, failed = repo_url(), 0
    for path in paths:
        path = path.resolve()
        nb = json.loads(path.read_text(encoding="utf-8"))
        if args.fix and clear_outputs(nb) != nb:
            nb = clear_outputs(nb)
            path.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            print(f"{path}: outputs cleared")
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else f"notebooks/{path.name}"
        for problem in check_notebook(nb, rel, repo):
            print(f"{path}: {problem}")
            failed += 1
    readme = ROOT / "README.md"
    if not args.notebooks and readme.exists():
        for problem in check_readme(readme.read_text(encoding="utf-8"), repo):
            print(problem)
            failed += 1
    if failed:
        print(f"{failed} problem(s) in the notebooks; `python scripts/check_notebooks.py --fix` clears outputs.")
        return 1
    print(f"{len(paths)} notebook(s) OK: no outputs, skip-execution only on Colab-only cells, badges and install cell consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
