"""Which base weights should a QLoRA-trained adapter be merged into? Evidence for MergeConfig.dequantized_base.

An adapter trained on a 4-bit (NF4) base learned corrections relative to the NF4-rounded weights.
After training there are two candidates for the merged 16/32-bit model:
  original     base 16/32-bit weights + adapter    (what most tutorials do)
  dequantized  NF4-rounded base weights + adapter  (what the adapter was trained against)
Both are compared with the model the user trained and evaluated: the real bitsandbytes 4-bit base
(nf4, double quant; float32 on CPU for speed, --dtype bfloat16 as on a GPU) + the adapter, on held-out synthetic chats. Two adapters:
a random LoRA (nonzero B) and one trained briefly (QLoRA on CPU). Base: the embedded SmolLM2-135M.

Run as (about 10 minutes on 2 busy CPU cores):
    nice -n 10 python bench/merge_4bit_choice.py
Writes bench/results/merge_4bit_choice.json and .md (with this command line).
With --cuda-check OUT.json (on a GPU, bitsandbytes installed) it only compares our NF4 round trip with
bitsandbytes' CUDA kernels: bench/results/merge_4bit_choice_cuda.json came from that on an H100.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clonekit.merge import QuantSpec, describe_base, merge_adapter, nf4_round_trip  # noqa: E402
from clonekit.models import resolve_base_model  # noqa: E402

WORK = ROOT / "bench" / "work" / "merge_4bit_choice"
RESULTS = ROOT / "bench" / "results"
SPEC = QuantSpec(quant_type="nf4", double_quant=True, dtype="float32")  # --dtype sets the load/compute dtype

TOPICS = ["the game last night", "your new job", "the trip to Porto", "that pizza place", "the exam", "my cat",
          "the concert", "moving flats", "the weather", "your sister's wedding", "the new phone", "running club"]
OPENERS = ["hey, how was {t}?", "did you hear about {t}?", "what do you think about {t}?", "any news on {t}?",
           "so... {t}?", "remind me about {t} later pls"]
REPLIES = ["lol ngl {t} was kinda wild, tell u later", "ugh {t}... dont even ask haha", "omg yes!! {t} was the best thing this week",
           "hmm not sure about {t} tbh, lets talk tmrw", "{t}? totally forgot lol, thx for reminding me", "ok ok {t} is fine, chill :)"]


def synthetic_chats(n: int, seed: int) -> list[list[dict]]:
    """A made-up person ("Sam": lowercase, 'lol', 'ngl', 'tbh') answering a friend; never real data."""
    rng = random.Random(seed)
    chats = []
    for _ in range(n):
        msgs = []
        for _ in range(rng.randint(1, 3)):
            t = rng.choice(TOPICS)
            msgs += [{"role": "user", "content": rng.choice(OPENERS).format(t=t)},
                     {"role": "assistant", "content": rng.choice(REPLIES).format(t=t)}]
        chats.append(msgs)
    return chats


def encode(tok, chats: list[list[dict]], max_len: int = 96) -> list[torch.Tensor]:
    return [torch.tensor(tok.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"][:max_len]) for c in chats]


def load_4bit(base: str):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = getattr(torch, SPEC.dtype)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=SPEC.quant_type, bnb_4bit_use_double_quant=SPEC.double_quant,
                           bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=q, dtype=dtype, device_map="cpu")
    for mod in model.modules():  # on AVX512-BF16 CPUs bnb repacks weights for inference with bf16 absmax; GPUs don't
        if hasattr(mod, "support_avx512bf16_for_cpu"):
            mod.support_avx512bf16_for_cpu = False
    return model


def make_adapter(base: str, out: Path, kind: str, train_ids: list[torch.Tensor], steps: int) -> dict:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_4bit(base), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    info: dict = {"kind": kind, "r": 16, "alpha": 32, "target_modules": "all-linear"}
    if kind == "random":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
    else:
        from tqdm import tqdm

        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        rng = random.Random(0)
        losses = []
        model.train()
        for _ in tqdm(range(steps), desc="QLoRA steps"):
            ids = torch.nn.utils.rnn.pad_sequence(rng.sample(train_ids, 8), batch_first=True, padding_value=-100)
            mask = ids != -100
            loss = model(ids.clamp(min=0), attention_mask=mask.long(), labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(round(loss.item(), 4))
        info.update(steps=steps, lr=1e-3, batch=8, loss_first=losses[0], loss_last=losses[-1])
    model.save_pretrained(out)
    return info


@torch.no_grad()
def outputs(model, ids_list: list[torch.Tensor]) -> list[torch.Tensor]:
    return [model(ids[None]).logits[0].float() for ids in ids_list]


def compare(ref: list[torch.Tensor], got: list[torch.Tensor], ids_list: list[torch.Tensor]) -> dict:
    diff = torch.cat([(a - b).abs().flatten() for a, b in zip(got, ref)])
    kl, agree, nll, n = 0.0, 0, 0.0, 0
    for r, g, ids in zip(ref, got, ids_list):
        lr, lg = r.log_softmax(-1), g.log_softmax(-1)
        kl += float((lr.exp() * (lr - lg)).sum())
        agree += int((r.argmax(-1) == g.argmax(-1)).sum())
        nll += float(-lg[:-1].gather(1, ids[1:, None]).sum())
        n += len(ids)
    return {"mean_abs_logit_diff": round(float(diff.mean()), 4), "max_abs_logit_diff": round(float(diff.max()), 3),
            "kl_per_token": round(kl / n, 5), "top1_agreement": round(agree / n, 4), "val_nll": round(nll / (n - len(ids_list)), 4)}


def evaluate(base: str, adapter_dir: Path, val_ids: list[torch.Tensor], work: Path) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(load_4bit(base), str(adapter_dir)).eval()
    ref = outputs(model, val_ids)
    with model.disable_adapter():
        no_adapter_4bit = outputs(model, val_ids)
    del model
    rows = {"4-bit base + adapter (reference)": compare(ref, ref, val_ids),
            "4-bit base, no adapter": compare(ref, no_adapter_4bit, val_ids)}
    timings = {}
    for label, quant in (("original", None), ("dequantized", SPEC)):
        t = time.time()
        merge_adapter(base, adapter_dir, work / label, quant=quant, progress=False)
        timings[label] = round(time.time() - t, 2)
        for compute in ("float32", "bfloat16"):
            merged = AutoModelForCausalLM.from_pretrained(work / label, dtype=getattr(torch, compute)).eval()
            rows[f"merged into {label} weights ({compute})"] = compare(ref, outputs(merged, val_ids), val_ids)
            del merged
        shutil.rmtree(work / label)
    return {"rows": rows, "merge_seconds": timings}


def nf4_check(base: str) -> dict:
    """Our torch NF4 round trip vs the weights bitsandbytes actually used (every quantized layer)."""
    import bitsandbytes.functional as F
    from safetensors.torch import load_file

    model = load_4bit(base)
    original = load_file(str(Path(base) / "model.safetensors"))
    names = describe_base(Path(base))[1]  # the layers transformers quantizes
    n = mismatched = 0
    worst = 0.0
    for name, mod in model.named_modules():
        if name in names:
            theirs = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
            ours = nf4_round_trip(original[name + ".weight"], SPEC)
            n += ours.numel()
            mismatched += int((ours != theirs).sum())
            worst = max(worst, float((ours - theirs).abs().max()))
    mean_err = float(sum((nf4_round_trip(original[k + ".weight"], SPEC) - original[k + ".weight"]).abs().mean() for k in list(names)[:20]) / 20)
    return {"layers": len(names), "weights": n, "fraction_different": round(mismatched / n, 6), "max_abs_difference": worst,
            "mean_abs_nf4_error_of_weights": round(mean_err, 6)}


def nf4_check_cuda(out: Path, command: str) -> None:
    """Our NF4 round trip vs bitsandbytes' CUDA kernels (the ones QLoRA training uses), on random weights."""
    import bitsandbytes
    import bitsandbytes.functional as F

    torch.manual_seed(0)
    weights = {"normal 4096x1024": torch.randn(4096, 1024) * 0.02, "odd size 333x777": torch.randn(333, 777) * 0.05,
               "student-t(3) 2048x1536": torch.distributions.StudentT(3.0).sample((2048, 1536)) * 0.01}
    rows = []
    for name, w in weights.items():
        for double_quant in (False, True):
            for dtype in ("bfloat16", "float16", "float32"):
                q, state = F.quantize_4bit(w.to(getattr(torch, dtype)).cuda(), quant_type="nf4", blocksize=64, compress_statistics=double_quant)
                d = (nf4_round_trip(w, QuantSpec(double_quant=double_quant, dtype=dtype)) - F.dequantize_4bit(q, state).float().cpu()).abs()
                rows.append({"weights": name, "double_quant": double_quant, "dtype": dtype, "values": d.numel(),
                             "different": int((d > 0).sum()), "max_abs_difference": float(d.max())})
    report = {"command": command, "bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(), "rows": rows}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="training steps of the trained adapter")
    ap.add_argument("--val", type=int, default=16, help="held-out chats")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="dtype the base is loaded in before 4-bit quantization, and compute dtype (GPUs use bfloat16; it is slow on CPU)")
    ap.add_argument("--cuda-check", type=Path, default=None,
                    help="only compare our NF4 round trip with bitsandbytes' CUDA kernels; write that JSON here (run on a GPU)")
    args = ap.parse_args()
    SPEC.dtype = args.dtype
    command = "nice -n 10 python bench/merge_4bit_choice.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.cuda_check:
        return nf4_check_cuda(args.cuda_check, command.removeprefix("nice -n 10 "))
    torch.set_num_threads(2)
    base = resolve_base_model("smollm2-135m-instruct")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    train_ids, val_ids = encode(tok, synthetic_chats(400, seed=1)), encode(tok, synthetic_chats(args.val, seed=2))
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    start = time.time()
    report = {"command": command, "base_model": "smollm2-135m-instruct (embedded, float32 on disk)",
              "quantization": SPEC.__dict__ | {"compute_dtype": SPEC.dtype, "library": "bitsandbytes (CPU)"},
              "val_chats": len(val_ids), "val_tokens": sum(len(i) for i in val_ids), "nf4_vs_bitsandbytes": nf4_check(base), "adapters": {}}
    for kind in ("random", "trained"):
        adapter_dir = WORK / f"adapter_{kind}"
        info = make_adapter(base, adapter_dir, kind, train_ids, args.steps)
        report["adapters"][kind] = {"adapter": info, **evaluate(base, adapter_dir, val_ids, WORK)}
        print(json.dumps(report["adapters"][kind], indent=1), flush=True)
    report["seconds"] = round(time.time() - start, 1)
    d = {k: report["adapters"][k]["rows"] for k in report["adapters"]}
    wins = all(d[k][f"merged into dequantized weights ({c})"]["kl_per_token"] < d[k][f"merged into original weights ({c})"]["kl_per_token"]
               for k in d for c in ("float32", "bfloat16"))
    report["chosen_default"] = "dequantized" if wins else "original"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "merge_4bit_choice.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "merge_4bit_choice.md").write_text(to_markdown(report))
    shutil.rmtree(WORK, ignore_errors=True)
    print(to_markdown(report))


