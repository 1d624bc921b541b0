"""Pure reply scores on constructed inputs with known answers: style, distances, chrF, degeneration, detector, goals, quiz."""

from __future__ import annotations

import random

import pytest

from clonekit import metrics as M

RU = ["норм а ты", "дома, ну такое", "ага го", "неа лень", "давай в 7", "хз", "ок", "ахах да", "ну го завтра", "пофиг", "лол", "а ты где"]


def persona_replies(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(RU, 2)) + rng.choice(["", " 😎", ")"]) for _ in range(n)]


def assistant_replies(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"Hello! I would be happy to help you with {rng.choice(['that', 'this', 'your question'])}. "
            + rng.choice(["Certainly.", "Of course.", "Let me know!"]) for _ in range(n)]


def test_style_features_known_values():
    f = M.style_features("Ну ок...\nдавай 😎!")
    assert f["lines"] == 2 and f["words"] == 4 and f["chars"] == len("Ну ок...\nдавай 😎!")
    assert f["ellipsis_per_100"] == pytest.approx(100 / f["chars"]) and f["period_per_100"] == 0  # "..." is one ellipsis
    assert f["exclaim_per_100"] == pytest.approx(100 / f["chars"]) and f["emoji_per_100"] == pytest.approx(100 / f["chars"])
    assert f["starts_lower"] == 0.0 and f["upper_ratio"] == pytest.approx(1 / 9) and f["cyrillic_share"] == 1.0
    g = M.style_features("ok Да")
    assert g["starts_lower"] == 1.0 and g["cyrillic_share"] == pytest.approx(2 / 4)
    e = M.style_features("😎")  # no letters: letter features are unmeasurable, not zero
    assert e["starts_lower"] is None and e["upper_ratio"] is None and e["cyrillic_share"] is None and e["emoji_per_100"] == 100


def test_wasserstein_matches_scipy_and_is_zero_for_identical():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(1)
    a = [rng.gauss(0, 1) for _ in range(50)]
    b = [rng.expovariate(1.0) for _ in range(37)]
    assert M.wasserstein1(a, b) == pytest.approx(scipy_stats.wasserstein_distance(a, b))
    assert M.wasserstein1(a, list(reversed(a))) == 0
    assert M.style_distance([1, 2, 3, 4], [2, 3, 4, 5]) == pytest.approx(1 / (1.25 ** 0.5))  # shift 1 / std 1.118
    assert M.style_distance([1, 1], [3, 3]) == 2  # constant real values: plain W1
    with pytest.raises(ValueError):
        M.wasserstein1([], [1])


def test_identical_texts_have_zero_style_distance_and_chrf_100():
    real = persona_replies(20, 0)
    s = M.compare_style(real, list(real))
    assert s["mean_distance"] == 0 and all(v["distance"] == 0 for v in s["features"].values() if v["distance"] is not None)
    assert M.chrf(real, real) == 100
    assert s["distinct_1"]["real"] == s["distinct_1"]["generated"]


def test_different_style_is_far_and_close_style_is_near():
    real = persona_replies(30, 0)
    far = M.compare_style(real, assistant_replies(30, 1))
    near = M.compare_style(real, persona_replies(30, 2))
    assert far["mean_distance"] > 1.0 > 0.3 > near["mean_distance"]
    assert far["features"]["starts_lower"]["distance"] > 0.9 and far["features"]["cyrillic_share"]["generated_mean"] == 0


def test_distinct_n():
    assert M.distinct_n(["a b a b"], 1) == 0.5 and M.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert M.distinct_n(["a", "b"], 2) == 0.0  # no bigrams at all


def test_chrf_known_answer_and_bounds():
    assert M.chrf(["ac"], ["ab"], order=2) == pytest.approx(25.0)  # order 1: P=R=1/2, order 2: 0 -> mean 1/4
    assert M.chrf(["xyz"], ["абв"]) == 0.0 and M.chrf([""], ["hello"]) == 0.0
    assert M.chrf(["ну го завтра"], ["нугозавтра"]) == 100  # whitespace is ignored
    # recall weighs more than precision (beta = 2): a hypothesis with extra text beats one missing text
    assert M.chrf(["hello there my friend"], ["hello there"]) > M.chrf(["hello"], ["hello there"])
    assert 0 < M.chrf(["привет как дела"], ["привет как ты"]) < 100


def test_looping_reply_is_flagged_and_normal_ones_are_not():
    assert M.is_looping("I am fine I am fine I am fine I am fine I am fine")
    assert M.is_looping("хахахахахахахахахахахахахахахахахахахахаха")
    for ok in ("ну го завтра в 7, я как раз освобожусь после работы", "ага", "lol no 😎", "ха ха ха"):
        assert not M.is_looping(ok), ok


def test_wrong_language_and_scripts():
    assert M.script_of("привет") == "cyrillic" and M.script_of("hi there") == "latin" and M.script_of("😎 123") is None
    assert M.script_of("こんにちは") == "other"
    assert M.wrong_language("see you tomorrow", "до завтра")  # Latin reply where the person wrote Cyrillic
    assert not M.wrong_language("ок, до завтра ok", "давай")
    assert not M.wrong_language("😎", "давай")  # no letters: nothing to judge


