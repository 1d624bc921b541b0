"""clonekit: turn your chat history into an LLM that answers like you.

Stages (one module each, one CLI subcommand each):
  prepare (dataset.py) -> train (train.py) -> chat / eval (chat.py, evaluate.py)
  -> merge (merge.py) -> gguf (gguf.py)

`import clonekit` is light: torch and transformers load only inside the stages that need them.
"""

__version__ = "0.1.0"

import warnings as _warnings

# peft and TRL still use transformers' old names for activation checkpointing; the warnings
# they trigger on every run say nothing a clonekit user can act on.
for _old in ("is_gradient_checkpointing", "gradient_checkpointing"):
    _warnings.filterwarnings("ignore", message=f"`{_old}` is deprecated and will be removed in v6", category=FutureWarning)
