"""clonekit: turn your chat history into an LLM that answers like you.

Stages (one module each, one CLI subcommand each):
  prepare (dataset.py; formats/ parse the exports, privacy/ scrubs them)
  -> train (train.py; fast.py packs and fuses, memory.py plans the GPU memory)
  -> chat / eval (chat.py, evaluate.py with metrics.py)
  -> merge (merge.py; merge_io, merge_lora, merge_nf4, merge_verify)
  -> gguf (gguf.py; gguf_quality, gguf_modelfile, gguf_chat, gguf_lora, gguf_inspect, gguf_numpy)
Around them: records.py (the data), config.py, storage.py (every path), cli.py, pipeline.py (`clonekit demo`),
and for notebooks colab.py, drive.py (Google Drive), widgets.py.

`import clonekit` is light: torch and transformers load only inside the stages that need them.
"""

__version__ = "0.1.0"

import warnings as _warnings

# peft and TRL still use transformers' old names for activation checkpointing; the warnings
# they trigger on every run say nothing a clonekit user can act on.
for _old in ("is_gradient_checkpointing", "gradient_checkpointing"):
    _warnings.filterwarnings("ignore", message=f"`{_old}` is deprecated and will be removed in v6", category=FutureWarning)
