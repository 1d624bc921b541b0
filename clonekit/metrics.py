"""Pure scores for "does it sound like the person?": strings in, numbers out.

`clonekit.evaluate` runs the models and calls these; each one is importable and
tested on its own. What they measure:

- style: per-reply features (length, lines, emoji and punctuation per 100
  characters, capitalization, Cyrillic share) compared real vs generated with
  a normalized Wasserstein-1 distance: W1 between the two empirical
  distributions divided by the standard deviation of the real values (W1 itself
  when the real values are all equal). 0 = same distribution; 1 = the mass moved
  one real standard deviation on average. Plus corpus-level distinct-1/2.
- chrF: character 6-gram F-score (beta 2, whitespace ignored, Popović 2015),
  0-100, 100 = identical text. Corpus chrF sums n-gram counts over all pairs.
- detector: character n-gram TF-IDF + logistic regression, cross-validated
  (stratified group k-fold: the real and generated reply to one prompt share a
  fold, so the detector cannot learn the prompt). Accuracy 0.5 = can't tell.
- degeneration: empty replies, loops, run-on past the end of turn, wrong script.
- QuizState / build_quiz: the human check for notebook 03 (ipywidgets).

    >>> chrf(["привет как дела"], ["привет как дела"])
    100.0
    >>> is_looping("ok sure ok sure ok sure ok sure ok sure ok sure")
    True
    >>> wrong_language("see you tomorrow", "до завтра")
    True
"""

from __future__ import annotations

import math
import random
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .stats import find_emoji

_CYR = re.compile(r"[\u0400-\u04FF]")
_LAT = re.compile(r"[A-Za-z\u00C0-\u024F]")
# What a decoded reply shows when the model ran past its end of turn into the next one.
TURN_HEADER = re.compile(
    r"<\|im_start\|>|<\|im_end\|>|<\|eot_id\|>|<\|start_header_id\|>|<start_of_turn>|<end_of_turn>|\[/?INST\]|<\|(?:user|assistant|system)\|>"
    r"|(?:^|\n)[ \t]*(?:user|assistant|system)[ \t]*(?::|\n)", re.IGNORECASE)
PUNCTUATION = {"period": ".", "comma": ",", "exclaim": "!", "question": "?", "ellipsis": "…"}
FEATURES = ("chars", "words", "lines", "emoji_per_100", *(f"{k}_per_100" for k in PUNCTUATION),
            "starts_lower", "upper_ratio", "cyrillic_share")


# ---------------------------------------------------------------- style


def style_features(text: str) -> dict[str, float | None]:
    """Numbers that describe how one reply looks (None where a feature has no letters to measure).

    >>> f = style_features("ну ок...\\nдавай 😎")
    >>> f["lines"], f["emoji_per_100"] > 0, f["ellipsis_per_100"] > 0, f["starts_lower"], f["cyrillic_share"]
    (2, True, True, 1.0, 1.0)
    """
    t = text.strip()
    norm = t.replace("...", "…")
    n = max(len(t), 1)
    letters = [c for c in t if c.isalpha()]
    cased = [c for c in letters if c.islower() or c.isupper()]
    cyr, lat = len(_CYR.findall(t)), len(_LAT.findall(t))
    out: dict[str, float | None] = {
        "chars": len(t),
        "words": len(t.split()),
        "lines": sum(1 for line in t.splitlines() if line.strip()),
        "emoji_per_100": 100 * len(find_emoji(t)) / n,
    }
    for name, ch in PUNCTUATION.items():
        out[f"{name}_per_100"] = 100 * norm.count(ch) / n
    out["starts_lower"] = (1.0 if cased[0].islower() else 0.0) if cased else None
    out["upper_ratio"] = sum(c.isupper() for c in cased) / len(cased) if cased else None
    out["cyrillic_share"] = cyr / (cyr + lat) if cyr + lat else None
    return out


def wasserstein1(a: Sequence[float], b: Sequence[float]) -> float:
    """Earth mover's distance between two samples of numbers (same units as the values).

    >>> wasserstein1([0, 0], [1, 1]), wasserstein1([1, 2, 3], [3, 2, 1])
    (1.0, 0.0)
    """
    if not a or not b:
        raise ValueError("wasserstein1 needs two non-empty samples")
    a, b = sorted(a), sorted(b)
    xs = sorted(set(a) | set(b))
    total = 0.0
    for x0, x1 in zip(xs, xs[1:]):
        total += abs(bisect_right(a, x0) / len(a) - bisect_right(b, x0) / len(b)) * (x1 - x0)
    return total


