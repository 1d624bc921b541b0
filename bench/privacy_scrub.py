"""Benchmark of clonekit.privacy: accuracy on the labelled set and scrubbing speed.

1. Precision/recall per type of `redact_conversation` on tests/fixtures/privacy/labelled.jsonl
   (planted items of every type plus look-alikes; see make_labelled.py).
2. Throughput on a larger synthetic corpus (mostly plain Russian/English chat, 15% number-bearing
   look-alikes, 2% planted items), ours vs two baselines, side by side in one run:
   - naive: a loop of separate regex passes per message and per type, with the same validators
     (Luhn, checksums, phonenumbers on candidate runs);
   - PhoneNumberMatcher: phonenumbers.PhoneNumberMatcher on every message (phones only).
   Throughput is UTF-8 megabytes of message text per second (1 MB = 10^6 bytes), best of
   --repeats runs, wall clock and process CPU time (the machine is shared: load average is saved).

Run as: python bench/privacy_scrub.py [--messages 400000] [--repeats 3]
Writes bench/results/privacy_scrub.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "privacy"))

import make_labelled  # noqa: E402

from clonekit.privacy import (PrivacyConfig, iban_ok, inn_ok, luhn_ok, redact_conversation,  # noqa: E402
                              snils_ok, wallet_ok)

RESULTS = ROOT / "bench" / "results"

# ---------------------------------------------------------------- baselines

_NAIVE = {
    "email": re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+"),
    "url": re.compile(r"https?://\S+[?&](?:token|key|sig|access_token|signature|api_key)=\S+"),
    "ip": re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
    "card": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,30}\b"),
    "phone": re.compile(r"(?:\+|\b)\d[\d ().-]{6,18}\d\b"),
    "inn": re.compile(r"\b\d{10}(?:\d{2})?\b"),
    "snils": re.compile(r"\b\d{3}-\d{3}-\d{3}[ -]\d{2}\b"),
    "passport": re.compile(r"\b\d{2} ?\d{2} \d{6}\b"),
    "secret": re.compile(r"\b(?:sk-|ghp_|xox[bp]-|AKIA|AIza|glpat-|hf_)[\w-]{10,}|(?i:password|пароль)\s*[:=]?\s*\S+"),
    "wallet": re.compile(r"\b(?:0x[0-9a-fA-F]{40}|bc1[0-9a-z]{25,60}|[13T][1-9A-HJ-NP-Za-km-z]{25,34})\b"),
}


def naive_scan(text: str, names_re: re.Pattern | None) -> list[tuple[int, int, str]]:
    """What a first version looks like: one regex pass per type over each message, then validation."""
    import phonenumbers

    found = []
    for type_, pattern in _NAIVE.items():
        for m in pattern.finditer(text):
            raw = m.group()
            digits = re.sub(r"\D", "", raw)
            ok = True
            if type_ == "card":
                ok = luhn_ok(digits)
            elif type_ == "iban":
                ok = iban_ok(raw.replace(" ", ""))
            elif type_ == "inn":
                ok = inn_ok(digits)
            elif type_ == "snils":
                ok = snils_ok(digits)
            elif type_ == "wallet":
                ok = wallet_ok(raw)
            elif type_ == "phone":
                ok = False
                for region in (None, "RU", "US", "GB", "DE"):
                    try:
                        ok = phonenumbers.is_valid_number(phonenumbers.parse(raw, region))
                    except phonenumbers.NumberParseException:
                        continue
                    if ok:
                        break
            if ok:
                found.append((m.start(), m.end(), type_))
    if names_re is not None:
        found += [(m.start(), m.end(), "name") for m in names_re.finditer(text)]
    return found


def run_naive(convs: list) -> int:
    n = 0
    for conv in convs:
        names = [w for p in conv.participants for w in p.split()]
        names_re = re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\w*") if names else None
        for m in conv.messages:
            n += len(naive_scan(m.content, names_re))
    return n


def run_matcher(convs: list) -> int:
    import phonenumbers

    return sum(len(list(phonenumbers.PhoneNumberMatcher(m.content, "RU"))) for conv in convs for m in conv.messages)


def run_ours(convs: list, config: PrivacyConfig) -> int:
    return sum(len(redact_conversation(conv, config)[2]) for conv in convs)


def timed(fn, repeats: int) -> dict:
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_s": min(walls), "cpu_s": min(cpus), "wall_s_median": statistics.median(walls), "found": out}


def text_mb(convs: list) -> float:
    return sum(len(m.content.encode("utf-8")) for c in convs for m in c.messages) / 1e6


# ---------------------------------------------------------------- report


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def accuracy_table(acc: dict) -> list[str]:
    lines = ["| type | labels | found | missed | false pos | recall | precision | exact span |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, row in acc["per_type"].items():
        lines.append(f"| {key} | {row['labels']} | {row['found']} | {row['missed']} | {row.get('false_pos', '')} | "
                     f"{fmt(row['recall'])} | {fmt(row.get('precision'))} | {row['exact_span']} |")
    lines.append(f"| **structured** ({', '.join(make_labelled.STRUCTURED)}) | {acc['structured_labels']} | | | | "
                 f"{acc['structured_recall']:.3f} | | |")
    lines.append(f"| **all** | | | | | {acc['recall']:.3f} | {acc['precision']:.3f} | |")
    return lines


def speed_table(speed: dict) -> list[str]:
    lines = ["| method | text (MB) | best wall (s) | MB/s wall | MB/s CPU | items found |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in speed.items():
        lines.append(f"| {name} | {r['mb']:.1f} | {r['wall_s']:.3f} | {r['mb_per_s_wall']:.1f} | {r['mb_per_s_cpu']:.1f} | {r['found']} |")
    return lines


def plot(acc: dict, speed: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(speed)
    a1.barh(names, [speed[n]["mb_per_s_wall"] for n in names], color=["tab:green", "tab:gray", "tab:gray"][:len(names)])
    a1.axvline(20, color="tab:red", ls="--", label="target 20 MB/s")
    a1.set_xscale("log")
    a1.set_xlabel("MB of text per second (wall, log scale)")
    a1.legend()
    a1.set_title("scrubbing throughput")
    types = [k for k in acc["per_type"] if "/" not in k]
    x = range(len(types))
    a2.bar([i - 0.2 for i in x], [acc["per_type"][t]["recall"] or 0 for t in types], 0.4, label="recall")
    a2.bar([i + 0.2 for i in x], [acc["per_type"][t].get("precision") or 0 for t in types], 0.4, label="precision")
    a2.set_xticks(list(x), types, rotation=45, ha="right")
    a2.set_ylim(0.8, 1.01)
    a2.legend(loc="lower right")
    a2.set_title("labelled set: per-type recall / precision")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=400_000, help="messages in the speed corpus")
    ap.add_argument("--baseline-fraction", type=float, default=0.1, help="share of the corpus the naive baseline runs on")
    ap.add_argument("--matcher-fraction", type=float, default=0.02, help="share the PhoneNumberMatcher baseline runs on")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "privacy_scrub"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()

    rows = make_labelled.load_labelled()
    acc = make_labelled.evaluate(rows, PrivacyConfig(blocklist=make_labelled.BLOCKLIST))
    print(f"labelled set: {acc['messages']} messages ({acc['lookalike_messages']} look-alikes), "
          f"{acc['structured_labels']} structured items")
    print("\n".join(accuracy_table(acc)))
    for kind, items in (("missed", acc["misses"]), ("false positives", acc["false_positives"])):
        print(f"{kind}: {len(items)}" + "".join(f"\n  {i[:3]}" for i in items[:10]))

    convs = make_labelled.make_corpus(args.messages)
    config = PrivacyConfig()
    speed = {}
    subsets = {"ours (redact_conversation)": (convs, lambda c: run_ours(c, config)),
               "naive per-type regex loop": (convs[:max(1, int(len(convs) * args.baseline_fraction))], run_naive),
               "PhoneNumberMatcher per message": (convs[:max(1, int(len(convs) * args.matcher_fraction))], run_matcher)}
    for name, (subset, fn) in subsets.items():
        mb = text_mb(subset)
        r = timed(lambda: fn(subset), args.repeats)
        r.update(mb=mb, messages=sum(len(c.messages) for c in subset),
                 mb_per_s_wall=mb / r["wall_s"], mb_per_s_cpu=mb / r["cpu_s"])
        speed[name] = r
        print(f"{name:32s} {mb:6.1f} MB  {r['mb_per_s_wall']:7.1f} MB/s wall  {r['mb_per_s_cpu']:7.1f} MB/s CPU")
    ours = speed["ours (redact_conversation)"]
    print("\n".join(speed_table(speed)))
    print(f"speed-up vs naive: {ours['mb_per_s_wall'] / speed['naive per-type regex loop']['mb_per_s_wall']:.1f}x, "
          f"vs PhoneNumberMatcher: {ours['mb_per_s_wall'] / speed['PhoneNumberMatcher per message']['mb_per_s_wall']:.0f}x")

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": vars(args),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "accuracy": {k: v for k, v in acc.items() if k not in ("misses", "false_positives")},
        "misses": [list(m[:3]) for m in acc["misses"]],
        "false_positives": [list(m[:3]) for m in acc["false_positives"]],
        "speed": speed,
        "corpus": {"messages": args.messages, "conversations": len(convs), "mb": ours["mb"]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    md = ["# privacy_scrub benchmark", "", f"Command: `{result['command']}`", "",
          f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, load average before/after "
          f"{load_before[0]:.1f}/{result['machine']['load_avg_after'][0]:.1f} (shared machine).", "",
          "## Labelled set (tests/fixtures/privacy/labelled.jsonl)", "", *accuracy_table(acc), "",
          "## Throughput (UTF-8 MB of message text per second)", "", *speed_table(speed), "",
          f"Corpus: {args.messages} synthetic messages in {len(convs)} chats, {ours['mb']:.1f} MB; "
          f"baselines run on the first {args.baseline_fraction:.0%} / {args.matcher_fraction:.0%} of it. "
          f"Best of {args.repeats} runs each. Target: 20 MB/s. CPU time is the process's own; wall time "
          f"also counts the other jobs sharing the machine (see load average above).", ""]
    out.with_suffix(".md").write_text("\n".join(md), encoding="utf-8")
    plot(acc, speed, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')}, .md, .png")
    return result


if __name__ == "__main__":
    main()
