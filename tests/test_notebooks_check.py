"""scripts/check_notebooks.py: committed notebooks carry no outputs, and their badges and install cells agree.

Runs the real script (as CI and a pre-commit hook do) on the committed
notebooks and on copies broken one way at a time.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_notebooks.py"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _load_script():
    spec = importlib.util.spec_from_file_location("check_notebooks", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


check = _load_script()


def _problems(nb, rel="notebooks/02_finetune_lora.ipynb"):
    return check.check_notebook(nb, rel, check.repo_url())


def _nb(name="02_finetune_lora.ipynb"):
    return json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))


def _cell(nb, needle):
    return next(c for c in nb["cells"] if needle in "".join(c["source"]))


def test_the_committed_notebooks_pass():
    assert len(NOTEBOOKS) == 5
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 notebook(s) OK" in run.stdout


def test_a_notebook_with_outputs_fails_and_fix_clears_it(tmp_path):
    nb = _nb()
    cell = _cell(nb, "print(colab.gpu_advice(runtime))")
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["assistant: моё личное сообщение\n"]}]
    cell["execution_count"] = 3
    cell["metadata"]["execution"] = {"iopub.status.busy": "2025-01-01T00:00:00Z"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = tmp_path / "02_finetune_lora.ipynb"
    path.write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")

    run = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True)
    assert run.returncode == 1
    for words in ("has 1 output(s)", "execution count 3", "execution timestamps", "saved widget state"):
        assert words in run.stdout, run.stdout
    assert "моё личное" in path.read_text(encoding="utf-8")  # without --fix nothing is changed

    run = subprocess.run([sys.executable, str(SCRIPT), "--fix", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
    fixed = json.loads(path.read_text(encoding="utf-8"))
    assert "моё личное" not in path.read_text(encoding="utf-8") and "widgets" not in fixed["metadata"]
    assert fixed["cells"] == check.clear_outputs(nb)["cells"] and fixed["cells"] != nb["cells"]


def test_colab_must_omit_outputs_when_saving():
    nb = _nb()
    assert nb["metadata"]["colab"]["private_outputs"] is True
    nb["metadata"]["colab"]["private_outputs"] = False
    assert any("private_outputs" in p for p in _problems(nb))


def test_skip_execution_only_on_colab_only_cells():
    nb = _nb()
    _cell(nb, "config = form.config")["metadata"]["tags"] = ["skip-execution"]
    assert any("tagged skip-execution but is not a Colab-only cell" in p for p in _problems(nb))
    nb = _nb()
    del _cell(nb, "%pip install")["metadata"]["tags"]
    assert any("without the skip-execution tag" in p for p in _problems(nb))


@pytest.mark.parametrize("old, new, words", [
    ('"torch=={torch.__version__}"', "", "must pin"),
    ("https://github.com/clonekit/clonekit", "https://github.com/someone/fork", "must set REPO"),
])
def test_install_cell_pins_torch_and_uses_the_badge_repository(old, new, words):
    nb = _nb()
    cell = _cell(nb, "%pip install")
    assert old in "".join(cell["source"])
    cell["source"] = ["".join(cell["source"]).replace(old, new)]
    assert any(words in p for p in _problems(nb)), _problems(nb)


def test_badge_must_open_this_notebook_in_the_one_repository():
    nb = _nb()
    assert _problems(nb) == []
    assert any("expected clonekit/clonekit/blob/main/notebooks/03" in p for p in _problems(nb, "notebooks/03_chat_and_evaluate.ipynb"))
    broken = copy.deepcopy(nb)
    broken["cells"][0]["source"] = ["".join(nb["cells"][0]["source"]).replace("github/clonekit/clonekit", "github/other/clonekit")]
    assert any("the Colab badge opens other/clonekit" in p for p in _problems(broken))
    broken["cells"][0]["source"] = ["# no badge"]
    assert "no Open-in-Colab badge" in _problems(broken)


def test_readme_badges_agree():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert check.check_readme(readme, check.repo_url()) == []
    assert check.check_readme(readme.replace("/notebooks/05_gguf", "/notebooks/06_gguf"), check.repo_url())
