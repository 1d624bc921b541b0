"""Peak RAM and time of merging a LoRA into 0.5B / 3B / 8B models: clonekit's streaming merge vs the usual recipe.

For each size a random-weight Llama-architecture checkpoint (bf16, 5 GB shards like the hub's) is
written tensor by tensor into bench/work/ (never built in RAM), with a random LoRA (r16, all linear
layers). Each merge runs in a fresh subprocess that reports its own peak RSS (ru_maxrss):
  clonekit   clonekit.merge.run_merge (streaming; verify off)
  baseline   AutoModelForCausalLM.from_pretrained + PeftModel.from_pretrained + merge_and_unload + save_pretrained
The baseline holds the whole model in RAM, so it runs only where that fits (default 0.5B and 3B: the
8B model is 16 GB in bf16 and the baseline needs more than that on a 24 GB machine shared with others).
Files are removed after each size.

Run as (about 15 minutes on 2 CPU cores, ~40 GB of free disk):
    nice -n 10 python bench/merge_memory.py
    nice -n 10 python bench/merge_memory.py --sizes 0.5B --baseline-sizes 0.5B   # quick
    nice -n 10 python bench/merge_memory.py --sizes 8B --baseline-sizes --verify  # merge + default verification
Writes bench/results/merge_memory.json, .md and .png (merge_memory_verify.* with --verify), with the command line.
Peak RSS in the tables is in GiB (MiB / 1024); model sizes are decimal GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "merge_memory"
RESULTS = ROOT / "bench" / "results"

# Llama-architecture shapes of real models: Qwen2.5-0.5B-like, Llama-3.2-3B, Llama-3.1-8B.
SIZES = {
    "0.5B": {"hidden": 896, "inter": 4864, "layers": 24, "heads": 14, "kv": 2, "vocab": 151936, "tie": True},
    "3B": {"hidden": 3072, "inter": 8192, "layers": 28, "heads": 24, "kv": 8, "vocab": 128256, "tie": True},
    "8B": {"hidden": 4096, "inter": 14336, "layers": 32, "heads": 32, "kv": 8, "vocab": 128256, "tie": False},
}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SHARD_BYTES = 5 * 10**9


def tensor_shapes(s: dict) -> list[tuple[str, tuple[int, ...]]]:
    """The checkpoint's tensors in save_pretrained's order."""
    h, hd = s["hidden"], s["hidden"] // s["heads"]
    out = [("model.embed_tokens.weight", (s["vocab"], h))]
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "self_attn.q_proj.weight", (s["heads"] * hd, h)),
                (p + "self_attn.k_proj.weight", (s["kv"] * hd, h)), (p + "self_attn.v_proj.weight", (s["kv"] * hd, h)),
                (p + "self_attn.o_proj.weight", (h, s["heads"] * hd)), (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (s["inter"], h)), (p + "mlp.up_proj.weight", (s["inter"], h)),
                (p + "mlp.down_proj.weight", (h, s["inter"]))]
    out.append(("model.norm.weight", (h,)))
    if not s["tie"]:
        out.append(("lm_head.weight", (s["vocab"], h)))
    return out


def write_safetensors_streaming(path: Path, shapes: list[tuple[str, tuple[int, ...]]], seed: int) -> None:
    """A bf16 safetensors file written one random tensor at a time (header first: all shapes are known)."""
    import torch

    header, offset = {}, 0
    for name, shape in shapes:
        n = 2 * torch_numel(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    gen = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in shapes:
            t = torch.ones(shape, dtype=torch.bfloat16) if name.endswith("norm.weight") else torch.empty(shape, dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)
            f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def build_base(size: str, folder: Path) -> int:
    from transformers import LlamaConfig

    s = SIZES[size]
    folder.mkdir(parents=True)
    LlamaConfig(hidden_size=s["hidden"], intermediate_size=s["inter"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                num_key_value_heads=s["kv"], vocab_size=s["vocab"], tie_word_embeddings=s["tie"], dtype="bfloat16").save_pretrained(folder)
    shards, current, size_now = [], [], 0
    for name, shape in tensor_shapes(s):
        n = 2 * torch_numel(shape)
        if current and size_now + n > SHARD_BYTES:
            shards.append(current)
            current, size_now = [], 0
        current.append((name, shape))
        size_now += n
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors_streaming(folder / fname, shard, seed=i)
        weight_map.update({name: fname for name, _ in shard})
    total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return total


def build_adapter(size: str, base: Path, folder: Path) -> int:
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    s, r = SIZES[size], 16
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (out_f, in_f) in [(n, sh) for n, sh in tensor_shapes(s) if any(f".{t}." in n for t in TARGETS)]:
        mod = "base_model.model." + name.removesuffix(".weight")
        tensors[mod + ".lora_A.weight"] = torch.randn(r, in_f, generator=gen) / in_f**0.5
        tensors[mod + ".lora_B.weight"] = torch.randn(out_f, r, generator=gen) * 0.01
    LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(TARGETS), task_type="CAUSAL_LM", base_model_name_or_path=str(base)).save_pretrained(folder)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return (folder / "adapter_model.safetensors").stat().st_size


def child(kind: str, base: str, adapter: str, out: str) -> None:
    """Runs in a fresh process: one merge, then its own peak RSS as JSON on the last stdout line."""
    start = time.time()
    extra = {}
    if kind.startswith("clonekit"):
        from clonekit.merge import MergeConfig, run_merge

        result = run_merge(MergeConfig(adapter_dir=adapter, base_model=base, out_dir=out, verify=kind == "clonekit-verify"))
        if result.verification:  # run_merge's own peak is taken before verifying
            extra = {"merge_peak_rss_mb": result.peak_rss_mb, "verification": result.verification}
    else:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        model.save_pretrained(out)
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "seconds": round(time.time() - start, 1), **extra}))


def run_child(kind: str, base: Path, adapter: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "TQDM_DISABLE": "1"}
    start = time.time()
    p = subprocess.run([sys.executable, __file__, "--child", kind, str(base), str(adapter), str(out)],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1][:300], "returncode": p.returncode}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["wall_seconds"] = round(time.time() - start, 1)  # includes starting Python and importing torch
    res["out_bytes"] = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    res["out_shards"] = len(list(out.glob("*.safetensors")))
    return res


def max_difference(a: Path, b: Path, names: list[str]) -> float:
    """Largest |ours - baseline| over some merged tensors (PEFT adds a bf16-rounded delta in bf16: 1-ulp differences)."""
    from safetensors import safe_open

    def find(folder: Path, name: str):
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), "pt") as h:
                if name in h.keys():
                    return h.get_tensor(name).float()
        raise KeyError(name)

    return max(float((find(a, n) - find(b, n)).abs().max()) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--baseline-sizes", nargs="*", default=["0.5B", "3B"], choices=list(SIZES),
                    help="sizes where the in-RAM baseline also runs (it needs about 2x the bf16 model size in RAM)")
    ap.add_argument("--verify", action="store_true", help="clonekit merges with verify=True (its default), reported in merge_memory_verify.*; "
                    "a model that does not fit in RAM is verified tensor by tensor")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "BASE", "ADAPTER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    command = "nice -n 10 python bench/merge_memory.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    sys.path.insert(0, str(ROOT))
    from tqdm import tqdm

    report = {"command": command.strip(), "machine": {"cpus": os.cpu_count(), "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
              "lora": {"r": 16, "alpha": 32, "target_modules": list(TARGETS), "dtype": "float32"},
              "baseline": "AutoModelForCausalLM.from_pretrained(dtype=bfloat16) + PeftModel.from_pretrained + merge_and_unload + save_pretrained",
              "clonekit": f"clonekit.merge.run_merge(MergeConfig(adapter_dir, base_model, out_dir, verify={args.verify})), max_shard_size 1GB",
              "target": "clonekit peak RSS < 3 GB for the 8B model", "versions": versions(), "rows": []}
    start = time.time()
    for size in tqdm(args.sizes, desc="sizes"):
        folder = WORK / size
        shutil.rmtree(folder, ignore_errors=True)
        t = time.time()
        base_bytes = build_base(size, folder / "base")
        adapter_bytes = build_adapter(size, folder / "base", folder / "adapter")
        params = sum(torch_numel(shape) for _, shape in tensor_shapes(SIZES[size]))
        row = {"size": size, "params": params, "base_bytes": base_bytes, "adapter_bytes": adapter_bytes,
               "base_shards": len(list((folder / "base").glob("*.safetensors"))), "build_seconds": round(time.time() - t, 1)}
        row["clonekit"] = run_child("clonekit-verify" if args.verify else "clonekit", folder / "base", folder / "adapter", folder / "ours")
        if size in args.baseline_sizes:
            row["baseline"] = run_child("baseline", folder / "base", folder / "adapter", folder / "baseline")
            if "error" not in row["baseline"] and "error" not in row["clonekit"]:
                names = [n for n, _ in tensor_shapes(SIZES[size]) if n.startswith("model.layers.0.") and "proj" in n]
                row["max_abs_diff_vs_baseline"] = max_difference(folder / "ours", folder / "baseline", names)
        else:
            row["baseline"] = {"skipped": "not run here (see merge_memory.md)" if args.verify else
                               f"not run: it holds the whole bf16 model ({base_bytes / 1e9:.0f} GB) in RAM, on a "
                               f"{report['machine']['ram_gb']} GB machine shared by several people"}
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    report["seconds"] = round(time.time() - start, 1)
    add_estimates(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "merge_memory_verify" if args.verify else "merge_memory"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(to_markdown(report))
    plot(report, RESULTS / f"{name}.png")
    print(to_markdown(report))


def torch_numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "safetensors")}


def add_estimates(report: dict) -> None:
    """Where the baseline did not run: its peak RSS scaled from the largest size where it did
    (peak / bf16 size), so the table says how much RAM it would have needed."""
    eight = next((r for r in report["rows"] if r["size"] == "8B" and "peak_rss_mb" in r["clonekit"]), None)
    if eight:
        report["target_met"] = eight["clonekit"]["peak_rss_mb"] / 1024 < 3
    ran = [r for r in report["rows"] if "peak_rss_mb" in r["baseline"]]
    if not ran:
        return
    ref = max(ran, key=lambda r: r["base_bytes"])
    ratio = ref["baseline"]["peak_rss_mb"] * 2**20 / ref["base_bytes"]
    for r in report["rows"]:
        if "skipped" in r["baseline"]:
            r["baseline"]["estimated_peak_gb"] = round(ratio * r["base_bytes"] / 2**30, 1)
            r["baseline"]["estimated_from"] = f"{ref['size']}: peak RSS = {ratio:.2f} x bf16 size"


def to_markdown(report: dict) -> str:
    lines = ["# Merge peak RAM: clonekit streaming merge vs PeftModel.merge_and_unload", "",
             f"Command: `{report['command']}`  ", f"Machine: {report['machine']}; LoRA: {report['lora']}  ",
             f"Baseline: {report['baseline']}  ", f"clonekit: {report['clonekit']}  ",
             f"Target: {report.get('target')}: {'met' if report.get('target_met') else 'not met' if 'target_met' in report else 'not measured'}  ",
             f"Versions: {report.get('versions')}", "",
             "| model | params | bf16 size | clonekit peak RSS | clonekit time | baseline peak RSS | baseline time | max abs diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        ours, base = r["clonekit"], r["baseline"]
        fmt = (lambda x: f"{x['peak_rss_mb'] / 1024:.2f} GB", lambda x: f"{x['seconds']} s")
        o = [f(ours) for f in fmt] if "peak_rss_mb" in ours else [ours.get("error", "?"), ""]
        if "peak_rss_mb" in base:
            b = [f(base) for f in fmt]
        elif "estimated_peak_gb" in base:
            b = [f"not run; ~{base['estimated_peak_gb']} GB estimated ({base['estimated_from']})", ""]
        else:
            b = [base.get("skipped") or base.get("error", "?"), ""]
        lines.append(f"| {r['size']} | {r['params'] / 1e9:.2f}B | {r['base_bytes'] / 1e9:.1f} GB | {o[0]} | {o[1]} | {b[0]} | {b[1]} | "
                     f"{r.get('max_abs_diff_vs_baseline', '')} |")
    for r in report["rows"]:
        v = r["clonekit"].get("verification")
        if v:
            keys = ("method", "ok", "max_rel_diff", "mean_rel_diff", "max_abs_diff", "mean_abs_diff", "adapter_effect", "tolerance",
                    "max_err_over_adapter", "tensors_probed", "tensors_adapter_resolved", "tensors_equal", "tensors_different")
            lines.append(f"\n{r['size']}: merge alone peaked at {r['clonekit']['merge_peak_rss_mb'] / 1024:.2f} GB, merge + verification at "
                         f"{r['clonekit']['peak_rss_mb'] / 1024:.2f} GB; verification: " + ", ".join(f"{k}={v[k]:.3g}" if isinstance(v[k], float) else f"{k}={v[k]}" for k in keys if k in v))
    lines += ["", "Peak RSS is the merging process's own maximum resident set (ru_maxrss), imports included; time is the merge "
              "inside that process. Max abs diff compares layer 0's merged weights of both outputs (bf16).", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    x = range(len(rows))
    ours = [r["clonekit"].get("peak_rss_mb", 0) / 1024 for r in rows]
    base = [r["baseline"].get("peak_rss_mb", 0) / 1024 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([i - 0.2 for i in x], ours, 0.4, label="clonekit (streaming)")
    ax.bar([i + 0.2 for i in x], base, 0.4, label="merge_and_unload (0 = not run)")
    ax.set_xticks(list(x), [f"{r['size']} ({r['base_bytes'] / 1e9:.0f} GB)" for r in rows])
    ax.set_ylabel("peak RSS (GB)")
    ax.set_title("Merging a r16 LoRA on CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
