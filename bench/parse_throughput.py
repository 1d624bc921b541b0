"""Telegram export parse throughput: clonekit's streaming parser vs `json.load`, 10 MB to 1 GB.

Run: `nice -n 10 python bench/parse_throughput.py` (sizes 10,100,1000 MB; `--sizes 10,100` to shrink).

For each size it writes a synthetic Telegram Desktop full export (several chats,
one of them 40% of the file; text in two languages, replies, entities, stickers,
media, service messages, forwards, edits) into bench/work/, then parses it in a
FRESH subprocess per measurement so peak RSS is that run's own:

* ours:     `clonekit.formats.parse_export(path)`, streaming (ijson C backend + byte-level chat splitting)
* baseline: `json.load(f)` + the same per-message conversion (`telegram.to_message`), where the
            file fits (`--baseline-max-mb`, default 200: json.load needs ~8x the file size in RAM)

It prints MB/s (1 MB = 10^6 bytes) and peak RSS side by side, saves
bench/results/parse_throughput.json (+ .md) with the exact command line, and
deletes the generated files (unless --keep). Target: >= 50 MB/s and peak RSS
< 400 MB at 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results"
TARGET_MB_S, TARGET_RSS_MB = 50.0, 400.0
WORDS_RU = ("привет как дела ну такое го норм кек ща давай завтра сегодня вечером работа кофе кино дом "
            "погода отлично хорошо понял спасибо может быть встреча метро субботу выходные").split()
WORDS_EN = "hey lol ok see you tomorrow sounds good ngl working on it coffee later tonight maybe sure".split()
EMOJI = ["😂", "👍", "❤️", "🙃", "🤙", "😊", ""]
PEOPLE = [("Алексей Смирнов", "user1001"), ("Marina Volkova", "user1002"), ("Дима Козлов", "user1003"),
          ("Anna Lee", "user1004"), ("Павел Орлов", "user1005")]


# ---------------------------------------------------------------- the synthetic export
def _body(rng: random.Random, who: tuple[str, str]) -> dict:
    """A message without id/type/date (those are written per message)."""
    words = WORDS_RU if rng.random() < 0.6 else WORDS_EN
    text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 14))) + rng.choice(EMOJI)
    m: dict = {"from": who[0], "from_id": who[1]}
    r = rng.random()
    if r < 0.03:
        m.update(file="stickers/sticker.webp", thumbnail="stickers/sticker.webp_thumb.jpg", media_type="sticker",
                 sticker_emoji=rng.choice(EMOJI[:5]), mime_type="image/webp", width=512, height=512)
        text = ""
    elif r < 0.05:
        m.update(photo="photos/photo_1@01-01-2024_10-00-00.jpg", width=1280, height=960)
        text = text if rng.random() < 0.3 else ""
    elif r < 0.06:
        m.update(file="voice_messages/audio_1@01-01-2024_10-00-00.ogg", media_type="voice_message",
                 mime_type="audio/ogg", duration_seconds=rng.randint(2, 60))
        text = ""
    elif r < 0.07:
        m["forwarded_from"] = "Some Channel"
    if rng.random() < 0.12:
        m["reply_to_message_id"] = rng.randint(1, 10_000)
    if rng.random() < 0.03:
        m["edited"], m["edited_unixtime"] = "2024-01-01T10:01:00", "1704103260"
    if text and rng.random() < 0.04:
        parts = [text[: len(text) // 2], {"type": "bold", "text": text[len(text) // 2:]}]
        m["text"] = parts
        m["text_entities"] = [{"type": "plain", "text": parts[0]}, parts[1]]
    else:
        m["text"] = text
        m["text_entities"] = [{"type": "plain", "text": text}] if text else []
    return m


def _pool(seed: int, n: int = 4000) -> list[str]:
    """Serialised message tails (after "date_unixtime"), indented like Telegram Desktop's result.json."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.01:
            m = {"actor": "Marina Volkova", "actor_id": "user1002", "action": "phone_call",
                 "duration_seconds": 60, "text": "", "text_entities": []}
        else:
            m = _body(rng, rng.choice(PEOPLE[:2]) if rng.random() < 0.8 else rng.choice(PEOPLE))
        s = json.dumps(m, ensure_ascii=False, indent=1)[1:]  # drop the opening brace
        out.append(s.replace("\n", "\n     "))
    return out