def _std(xs: Sequence[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def style_distance(real: Sequence[float], generated: Sequence[float]) -> float:
    """W1 between the samples divided by the std of the real ones (W1 itself when they are all equal)."""
    scale = _std(real)
    w = wasserstein1(real, generated)
    return w / scale if scale > 0 else w


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over a set of replies (vocabulary richness, 0-1)."""
    grams: Counter[tuple[str, ...]] = Counter()
    for t in texts:
        w = t.lower().split()
        grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def compare_style(real: Sequence[str], generated: Sequence[str]) -> dict[str, Any]:
    """Each style feature real vs generated (means and distance), distinct-1/2, and the mean distance.

    >>> compare_style(["ну ок", "Привет!"], ["ну ок", "Привет!"])["mean_distance"]
    0.0
    """
    fr = [style_features(t) for t in real]
    fg = [style_features(t) for t in generated]
    features: dict[str, dict[str, float | None]] = {}
    for name in FEATURES:
        a = [f[name] for f in fr if f[name] is not None]
        b = [f[name] for f in fg if f[name] is not None]
        features[name] = {
            "real_mean": sum(a) / len(a) if a else None,
            "generated_mean": sum(b) / len(b) if b else None,
            "distance": style_distance(a, b) if a and b else None,
        }
    dists = [v["distance"] for v in features.values() if v["distance"] is not None]
    return {
        "features": features,
        "mean_distance": sum(dists) / len(dists) if dists else None,
        "distinct_1": {"real": distinct_n(real, 1), "generated": distinct_n(generated, 1)},
        "distinct_2": {"real": distinct_n(real, 2), "generated": distinct_n(generated, 2)},
    }


# ---------------------------------------------------------------- chrF


def _char_ngrams(text: str, n: int) -> Counter[str]:
    s = "".join(text.split())  # chrF ignores whitespace
    return Counter(s[i:i + n] for i in range(len(s) - n + 1))


def chrf_stats(hyp: str, ref: str, order: int = 6) -> list[tuple[int, int, int]]:
    """Per n-gram order: (hypothesis n-grams, reference n-grams, matches)."""
    out = []
    for n in range(1, order + 1):
        h, r = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        out.append((sum(h.values()), sum(r.values()), sum((h & r).values())))
    return out


def chrf_from_stats(stats: Sequence[tuple[int, int, int]], beta: float = 2.0) -> float:
    """chrF from summed counts: mean precision and recall over the orders both sides have, then F-beta, x100."""
    used = [(m / h, m / r) for h, r, m in stats if h and r]
    if not used:
        return 0.0
    p = sum(x for x, _ in used) / len(used)
    r = sum(y for _, y in used) / len(used)
    b2 = beta * beta
    return 100 * (1 + b2) * p * r / (b2 * p + r) if p + r else 0.0


def chrf(hyps: Sequence[str], refs: Sequence[str], order: int = 6, beta: float = 2.0) -> float:
    """Corpus chrF (counts summed over pairs), 0-100.

    >>> round(chrf(["ac"], ["ab"], order=2), 1)
    25.0
    """
    assert len(hyps) == len(refs), (len(hyps), len(refs))
    total = [[0, 0, 0] for _ in range(order)]
    for h, r in zip(hyps, refs):
        for k, s in enumerate(chrf_stats(h, r, order)):
            total[k] = [x + y for x, y in zip(total[k], s)]
    return chrf_from_stats([tuple(t) for t in total], beta)  # type: ignore[misc]


# ---------------------------------------------------------------- degeneration


def repeated_share(tokens: Sequence[Any], n: int) -> float:
    """Share of n-gram positions whose n-gram already occurred earlier in the sequence."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def is_looping(text: str, threshold: float = 0.5, min_words: int = 8, min_chars: int = 30) -> bool:
    """A repetition loop: over `threshold` of the word 3-grams (or character 6-grams) repeat earlier ones.

    >>> is_looping("ха ха"), is_looping("I'm at home, going to watch a film tonight with my sister")
    (False, False)
    """
    words = text.split()
    if len(words) >= min_words and repeated_share(words, 3) > threshold:
        return True
    s = "".join(words)
    return len(s) >= min_chars and repeated_share(s, 6) > threshold


def script_of(text: str) -> str | None:
    """'cyrillic' or 'latin' (whichever has more letters), 'other' for other letters, None for no letters."""
    cyr, lat = len(_CYR.findall(text)), len(_LAT.findall(text))
    if cyr or lat:
        return "cyrillic" if cyr >= lat else "latin"
    return "other" if any(c.isalpha() for c in text) else None


def wrong_language(reply: str, reference: str) -> bool:
    """The reply is written in another script than the reference (the real reply, or the context)."""
    a, b = script_of(reply), script_of(reference)
    return a is not None and b is not None and a != b


def runs_on(text: str, hit_limit: bool = False) -> bool:
    """Generation never closed its turn (hit max_new_tokens without end-of-turn) or wrote a next turn's header."""
    return hit_limit or bool(TURN_HEADER.search(text))


def degeneration_flags(reply: str, reference: str, hit_limit: bool = False) -> dict[str, bool]:
    """Which kinds of degeneration one generated reply shows."""
    return {"empty": not reply.strip(), "loop": is_looping(reply), "run_on": runs_on(reply, hit_limit),
            "wrong_language": wrong_language(reply, reference)}


def degeneration_summary(flags: Sequence[dict[str, bool]]) -> dict[str, Any]:
    """Counts per kind, and the share of replies with any problem."""
    kinds = ("empty", "loop", "run_on", "wrong_language")
    counts = {k: sum(f[k] for f in flags) for k in kinds}
    bad = sum(any(f[k] for k in kinds) for f in flags)
    return {"n": len(flags), **counts, "any": bad, "rate": bad / len(flags) if flags else 0.0}


def tuning_score(mean_style_distance: float | None, degeneration_rate: float) -> float:
    """Lower is better: style distance plus the degenerate share (one bad reply in ten costs 0.1 std of style)."""
    return (mean_style_distance if mean_style_distance is not None else 1.0) + degeneration_rate


def score_generation(real: Sequence[str], generated: Sequence[str], references: Sequence[str] | None = None,
                     hit_limits: Sequence[bool] | None = None) -> dict[str, Any]:
    """Style, chrF and degeneration of generated replies against the real ones (same order).

    `references` decide the expected script (default: the real replies); `hit_limits`
    say which generations stopped at max_new_tokens without an end-of-turn token.
    """
    refs = references or real
    hits = hit_limits or [False] * len(generated)
    flags = [degeneration_flags(g, r, h) for g, r, h in zip(generated, refs, hits)]
    style = compare_style(real, generated)
    deg = degeneration_summary(flags)
    return {"style": style, "chrf": chrf(generated, real), "degeneration": deg, "flags": flags,
            "score": tuning_score(style["mean_distance"], deg["rate"])}


# ---------------------------------------------------------------- detector


def detector_scores(real: Sequence[str], generated: Sequence[str], groups: Sequence[int] | None = None,
                    folds: int = 5, seed: int = 0, embed: Callable[[list[str]], Any] | None = None) -> dict[str, Any]:
    """Cross-validated accuracy and ROC AUC of a classifier telling real replies from generated ones.

    Features are character 1-4-gram TF-IDF (case kept: capitalization is style),
    or `embed(texts) -> array` when given. `groups` ties a real reply to the
    generated one for the same prompt (default: pairs by position when the
    counts match) so both land in the same fold. 0.5 = indistinguishable.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    texts = [*real, *generated]
    y = [1] * len(real) + [0] * len(generated)
    if groups is None:
        groups = list(range(len(real))) + (list(range(len(generated))) if len(real) == len(generated)
                                           else list(range(len(real), len(texts))))
    k = min(folds, len(real), len(generated), len(set(groups)))
    base = {"n_real": len(real), "n_generated": len(generated), "folds": k, "features": "embeddings" if embed else "char 1-4-gram tf-idf"}
    if k < 2:
        return {**base, "accuracy": None, "auc": None, "note": "too few replies for cross-validation"}
    clf = LogisticRegression(max_iter=2000, C=1.0)
    if embed is None:
        model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), lowercase=False, sublinear_tf=True), clf)
        X: Any = [t if t.strip() else "∅" for t in texts]  # an empty reply is itself a tell
    else:
        model, X = clf, embed(texts)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    p = cross_val_predict(model, X, y, groups=groups, cv=cv, method="predict_proba")[:, 1]
    acc = sum((pi > 0.5) == bool(yi) for pi, yi in zip(p, y)) / len(y)  # ties (0.5) count as "generated"
    out = {**base, "accuracy": float(acc), "auc": float(roc_auc_score(y, p))}
    if embed is None:
        model.fit(X, y)  # what gives the generated replies away, on all data
        names = model[0].get_feature_names_out()
        coef = model[1].coef_[0]
        order = sorted(range(len(coef)), key=lambda i: coef[i])
        out["tells_generated"] = [names[i] for i in order[:8]]
        out["tells_real"] = [names[i] for i in order[::-1][:8]]
    return out


# ---------------------------------------------------------------- LLM judge (pure parts)

JUDGE_SYSTEM = ("You compare two candidate replies in a private chat. Exactly one of them was written by the real "
                "person; the other by an imitation. Answer with the single letter A or B: which one did the real person write?")


def judge_messages(context: Sequence[dict[str, str]], a: str, b: str) -> list[dict[str, str]]:
    """The chat-completions messages asking which of two replies is the real one."""
    chat = "\n".join(f"{'THEM' if m['role'] == 'user' else 'PERSON'}: {m['content']}" for m in context if m["role"] != "system")
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": f"Chat so far:\n{chat}\n\nReply A:\n{a}\n\nReply B:\n{b}\n\nWhich reply is the real person's? Answer A or B."}]


def parse_choice(answer: str) -> str | None:
    """'A' or 'B' from a judge's answer, or None when it gives neither (or both)."""
    found = set(re.findall(r"\b([AB])\b", answer.upper()))
    return found.pop() if len(found) == 1 else None


def judge_summary(picks: Sequence[tuple[str | None, str | None]]) -> dict[str, Any]:
    """picks: per item, the judge's letter with the real reply shown as A, then as B.

    Showing each pair in both orders cancels position bias: a judge that always
    says "A" scores exactly 0.5.
    """
    right = sum((p1 == "A") + (p2 == "B") for p1, p2 in picks)
    answered = sum((p1 is not None) + (p2 is not None) for p1, p2 in picks)
    said_a = sum((p1 == "A") + (p2 == "A") for p1, p2 in picks)
    return {"items": len(picks), "answers": answered, "unparsed": 2 * len(picks) - answered,
            "picked_real": right / answered if answered else None, "said_a": said_a / answered if answered else None}


# ---------------------------------------------------------------- goals


def goal_lines(m: dict[str, Any], loss_drop: float = 0.15) -> list[tuple[bool | None, str]]:
    """The issue's three goals as (passed, line); passed is None when not measured."""
    out: list[tuple[bool | None, str]] = []
    lb, lc = m.get("loss", {}).get("base"), m.get("loss", {}).get("clone")
    if lb and lc is not None:
        drop = (lb - lc) / lb
        out.append((drop >= loss_drop, f"held-out loss {100 * drop:+.1f}% vs base ({lb:.3f} -> {lc:.3f}); goal: >= {100 * loss_drop:.0f}% lower"))
    else:
        out.append((None, "held-out loss vs base: not measured"))
    db, dc = (m.get("detector", {}).get(k, {}).get("accuracy") for k in ("base", "clone"))
    if db is not None and dc is not None:
        # below 0.5 is cross-validation noise on sets it cannot tell apart: count it as 0.5
        cb, cc = max(db, 0.5), max(dc, 0.5)
        out.append((cc < cb or cc == 0.5, f"detector accuracy clone {dc:.2f} vs base {db:.2f}; goal: clone closer to 0.50"))
    else:
        out.append((None, "detector accuracy: not measured"))
    deg = m.get("degeneration", {}).get("clone")
    if deg:
        out.append((deg["run_on"] == 0, f"run-on replies past end of turn: {deg['run_on']} of {deg['n']}; goal: 0"))
    else:
        out.append((None, "run-on replies: not measured"))
    return out


# ---------------------------------------------------------------- human quiz


@dataclass
class QuizState:
    """A "which reply is the real one?" quiz. `answer(i)` picks candidate i of the current question."""

    questions: list[dict[str, Any]]  # {"context": [...], "candidates": [str, ...], "real": index, "sources": [...]}
    answers: list[int] = field(default_factory=list)
    buttons: list[Any] = field(default_factory=list, repr=False)  # the widget's buttons (build_quiz fills them)

    @property
    def current(self) -> dict[str, Any] | None:
        return self.questions[len(self.answers)] if not self.done else None

    @property
    def done(self) -> bool:
        return len(self.answers) >= len(self.questions)

    def answer(self, i: int) -> bool:
        """Record pick `i` for the current question; True when it was the real reply."""
        q = self.current
        if q is None:
            raise ValueError("the quiz is finished")
        if not 0 <= i < len(q["candidates"]):
            raise ValueError(f"pick 0..{len(q['candidates']) - 1}, got {i}")
        self.answers.append(i)
        return i == q["real"]

    @property
    def correct(self) -> int:
        return sum(a == q["real"] for a, q in zip(self.answers, self.questions))

    @property
    def score(self) -> float | None:
        """Share of answered questions where the real reply was picked (chance = 1 / candidates)."""
        return self.correct / len(self.answers) if self.answers else None


def make_quiz(samples: Sequence[dict[str, Any]], n: int = 10, seed: int = 0, with_base: bool = False) -> QuizState:
    """Questions from eval samples ({"context", "real", "clone", "base"?}), candidates shuffled.

    >>> q = make_quiz([{"context": [], "real": "ага", "clone": "да"}], seed=1)
    >>> q.answer(q.questions[0]["real"]), q.score
    (True, 1.0)
    """
    rng = random.Random(seed)
    picked = [s for s in samples if s.get("clone") is not None and s["clone"].strip() != s["real"].strip()]
    rng.shuffle(picked)
    questions = []
    for s in picked[:n]:
        cands = [("real", s["real"]), ("clone", s["clone"])] + ([("base", s["base"])] if with_base and s.get("base") else [])
        rng.shuffle(cands)
        questions.append({"context": s["context"], "candidates": [t for _, t in cands],
                          "sources": [k for k, _ in cands], "real": [k for k, _ in cands].index("real")})
    return QuizState(questions)


def build_quiz(samples: Sequence[dict[str, Any]], n: int = 10, seed: int = 0, with_base: bool = False):
    """(widget, state): an ipywidgets quiz; `state.buttons[i].click()` answers programmatically."""
    import html

    import ipywidgets as w

    state = make_quiz(samples, n, seed, with_base)
    k = max((len(q["candidates"]) for q in state.questions), default=2)
    chat, status = w.HTML(), w.HTML()
    buttons = [w.Button(description=f"reply {chr(65 + i)} is real", layout=w.Layout(width="auto")) for i in range(k)]

    def show() -> None:
        q = state.current
        s = state.score
        tally = f"{state.correct}/{len(state.answers)} right" + (f" ({100 * s:.0f}%)" if s is not None else "")
        if q is None:
            chance = 100 // k
            chat.value = "<b>Done.</b>"
            status.value = f"{tally}. Chance is {chance}%: near it means your friend can't tell the clone apart."
            for b in buttons:
                b.disabled = True
            return
        lines = [f"<div><b>{'them' if m['role'] == 'user' else 'person'}:</b> {html.escape(m['content'])}</div>"
                 for m in q["context"] if m["role"] != "system"]
        opts = [f"<div style='margin:4px 0'><b>{chr(65 + i)}:</b> {html.escape(c)}</div>" for i, c in enumerate(q["candidates"])]
        chat.value = "".join(lines) + "<hr>" + "".join(opts)
        status.value = f"question {len(state.answers) + 1} of {len(state.questions)}; {tally}"
        for i, b in enumerate(buttons):
            b.layout.display = None if i < len(q["candidates"]) else "none"

    for i, b in enumerate(buttons):
        b.on_click(lambda _b, i=i: (state.answer(i), show()))
    state.buttons = buttons
    show()
    return w.VBox([chat, w.HBox(buttons), status]), state
