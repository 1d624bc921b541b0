"""Tests for clonekit.privacy.leakage: planted canaries, their exposure, and leakage probes on a real tiny model.

The probes built from scrubbed items (scrubbed_item_probes) are tested beside the redaction they come from, in
test_privacy.py.
"""

from __future__ import annotations

import copy
import doctest
from pathlib import Path

import pytest

from clonekit.privacy import canary_exposure, insert_canaries, leakage, leakage_probe
from clonekit.records import Example


def test_module_doctests():
    assert doctest.testmod(leakage).failed == 0


def examples(n: int) -> list[Example]:
    return [Example([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}], f"c{i}") for i in range(n)]


def test_insert_canaries():
    ex = examples(10)
    before = copy.deepcopy(ex)
    new, canaries = insert_canaries(ex, n=2, seed=7, repeats=2)
    assert ex == before and len(new) == 10 and len(canaries) == 2
    assert (new, canaries) == insert_canaries(ex, n=2, seed=7, repeats=2)
    for c in canaries:
        holders = [i for i, e in enumerate(new) if c.text in e.messages[-1]["content"]]
        assert holders == list(c.examples) and len(holders) == 2
        assert len(c.secret.split()) == 6 and all(d.isdigit() for d in c.secret.split())
    assert insert_canaries(ex, n=2, seed=8)[1] != canaries
    with pytest.raises(ValueError, match="need 20 examples"):
        insert_canaries(ex, n=10, repeats=2)


@pytest.fixture(scope="module")
def tiny_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import os

    os.environ.setdefault("CLONEKIT_HOME", str(Path(__file__).resolve().parents[1] / ".clonekit"))
    from clonekit.models import resolve_base_model

    path = resolve_base_model("smollm2-135m-instruct")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine more threads only wait on each other
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    yield model, tok
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_canary_exposure_high_when_copyable_low_when_random(tiny_model):
    model, tok = tiny_model
    secret = "4 8 1 5 9 2"
    copyable = canary_exposure(model, tok, f"Note: my pin code is {secret}. Again: my pin code is ", secret,
                               n_candidates=31, seed=1)
    assert copyable["max_exposure"] == 5.0 and copyable["n_candidates"] == 31
    assert copyable["rank"] <= 2 and copyable["exposure"] >= 4.0, copyable
    unseen = [canary_exposure(model, tok, "my pin code is ", s, n_candidates=31, seed=i)["exposure"]
              for i, s in enumerate(["7 3 0 6 2 8", "2 9 5 1 4 6"])]
    assert sum(unseen) / len(unseen) < 3.0, unseen
    assert copyable["exposure"] - max(unseen) >= 1.5, (copyable, unseen)


@pytest.mark.slow
def test_leakage_probe_catches_a_copied_value(tiny_model):
    model, tok = tiny_model
    copyable = "Contact: 730628\nContact: 730628\nContact: 730628\nContact:"
    result = leakage_probe(model, tok, [copyable, "Contact:"], ["730628", "730628"])
    assert result["n"] == 2 and result["leaked"] == 1 and result["items"][0]["index"] == 0, result
    assert result["items"][0]["masked"] == "7*****"
