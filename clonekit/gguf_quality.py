"""How much each GGUF quant type loses, measured, plus the importance matrix.

For every GGUF of one model the table gives file size, bits per weight, perplexity
on the validation conversations, KL divergence and top-1 agreement of the
next-token distribution against the unquantized (F16) GGUF, and generation speed
on this CPU. All scores are on the ASSISTANT tokens of the conversations (the
replies the clone writes, end-of-turn token included), read from llama.cpp with
logits for every position. `recommend_quant` picks the smallest type within a
tolerance of the reference.

Run through `clonekit gguf --quants all` (see clonekit.gguf) or
`python bench/gguf_quality.py`.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import InputError, require


@dataclass
class EvalSequence:
    ids: list[int]
    mask: list[bool]  # True where the token belongs to an assistant reply


# ------------------------------------------------------------------ inputs


def load_conversations(path: str | Path) -> list[list[dict[str, str]]]:
    """Conversations from a JSONL of {"messages": [{"role", "content"}, ...]}; bad rows are counted and reported."""
    from .storage import read_jsonl

    rows, bad = read_jsonl(path), []
    out = []
    for i, row in enumerate(rows, 1):
        msgs = row.get("messages") if isinstance(row, dict) else None
        ok = isinstance(msgs, list) and any(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs) and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ("system", "user", "assistant") for m in msgs)
        (out.append(msgs) if ok else bad.append(i))
    if not out:
        raise InputError(f"{path}: none of {len(rows)} lines has a 'messages' list with an assistant turn (bad lines: {bad[:5]}). Use the validation.jsonl written by `clonekit prepare`.")
    if bad:
        import logging

        logging.getLogger(__name__).warning("%s: skipped %d of %d lines without usable messages (e.g. lines %s)", path, len(bad), len(rows), bad[:5])
    return out


def sample_conversations(n: int = 24, seed: int = 0) -> list[list[dict[str, str]]]:
    """Synthetic casual chats (no real person), used when no validation file is given."""
    rng = np.random.default_rng(seed)
    asks = ["are you free on saturday?", "did you see the game last night?", "what are you cooking tonight?", "how was the trip?",
            "can you send me the photos from the party?", "should we take the train or drive?", "any plans for the weekend?",
            "what did the landlord say?", "is the new job ok so far?", "want to grab coffee tomorrow?"]
    replies = ["yeah, saturday works for me. let's meet around noon at the usual place.", "haha yes, what a finish! I couldn't believe that last goal.",
               "probably pasta again, I'm too tired to do anything fancy.", "it was great, the weather was perfect and the food was amazing.",
               "sure, give me a minute, I'll upload them to the shared folder.", "train is easier, no parking stress and we can sleep on the way.",
               "not much, maybe a long walk and a movie on sunday.", "he said they'll fix the heating next week, fingers crossed.",
               "so far so good, the team is nice and I'm learning a lot.", "sounds good, 9 at the corner cafe?"]
    follow = ["ok cool", "nice!", "haha fair enough", "perfect, thanks", "great, see you then"]
    closes = ["👍 see you!", "no problem, talk later.", "anytime :)", "cool, I'll text you when I'm there."]
    convs = []
    for _ in range(n):
        i, j = rng.integers(len(asks), size=2)
        convs.append([{"role": "user", "content": asks[i]}, {"role": "assistant", "content": replies[i]},
                      {"role": "user", "content": follow[rng.integers(len(follow))] + " " + asks[j]},
                      {"role": "assistant", "content": replies[j] + " " + closes[rng.integers(len(closes))]}])
    return convs


def assistant_token_mask(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation and which belong to assistant turns.

    Each assistant span runs from the end of the generation prompt before it to the
    end of that turn as rendered (so the end-of-turn token counts). Works for any
    template whose renders of growing prefixes are prefixes of each other.
    """
    def render(msgs: list[dict[str, str]], gen: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    full = render(messages, False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] == "assistant":
            prompt, upto = render(messages[:k], True), render(messages[: k + 1], False)
            if not (full.startswith(upto) and upto.startswith(prompt)):
                raise ValueError("chat template renders of growing prefixes are not prefixes of each other")
            spans.append((len(prompt), len(upto)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(s <= a < e for s, e in spans) for a, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def build_eval_sequences(model_dir: str | Path, conversations: Iterable[list[dict[str, str]]], n_ctx: int = 1024,
                         max_tokens: int = 2048) -> list[EvalSequence]:
    """Tokenize conversations with the model's own chat template until `max_tokens` assistant tokens."""
    require("transformers", "train")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    seqs, n, skipped = [], 0, 0
    for msgs in conversations:
        try:
            ids, mask = assistant_token_mask(tok, msgs)
        except Exception:  # a template that rejects this conversation (e.g. a system turn on Gemma-2)
            skipped += 1
            continue
        ids, mask = ids[:n_ctx], mask[:n_ctx]
        if sum(mask[1:]):
            seqs.append(EvalSequence(ids, mask))
            n += sum(mask[1:])
        if n >= max_tokens:
            break
    if not seqs:
        raise InputError(f"No conversation could be rendered with the chat template of {model_dir} ({skipped} rejected). Check the validation file's roles.")
    return seqs


# ----------------------------------------------------------------- metrics


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl_top1(ref_logp: np.ndarray, logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position KL(ref || q) in nats and whether the top-1 tokens agree.

    >>> kl, same = kl_top1(log_softmax(np.array([[2., 0.]])), log_softmax(np.array([[2., 0.]])))
    >>> float(kl[0]), bool(same[0])
    (0.0, True)
    """
    kl = (np.exp(ref_logp) * (ref_logp - logp)).sum(-1)
    return np.maximum(kl, 0.0), ref_logp.argmax(-1) == logp.argmax(-1)


def _score_positions(llm, seq: EvalSequence) -> tuple[np.ndarray, np.ndarray, float]:
    """Log-probs at positions that predict an assistant token, those tokens, seconds in llama.cpp."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(seq.ids)
    seconds = time.perf_counter() - t0
    pos = np.array([t - 1 for t in range(1, len(seq.ids)) if seq.mask[t]])
    logits = np.asarray(llm.scores[: len(seq.ids)])[pos]
    return log_softmax(logits).astype(np.float32), np.asarray(seq.ids)[pos + 1], seconds


def _gen_speed(llm, prompt: list[int], n: int, repeats: int = 3) -> float:
    """Greedy tokens per second after `prompt` (n tokens, end token ignored); best of `repeats`,
    since a shared CPU only ever makes a run slower."""
    best = 0.0
    for _ in range(repeats):
        llm.reset()
        llm.eval(prompt)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t0 = time.perf_counter()
        for _ in range(n):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        best = max(best, n / (time.perf_counter() - t0))
    return best


def measure_quality(files: dict[str, str | Path], sequences: list[EvalSequence], reference: str = "f16", n_ctx: int = 1024,
                    threads: int = 0, gen_tokens: int = 32) -> list[dict[str, Any]]:
    """One row per GGUF: size, bpw, perplexity, KL/top-1 vs `reference`, speed.

    The reference log-probs are kept in a float16 memory map on disk (tokens x vocab),
    so any number of types is compared without holding two models at once.
    """
    from tqdm.auto import tqdm

    from .gguf_chat import load_gguf
    from .gguf_inspect import inspect_gguf

    if reference not in files:
        raise InputError(f"reference {reference!r} is not among the GGUF files {sorted(files)}")
    n_ctx = min(n_ctx, max(len(s.ids) for s in sequences) + gen_tokens + 8)
    n_pos = sum(sum(s.mask[1:]) for s in sequences)
    order = [reference] + [q for q in files if q != reference]
    rows = []
    with tempfile.TemporaryDirectory(prefix="clonekit-ref-") as tmp:
        ref_store = None
        for name in tqdm(order, desc="score GGUF types", unit="type"):
            llm = load_gguf(files[name], n_ctx=n_ctx, threads=threads, logits_all=True)
            if ref_store is None:
                ref_store = np.lib.format.open_memmap(Path(tmp) / "ref.npy", mode="w+", dtype=np.float16, shape=(n_pos, llm.n_vocab()))
            nll, kl, same, at, t_eval = [], [], [], 0, 0.0
            for seq in sequences:
                logp, targets, seconds = _score_positions(llm, seq)
                t_eval += seconds
                nll.append(-logp[np.arange(len(targets)), targets])
                if name == reference:
                    ref_store[at: at + len(targets)] = logp
                else:
                    k, s = kl_top1(ref_store[at: at + len(targets)].astype(np.float64), logp.astype(np.float64))
                    kl.append(k), same.append(s)
                at += len(targets)
            speed = _gen_speed(llm, sequences[0].ids[:32], gen_tokens)
            del llm
            info = inspect_gguf(files[name])
            nll_all = np.concatenate(nll)
            kl_all = np.concatenate(kl) if kl else np.zeros(1)
            rows.append({
                "quant": name, "file": Path(files[name]).name, "size_mb": round(info["size_bytes"] / 2**20, 2), "bpw": round(info["bpw"], 3),
                "ppl": round(float(math.exp(nll_all.mean())), 4), "kl_mean": round(float(kl_all.mean()), 5),
                "kl_p99": round(float(np.quantile(kl_all, 0.99)), 5), "top1": round(float(np.concatenate(same).mean()) if same else 1.0, 4),
                "gen_tok_s": round(speed, 1), "prompt_tok_s": round(sum(len(s.ids) for s in sequences) / max(t_eval, 1e-9), 1),
                "tokens_scored": int(n_pos), "tensor_types": info["tensor_types"],
            })
    return rows


def recommend_quant(table: list[dict[str, Any]], max_kl: float = 0.05, min_top1: float = 0.90) -> str | None:
    """Smallest type whose mean KL to the reference is <= max_kl and top-1 agreement >= min_top1; None if none.

    The defaults sit around what llama.cpp's KL-divergence tables show for Q4_K_M on
    7-8B models (mean KLD of a few hundredths, same top token ~90-95% of the time),
    the level people accept as "no visible difference in chat". Tiny models break well
    before that, which is exactly what the table is for.

    >>> recommend_quant([{"quant": "f16", "kl_mean": 0, "top1": 1, "size_mb": 9},
    ...                  {"quant": "q8_0", "kl_mean": .004, "top1": .99, "size_mb": 5},
    ...                  {"quant": "q4_0", "kl_mean": .3, "top1": .7, "size_mb": 3}])
    'q8_0'
    """
    ok = [r for r in table[1:] if r["kl_mean"] <= max_kl and r["top1"] >= min_top1]
    return min(ok, key=lambda r: r["size_mb"])["quant"] if ok else None


def format_table_md(table: list[dict[str, Any]], recommended: str | None = None, max_kl: float = 0.05, min_top1: float = 0.90) -> str:
    ref = table[0]["quant"] if table else "?"
    lines = [f"Quality vs {ref} on {table[0]['tokens_scored'] if table else 0} assistant tokens (KL in nats; speed on this CPU)", "",
             "| type | size MB | bits/weight | perplexity | mean KL | p99 KL | top-1 agree | gen tok/s | prompt tok/s | ok |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|"]
    for r in table:
        ok = "ref" if r["quant"] == ref else ("yes" if r["kl_mean"] <= max_kl and r["top1"] >= min_top1 else "no")
        mark = " **(recommended)**" if r["quant"] == recommended else ""
        lines.append(f"| {r['quant']}{mark} | {r['size_mb']} | {r['bpw']} | {r['ppl']} | {r['kl_mean']} | {r['kl_p99']} | {r['top1']:.3f} | {r['gen_tok_s']} | {r['prompt_tok_s']} | {ok} |")
    lines += ["", f"ok = mean KL <= {max_kl} and top-1 agreement >= {min_top1}. Recommended: "
              + (f"{recommended} (smallest type within tolerance)." if recommended else f"none within tolerance; use {ref}.")]
    return "\n".join(lines) + "\n"


def plot_quality(table: list[dict[str, Any]], path: str | Path, max_kl: float = 0.05, min_top1: float = 0.90) -> Path:
    """Mean KL and top-1 agreement against bits per weight, thresholds drawn in (green: within tolerance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[1:]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, thr, label in ((axes[0], "kl_mean", max_kl, "mean KL divergence vs reference (nats, log)"),
                                (axes[1], "top1", min_top1, "top-1 token agreement with reference")):
        ok = [r["kl_mean"] <= max_kl and r["top1"] >= min_top1 for r in rows]
        ax.scatter([r["bpw"] for r in rows], [max(r[key], 1e-5) for r in rows], c=["tab:green" if o else "tab:red" for o in ok])
        for r in rows:
            ax.annotate(r["quant"], (r["bpw"], max(r[key], 1e-5)), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.axhline(thr, color="red", ls="--", lw=1, label=f"tolerance {thr}")
        ax.set_xlabel("bits per weight")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.suptitle(f"GGUF quant types vs {table[0]['quant']}")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- imatrix


def compute_imatrix(model_dir: str | Path, sequences: list[EvalSequence], out_path: str | Path, threads: int = 0) -> Path:
    """Importance matrix from the HF model: mean squared input activation per column of every matmul.

    llama-cpp-python has no imatrix tool, so the statistics llama.cpp's `llama-imatrix`
    collects (sum of x^2 per input column, token count) are gathered with forward hooks
    on the merged model in transformers and saved in llama.cpp's imatrix GGUF layout
    (`<tensor>.in_sum2`, `<tensor>.counts`), usable by `quantize_gguf(..., imatrix=)`
    and by `llama-quantize --imatrix`. All tokens of each sequence count.
    """
    require("torch", "train")
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    import gguf

    model_dir = Path(model_dir)
    hparams = ModelBase.load_hparams(model_dir, False)
    if "n_positions" in hparams:
        hparams.setdefault("n_ctx", hparams["n_positions"])
    namer = get_model_class(get_model_architecture(hparams, ModelType.TEXT))(model_dir, gguf.LlamaFileType.MOSTLY_F16, Path("unused.gguf"), hparams=hparams)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    for mod_name, mod in model.named_modules():
        if not hasattr(mod, "weight") or getattr(mod, "weight") is None or mod.weight.dim() != 2 or isinstance(mod, torch.nn.Embedding):
            continue
        try:
            name = namer.map_tensor_name(mod_name + ".weight")
        except ValueError:
            continue

        def hook(m, args, name=name):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + x.pow(2).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        hooks.append(mod.register_forward_pre_hook(hook))
    # like llama-imatrix, run fixed-size chunks of the concatenated text: fewer, fuller forward passes
    flat = [t for s in sequences for t in s.ids]
    chunk = max(len(s.ids) for s in sequences)
    before = torch.get_num_threads()
    if threads > 0:  # on a busy shared CPU fewer threads can be much faster
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for i in tqdm(range(0, len(flat), chunk), desc="imatrix", unit="chunk"):
                model(torch.tensor([flat[i: i + chunk]]))
    finally:
        torch.set_num_threads(before)
    for h in hooks:
        h.remove()
    if getattr(model.config, "tie_word_embeddings", False) and "output.weight" in sums:
        sums["token_embd.weight"], counts["token_embd.weight"] = sums["output.weight"], counts["output.weight"]
    return write_imatrix(out_path, {k: v.numpy() for k, v in sums.items()}, counts, dataset="clonekit conversations",
                         chunks=-(-len(flat) // chunk), chunk_size=chunk)


def write_imatrix(path: str | Path, sums: dict[str, np.ndarray], counts: dict[str, int], dataset: str, chunks: int, chunk_size: int) -> Path:
    import gguf

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    w = gguf.GGUFWriter(tmp, arch="imatrix")
    w.add_type(gguf.GGUFType.IMATRIX)
    w.add_array("imatrix.datasets", [dataset])
    w.add_uint32("imatrix.chunk_count", chunks)
    w.add_uint32("imatrix.chunk_size", chunk_size)
    for name in sorted(sums):
        w.add_tensor(f"{name}.in_sum2", np.asarray(sums[name], np.float32).reshape(1, -1))
        w.add_tensor(f"{name}.counts", np.array([counts[name]], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return path


def read_imatrix(path: str | Path) -> dict[str, np.ndarray]:
    """{tensor name: mean squared activation per column} from an imatrix GGUF."""
    import gguf

    reader = gguf.GGUFReader(path)
    t = {x.name: np.asarray(x.data, np.float32) for x in reader.tensors}
    out = {}
    for key, s in t.items():
        if key.endswith(".in_sum2"):
            name = key[: -len(".in_sum2")]
            c = t[f"{name}.counts"].reshape(-1)
            out[name] = np.concatenate([(row / cnt if cnt > 0 else np.ones_like(row)) for row, cnt in zip(s.reshape(len(c), -1), c)])
    return out