def generate(path: Path, size_bytes: int, seed: int = 0) -> int:
    """Stream-write a full export of about `size_bytes`; returns the message count."""
    from tqdm import tqdm

    rng = random.Random(seed)
    pool = _pool(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = int(size_bytes * 0.4)  # one chat takes 40%: bounded memory must not depend on chat size
    n, mid, t = 0, 1, 1_704_067_200
    with open(path, "w", encoding="utf-8") as f, tqdm(total=size_bytes, unit="B", unit_scale=True,
                                                      desc=f"write {path.name}", leave=False) as bar:
        head = ('{\n "about": "Here is the data you requested.",\n "personal_information": {\n  "user_id": 1001,\n'
                '  "first_name": "Алексей",\n  "last_name": "Смирнов",\n  "phone_number": "+7 900 000 00 01"\n },\n'
                ' "chats": {\n  "about": "This page lists all chats from this export.",\n  "list": [\n')
        f.write(head)
        written, chat = len(head.encode()), 0
        while written < size_bytes:
            chat += 1
            want = big if chat == 1 else rng.randint(1, 20) * 1_000_000
            want = min(want, size_bytes - written)
            kind = "personal_chat" if chat % 4 else "private_group"
            part = [("   },\n" if chat > 1 else "") + f'   {{\n    "name": "Chat {chat}",\n    "type": "{kind}",\n'
                    f'    "id": {100_000 + chat},\n    "messages": [\n']
            size = len(part[0].encode())
            first = True
            while size < want:
                mid += 1
                t += rng.randint(5, 900) if rng.random() > 0.01 else rng.randint(7_200, 43_200)  # nights
                tail = rng.choice(pool)
                typ = "service" if '"action"' in tail else "message"
                date = datetime.fromtimestamp(t + 10_800, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
                s = (("" if first else ",\n") + f'     {{\n      "id": {mid},\n      "type": "{typ}",\n'
                     f'      "date": "{date}",\n      "date_unixtime": "{t}",{tail}')
                first = False
                part.append(s)
                size += len(s.encode())
                n += 1
                if len(part) > 2000:
                    f.write("".join(part))
                    part = []
            part.append("\n    ]\n")
            data = "".join(part)
            f.write(data)
            written += size + 6
            bar.update(size + 6)
        tail = '   }\n  ]\n },\n "left_chats": {\n  "about": "",\n  "list": []\n }\n}\n'
        f.write(tail)
    return n


# ---------------------------------------------------------------- one measurement (in a fresh process)
def run_child(mode: str, path: Path) -> dict:
    import ijson

    from clonekit.formats import parse_export
    from clonekit.formats.telegram import to_message

    t0, c0 = time.perf_counter(), time.process_time()
    convs = msgs = 0
    if mode == "ours":
        for conv in parse_export(path):
            convs += 1
            msgs += len(conv.messages)
    else:
        with open(path, "rb") as f:
            data = json.load(f)
        for chat in data["chats"]["list"] + data.get("left_chats", {}).get("list", []):
            out = [to_message(d) for d in chat.get("messages", [])]
            convs += 1
            msgs += len(out)
            del out
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    mb = path.stat().st_size / 1e6
    return {"seconds": round(seconds, 3), "mb_per_s": round(mb / seconds, 1), "peak_rss_mb": round(peak_mb, 1),
            # CPU time: what the parse costs when the shared machine is busy (wall MB/s then drops)
            "cpu_seconds": round(cpu, 3), "mb_per_cpu_s": round(mb / cpu, 1),
            "conversations": convs, "messages": msgs, "ijson_backend": ijson.backend,
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def measure(mode: str, path: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--file", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| size | messages | ours MB/s (per CPU-s) | ours peak RSS MB | json.load MB/s (per CPU-s) "
             "| json.load peak RSS MB | load avg |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o, b = r["ours"], r.get("baseline") or {}
        base = f"{b['mb_per_s']} ({b['mb_per_cpu_s']})" if "mb_per_s" in b else "skipped"
        lines.append(f"| {r['size_mb']:g} MB | {o.get('messages', '?')} | {o.get('mb_per_s', '?')} "
                     f"({o.get('mb_per_cpu_s', '?')}) | {o.get('peak_rss_mb', '?')} | {base} | "
                     f"{b.get('peak_rss_mb', '-')} | {o.get('load_avg_1min', '?')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,1000", help="file sizes in MB, comma separated")
    ap.add_argument("--baseline-max-mb", type=float, default=200, help="run json.load only up to this size")
    ap.add_argument("--keep", action="store_true", help="keep the generated files in bench/work/")
    ap.add_argument("--out", default=str(RESULTS / "parse_throughput"), help="results path without suffix")
    ap.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, Path(args.file))))
        return 0

    import ijson

    from clonekit.storage import atomic_write_text, write_json

    command = "python " + shlex.join([os.path.relpath(__file__, ROOT), *(argv if argv is not None else sys.argv[1:])])
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    rows = []
    print(f"ijson backend: {ijson.backend}; {os.cpu_count()} CPUs; python {platform.python_version()}")
    print(f"{'size':>8} {'msgs':>9} | {'ours MB/s':>9} {'/CPU-s':>7} {'peak MB':>8} | "
          f"{'json.load MB/s':>14} {'/CPU-s':>7} {'peak MB':>8} | load")
    for size in sizes:
        path = WORK / f"telegram_{size:g}MB.json"
        t0 = time.perf_counter()
        n = generate(path, int(size * 1e6))
        gen_s = time.perf_counter() - t0
        ours = measure("ours", path)
        base = measure("baseline", path) if size <= args.baseline_max_mb else None
        row = {"size_mb": size, "file_bytes": path.stat().st_size, "messages_written": n,
               "generate_seconds": round(gen_s, 1), "ours": ours, "baseline": base}
        rows.append(row)
        b = base or {}
        print(f"{size:>6g}MB {n:>9} | {ours.get('mb_per_s', 'ERR'):>9} {ours.get('mb_per_cpu_s', ''):>7} "
              f"{ours.get('peak_rss_mb', ''):>8} | {b.get('mb_per_s', 'skipped'):>14} {b.get('mb_per_cpu_s', ''):>7} "
              f"{b.get('peak_rss_mb', '-'):>8} | {ours.get('load_avg_1min', '')}", flush=True)
        if "error" in ours:
            print("  ours failed:", ours["error"])
        if not args.keep:
            path.unlink()
    if not args.keep and WORK.exists() and not any(WORK.iterdir()):
        WORK.rmdir()
    last = rows[-1]["ours"] if rows else {}
    meets = bool(last) and last.get("mb_per_s", 0) >= TARGET_MB_S and last.get("peak_rss_mb", 1e9) < TARGET_RSS_MB
    result = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "ijson_backend": ijson.backend},
        "target": {"mb_per_s": TARGET_MB_S, "peak_rss_mb": TARGET_RSS_MB, "at_size_mb": sizes[-1] if sizes else None},
        "meets_target_at_largest_size": meets,
        "rows": rows,
    }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    md = (f"# Telegram parse throughput\n\nCommand: `{command}`  \nDate: {result['date']}; "
          f"{os.cpu_count()} CPUs; Python {platform.python_version()}; ijson backend `{ijson.backend}`.\n\n"
          f"{table(rows)}\n\nTarget at the largest size: >= {TARGET_MB_S:g} MB/s and peak RSS < "
          f"{TARGET_RSS_MB:g} MB: {'met' if meets else 'NOT met'} (wall-clock MB/s). 1 MB = 10^6 bytes; each run "
          f"in a fresh process; json.load skipped above {args.baseline_max_mb:g} MB. \"per CPU-s\" = file MB / "
          f"process CPU seconds: the speed on an idle core (this machine is shared, see the load average).\n")
    atomic_write_text(out.with_suffix(".md"), md)
    print(f"target (>= {TARGET_MB_S:g} MB/s, < {TARGET_RSS_MB:g} MB at {sizes[-1]:g} MB): "
          f"{'met' if meets else 'NOT met'}; saved {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
