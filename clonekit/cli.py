"""The `clonekit` command: one subcommand per stage, each a thin layer over `run_<stage>(config)`.

    clonekit prepare result.json --out runs/data            # export -> train/validation JSONL
    clonekit train runs/data --out runs/clone                # LoRA / QLoRA
    clonekit chat runs/clone -p "привет!"                    # talk to the clone
    clonekit eval runs/clone                                 # does it sound like the person?
    clonekit merge runs/clone --out runs/merged              # adapter -> full model (CPU)
    clonekit gguf runs/merged --quant q8_0 --out runs/gguf   # -> llama.cpp / Ollama
    clonekit demo                                            # all of it on data_samples/, on CPU

Errors a user can fix print as one line (no traceback) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import add_config_flags, config_from_args
from .errors import ClonekitError

EPILOGS = {
    "prepare": "example: clonekit prepare ~/Downloads/Telegram/result.json --me 'Alex Smith' --out runs/data",
    "stats": "example: clonekit stats result.json --out runs/stats.png",
    "train": "example: clonekit train runs/data --out runs/clone --epochs 3 --micro-batch-size 4 --save-steps 200",
    "chat": "example: clonekit chat runs/clone -p 'how was your day?'   (no -p: interactive; /reset, /quit)",
    "eval": "example: clonekit eval runs/clone --max-examples 64",
    "merge": "example: clonekit merge runs/clone --out runs/merged",
    "gguf": "example: clonekit gguf runs/merged --quant q8_0 q4_k_m --out runs/gguf   (--quant all: quality table of every type)",
    "demo": "example: clonekit demo --out runs/demo   (about 5-10 minutes on a laptop CPU)",
}


def _sub(subs, name: str, help_text: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help_text, description=help_text, epilog=EPILOGS[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from .chat import ChatConfig
    from .dataset import DatasetConfig
    from .evaluate import EvalConfig
    from .gguf import GGUFConfig
    from .merge import MergeConfig
    from .privacy import PrivacyConfig
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="clonekit", description="Turn your chat history into an LLM that answers like you.")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(subs, "prepare", "Parse chat exports into train/validation JSONL (personal data scrubbed by default).")
    p.add_argument("inputs", nargs="+", metavar="EXPORT", help="export files/folders/.zip (Telegram, WhatsApp, VK, Discord, Messenger, JSONL, CSV)")
    p.add_argument("--out", dest="out_dir", default=None, help="dataset folder")
    p.add_argument("--no-scrub", action="store_true", help="keep personal data (not recommended)")
    add_config_flags(p, DatasetConfig, skip=("inputs", "out_dir", "privacy"))
    add_config_flags(p.add_argument_group("privacy (each type on by default; --no-TYPE keeps it)"), PrivacyConfig, skip=("enabled",))

    p = _sub(subs, "stats", "Show who wrote what and when: counts, messages per day, lengths, emoji (plotted).")
    p.add_argument("inputs", nargs="+", metavar="EXPORT")
    p.add_argument("--out", default="clonekit_stats.png", help="PNG to write")

    p = _sub(subs, "train", "Fine-tune a LoRA adapter (QLoRA on a CUDA GPU) on the persona's replies.")
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder from `clonekit prepare`")
    p.add_argument("--out", dest="out_dir", default=None, help="run folder")
    add_config_flags(p, TrainConfig, skip=("data_dir", "out_dir"))

    p = _sub(subs, "chat", "Talk to the clone: a run folder, a merged model folder or a .gguf file.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-p", "--prompt", action="append", help="say this (repeat for a conversation) instead of chatting interactively")
    add_config_flags(p, ChatConfig, skip=("run_dir",))

    p = _sub(subs, "eval", "Measure the clone against the base model on held-out conversations; writes RUN/eval/report.md.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    add_config_flags(p, EvalConfig, skip=("run_dir",))

    p = _sub(subs, "merge", "Merge the LoRA adapter into the 16/32-bit base model on CPU, shard by shard.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", dest="out_dir", default=None, help="merged model folder")
    add_config_flags(p, MergeConfig, skip=("run_dir", "out_dir"))

    p = _sub(subs, "gguf", "Convert a merged model to GGUF and quantize it for llama.cpp / Ollama.")
    p.add_argument("merged_dir", metavar="MERGED_DIR")
    p.add_argument("--quant", dest="quants", nargs="+", default=None, help="types: q8_0 q4_k_m ... or all")
    p.add_argument("--out", dest="out_dir", default=None, help="output folder")
    add_config_flags(p, GGUFConfig, skip=("merged_dir", "out_dir", "quants"))

    p = _sub(subs, "demo", "Run every stage on data_samples/ with the embedded model, on CPU.")
    p.add_argument("--out", default="runs/demo", help="folder for all outputs")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: a few minutes' worth on CPU)")
    p.add_argument("--quant", nargs="+", default=["q8_0"], help="GGUF types to build")
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(args_list)
        return COMMANDS[args.command](args) or 0
    except ClonekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_prepare(args) -> int:
    from .dataset import DatasetConfig, run_prepare
    from .privacy import PrivacyConfig

    privacy = config_from_args(PrivacyConfig, args, enabled=not args.no_scrub)
    result = run_prepare(config_from_args(DatasetConfig, args, privacy=privacy))
    print_manifest(result.manifest, result.out_dir)
    return 0


def print_manifest(m: dict, out_dir) -> None:
    print(f"dataset written to {out_dir}")
    print(f"  messages by sender: {m['messages_by_sender']}")
    print(f"  skipped: {m['skipped'] or 'nothing'}")
    print(f"  scrubbed: {m.get('scrubbed') or 'nothing'}")
    print(f"  conversations: {m['conversations']}, examples: {m['examples']}, tokens: {m['tokens']}")


def cmd_stats(args) -> int:
    from .formats import parse_export
    from .stats import compute_stats, plot_stats

    convs = [c for path in args.inputs for c in parse_export(path)]
    stats = compute_stats(convs)
    plot_stats(stats, args.out)
    for k, v in stats.items():
        if not isinstance(v, (dict, list)) or len(v) <= 12:
            print(f"{k}: {v}")
    print(f"plot: {args.out}")
    return 0


def cmd_train(args) -> int:
    from .train import TrainConfig, describe, run_train

    print(describe(run_train(config_from_args(TrainConfig, args))))
    return 0


def cmd_chat(args) -> int:
    from .chat import ChatConfig, run_chat

    run_chat(config_from_args(ChatConfig, args), prompts=args.prompt)
    return 0


def cmd_eval(args) -> int:
    from .evaluate import EvalConfig, run_eval

    print(run_eval(config_from_args(EvalConfig, args)).summary)
    return 0


def cmd_merge(args) -> int:
    from .merge import MergeConfig, run_merge

    result = run_merge(config_from_args(MergeConfig, args))
    print(result)
    return 0


def cmd_gguf(args) -> int:
    from .gguf import GGUFConfig, run_gguf

    result = run_gguf(config_from_args(GGUFConfig, args))
    print(result)
    return 0


def cmd_demo(args) -> int:
    from .pipeline import run_demo

    start = time.time()
    run_demo(Path(args.out), steps=args.steps, quants=args.quant)
    print(f"demo finished in {time.time() - start:.0f} s")
    return 0


COMMANDS = {"prepare": cmd_prepare, "stats": cmd_stats, "train": cmd_train, "chat": cmd_chat, "eval": cmd_eval,
            "merge": cmd_merge, "gguf": cmd_gguf, "demo": cmd_demo}

if __name__ == "__main__":
    sys.exit(main())