def test_run_on_and_degeneration_summary():
    assert M.runs_on("sure<|im_start|>user\nhi") and M.runs_on("ок\nuser\nа ты?") and M.runs_on("ok", hit_limit=True)
    assert not M.runs_on("user friendly app, ok") and not M.runs_on("ну ок")
    flags = [M.degeneration_flags("", "ок"), M.degeneration_flags("ок", "ок"), M.degeneration_flags("hello", "привет", hit_limit=True)]
    assert flags[0]["empty"] and not any(flags[1].values()) and flags[2]["run_on"] and flags[2]["wrong_language"]
    s = M.degeneration_summary(flags)
    assert s == {"n": 3, "empty": 1, "loop": 0, "run_on": 1, "wrong_language": 1, "any": 2, "rate": pytest.approx(2 / 3)}


def test_score_generation_prefers_the_closer_set():
    real = persona_replies(20, 0)
    good = M.score_generation(real, persona_replies(20, 3))
    bad = M.score_generation(real, assistant_replies(20, 1), hit_limits=[True] * 20)
    assert good["score"] < bad["score"] and bad["degeneration"]["run_on"] == 20 and good["chrf"] > bad["chrf"]


def test_detector_cannot_tell_identical_sets_apart():
    real = persona_replies(30, 0)
    d = M.detector_scores(real, list(real))
    assert abs(d["accuracy"] - 0.5) <= 0.1 and abs(d["auc"] - 0.5) <= 0.1 and d["folds"] == 5


def test_detector_tells_clearly_different_sets_apart():
    d = M.detector_scores(persona_replies(30, 0), assistant_replies(30, 1))
    assert d["accuracy"] > 0.9 and d["auc"] > 0.9
    assert any(ch in "".join(d["tells_generated"]) for ch in "HelpCertainly")


def test_detector_with_too_few_replies_says_so():
    d = M.detector_scores(["ок"], ["ok"])
    assert d["accuracy"] is None and "too few" in d["note"]


def test_detector_on_embeddings_uses_the_given_function():
    np = pytest.importorskip("numpy")
    real, gen = persona_replies(20, 0), assistant_replies(20, 1)
    embed = lambda texts: np.array([[M.style_features(t)["cyrillic_share"] or 0.0, len(t) / 50] for t in texts])  # noqa: E731
    d = M.detector_scores(real, gen, embed=embed)
    assert d["features"] == "embeddings" and d["accuracy"] > 0.9 and "tells_real" not in d


def test_judge_parsing_and_position_bias_cancels():
    assert M.parse_choice("A") == "A" and M.parse_choice("Answer: b.") == "B"
    assert M.parse_choice("A or B") is None and M.parse_choice("no idea") is None
    always_a = M.judge_summary([("A", "A")] * 5)
    assert always_a["picked_real"] == 0.5 and always_a["said_a"] == 1.0
    assert M.judge_summary([("A", "B"), ("A", None)])["picked_real"] == 1.0
    msgs = M.judge_messages([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}], "one", "two")
    assert "Reply A:\none" in msgs[1]["content"] and "THEM: hi" in msgs[1]["content"] and "S" not in msgs[1]["content"]


def test_goal_lines_pass_miss_and_unmeasured():
    m = {"loss": {"base": 4.0, "clone": 3.0}, "detector": {"base": {"accuracy": 0.95}, "clone": {"accuracy": 0.7}},
         "degeneration": {"clone": {"run_on": 0, "n": 8}}}
    assert [ok for ok, _ in M.goal_lines(m)] == [True, True, True]
    m["loss"]["clone"] = 3.6  # only 10% lower
    m["detector"]["clone"]["accuracy"] = 0.97
    m["degeneration"]["clone"]["run_on"] = 2
    lines = M.goal_lines(m)
    assert [ok for ok, _ in lines] == [False, False, False] and "+10.0%" in lines[0][1]
    m["detector"] = {"base": {"accuracy": 0.45}, "clone": {"accuracy": 0.38}}  # both indistinguishable: below 0.5 is noise
    assert M.goal_lines(m)[1][0] is True
    assert [ok for ok, _ in M.goal_lines({})] == [None, None, None]


SAMPLES = [{"context": [{"role": "user", "content": f"q{i}"}], "real": f"real {i}", "clone": f"clone {i}", "base": f"base {i}"}
           for i in range(4)]


def test_quiz_state_scores_picks():
    q = M.make_quiz(SAMPLES, n=3, seed=0)
    assert len(q.questions) == 3 and q.score is None
    assert q.answer(q.current["real"]) is True
    assert q.answer(1 - q.current["real"]) is False
    assert q.score == 0.5 and not q.done
    q.answer(0)
    assert q.done and q.current is None
    with pytest.raises(ValueError, match="finished"):
        q.answer(0)
    three = M.make_quiz(SAMPLES, with_base=True)
    assert all(sorted(x["sources"]) == ["base", "clone", "real"] for x in three.questions)
    # the real reply's position is shuffled, not always first
    assert len({x["real"] for x in M.make_quiz(SAMPLES * 5, n=20, seed=1).questions}) == 2


def test_quiz_widget_is_clickable():
    pytest.importorskip("ipywidgets")
    widget, state = M.build_quiz(SAMPLES, n=2, seed=0)
    chat = widget.children[0]
    assert "q" in chat.value and state.questions[0]["candidates"][0] in chat.value
    state.buttons[state.current["real"]].click()
    state.buttons[1 - state.current["real"]].click()
    assert state.done and state.score == 0.5 and all(b.disabled for b in state.buttons)
    assert "1/2 right (50%)" in widget.children[2].value
