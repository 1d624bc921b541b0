"""clonekit: turn your chat history into an LLM that answers like you.

Stages (one module each, one CLI subcommand each):
  prepare (dataset.py) -> train (train.py) -> chat / eval (chat.py, evaluate.py)
  -> merge (merge.py) -> gguf (gguf.py)

`import clonekit` is light: torch and transformers load only inside the stages that need them.
"""

__version__ = "0.1.0"
