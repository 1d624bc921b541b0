"""Screenshots of the five notebooks for docs/: executed on the CPU, converted to HTML, captured in headless Chromium.

Each notebook runs as nbmake runs it (CLONEKIT_SMALL=1, the embedded model,
Drive through the loopback stand-in) in a fresh work folder, with the widget
state saved. nbconvert turns the cells that show widgets and plots (with the
markdown cell above each) into an HTML page; the page renders the widgets
with @jupyter-widgets/html-manager, which nbconvert's pages normally load
from a CDN: here `npm pack` fetches it (and require.js) into a temporary
folder beside the page. Debian's chromium takes the screenshot; the PNG is
cropped to the content and reduced to a 256-colour palette (< 300 KB).

Needs: apt-get install -y chromium fonts-noto-color-emoji; npm; pip install nbconvert.
Run as: CLONEKIT_HOME=$PWD/.clonekit .venv/bin/python docs/make_screenshots.py [--keep DIR] [--only 02]
Prints each notebook's execution time and its slowest cells.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MAX_BYTES = 300_000
WIDTH = 1000

# per notebook: code cells to show, each found by a piece of its source (the markdown cell above comes along)
SHOWN = {
    "01_export_to_jsonl": ["widgets.dataset_form(config)", "plot_stats(stats"],
    "02_finetune_lora": ["widgets.training_form(config, runtime)", "widgets.LiveLossChart("],
    "03_chat_and_evaluate": ["widgets.chat_widget(", "build_quiz(", "for png in sorted("],
    "04_merge_adapter": ["colab.ensure_run(WORK, folder)", "result = run_merge(config)", "tensors merged"],
    "05_gguf_quantize": ["display(Markdown(result.table_md", "Chat with the GGUF clone"],
}


def npm_widget_renderer(dest: Path) -> tuple[str, str]:
    """embed-amd.js (with its fonts) and require.js unpacked into `dest`; returns their file names."""
    dest.mkdir(parents=True, exist_ok=True)
    for spec in ("@jupyter-widgets/html-manager@1", "requirejs@2"):
        name = subprocess.run(["npm", "pack", "--silent", spec], cwd=dest, check=True, capture_output=True, text=True).stdout.split()[-1]
        with tarfile.open(dest / name) as tar:
            tar.extractall(dest / name.removesuffix(".tgz"), filter="data")
    html_manager = next(dest.glob("jupyter-widgets-html-manager-*")) / "package" / "dist"
    for f in html_manager.iterdir():  # the page's folder: embed-amd.js finds its fonts next to itself
        shutil.copy(f, dest / f.name)
    shutil.copy(next(dest.glob("requirejs-*")) / "package" / "require.js", dest / "require.js")
    return "embed-amd.js", "require.js"


def execute(path: Path, env: dict[str, str]) -> tuple[dict, float, list[tuple[float, str]]]:
    """Run a notebook like nbmake (skip-execution cells skipped), keeping the widget state; (notebook, seconds, slowest cells)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    skipped = {i: c for i, c in enumerate(nb.cells) if "skip-execution" in c.metadata.get("tags", [])}
    nb.cells = [c for i, c in enumerate(nb.cells) if i not in skipped]
    old = dict(os.environ)
    os.environ.update(env)
    try:
        t = time.time()
        client = NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                                store_widget_state=True, record_timing=True)
        client.execute()
        seconds = time.time() - t
    finally:
        os.environ.clear()
        os.environ.update(old)
    cells = []
    for c in nb.cells:
        ex = c.metadata.get("execution", {})
        if "iopub.execute_input" in ex and "shell.execute_reply" in ex:
            from datetime import datetime

            dt = (datetime.fromisoformat(ex["shell.execute_reply"].replace("Z", "+00:00"))
                  - datetime.fromisoformat(ex["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()
            cells.append((dt, c.source.splitlines()[0][:70]))
    return nb, seconds, sorted(cells, reverse=True)[:3]


def shown_cells(nb, needles: list[str]):
    """The code cells holding each needle, each with the markdown cell just above it, in notebook order."""
    keep = set()
    for needle in needles:
        hits = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and needle in c.source]
        assert len(hits) == 1, f"{needle!r} found in cells {hits}"
        i = hits[0]
        keep.add(i)
        if i > 0 and nb.cells[i - 1].cell_type == "markdown":
            keep.add(i - 1)
    out = nb.copy()
    out.cells = [nb.cells[i] for i in sorted(keep)]
    return out


def to_html(nb, out_html: Path, renderer: str, require: str) -> None:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.require_js_url = require
    exporter.widget_renderer_url = renderer
    body, _ = exporter.from_notebook_node(nb)
    # the widgets' font comes from JupyterLab's theme variables, which a static page lacks
    style = "<style>.jupyter-widgets, .widget-html-content { font-family: var(--jp-ui-font-family), sans-serif; }</style>"
    out_html.write_text(body.replace("</head>", style + "</head>", 1), encoding="utf-8")


def capture(html: Path, png: Path, height: int = 4000) -> int:
    """Screenshot with Debian's chromium, crop to the content, palette-reduce under MAX_BYTES; returns bytes written."""
    from PIL import Image, ImageChops

    raw = html.with_suffix(".raw.png")
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
                    f"--window-size={WIDTH},{height}", "--virtual-time-budget=20000", f"--screenshot={raw}", html.as_uri()],
                   check=True, capture_output=True, timeout=180)
    img = Image.open(raw).convert("RGB")
    box = ImageChops.difference(img, Image.new("RGB", img.size, (255, 255, 255))).getbbox()
    img = img.crop((0, 0, img.width, min(img.height, box[3] + 16))) if box else img
    scale = 1.0
    while True:
        small = img if scale == 1.0 else img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        small.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
        if png.stat().st_size < MAX_BYTES or scale < 0.4:
            return png.stat().st_size
        scale *= 0.85


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, help="keep the executed notebooks and HTML pages here")
    ap.add_argument("--only", nargs="*", default=[], help="notebook numbers, e.g. 02 (the earlier ones run too, they feed it; later ones don't)")
    args = ap.parse_args(argv)
    if not shutil.which("chromium"):
        sys.exit("chromium not found: apt-get install -y chromium fonts-noto-color-emoji")
    tmp = Path(tempfile.mkdtemp(prefix="clonekit_shots_"))
    out = args.keep or tmp
    out.mkdir(parents=True, exist_ok=True)
    renderer, require = npm_widget_renderer(out)
    env = {"CLONEKIT_SMALL": "1", "CLONEKIT_WORK": str(tmp / "work"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "CLONEKIT_HOME": os.environ.get("CLONEKIT_HOME", str(ROOT / ".clonekit"))}
    total = 0.0
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if args.only and path.name[:2] > max(args.only):
            break
        nb, seconds, slowest = execute(path, env)
        total += seconds
        print(f"{path.name}: executed in {seconds:.0f} s; slowest cells: " + "; ".join(f"{s:.0f} s {src!r}" for s, src in slowest), flush=True)
        (out / path.name).write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
        if args.only and path.name[:2] not in args.only:
            continue
        page = out / f"{path.stem}.html"
        to_html(shown_cells(nb, SHOWN[path.stem]), page, renderer, require)
        png = DOCS / f"{path.stem}.png"
        print(f"  {png.relative_to(ROOT)}: {capture(page, png) / 1000:.0f} KB", flush=True)
    print(f"all notebooks: {total:.0f} s")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