def to_markdown(report: dict) -> str:
    lines = ["# Merging a QLoRA adapter: original vs NF4-dequantized base weights", "",
             f"Command: `{report['command']}`  ", f"Base: {report['base_model']}; 4-bit reference: {report['quantization']}  ",
             f"Validation: {report['val_chats']} held-out synthetic chats, {report['val_tokens']} tokens. "
             "Metrics compare each model's logits with the 4-bit base + adapter (the model that was trained).  ",
             f"Our NF4 round trip vs bitsandbytes' weights: {report['nf4_vs_bitsandbytes']}", ""]
    for kind, block in report["adapters"].items():
        lines += [f"## {kind} adapter: {block['adapter']}", "", "| model | mean abs logit diff | max abs logit diff | KL/token | top-1 agreement | val NLL |",
                  "|---|---|---|---|---|---|"]
        for label, m in block["rows"].items():
            lines.append(f"| {label} | {m['mean_abs_logit_diff']} | {m['max_abs_logit_diff']} | {m['kl_per_token']} | {m['top1_agreement']} | {m['val_nll']} |")
        lines.append("")
    lines += [f"Chosen default for adapters trained on a 4-bit base: **{report['chosen_default']}** (`dequantized_base=\"auto\"`).", "",
              "Notes: the reference runs bitsandbytes on CPU with its AVX512-BF16 inference repacking turned off (that path rounds "
              "the absmax to bf16; GPUs never do). The small remaining difference of the dequantized merge comes from bnb's CPU "
              "kernel rounding the 8-bit double-quant absmax through a lookup table (the fraction_different above); against "
              "bnb's CUDA kernels our NF4 round trip is bit-identical (merge_4bit_choice_cuda.json).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
