"""Training progress: the loss history (saved as it grows) and the loss chart.

The history is the trainer's own log history, so after a resume the curve
continues where it stopped. Each entry: step, epoch, loss or eval_loss,
learning rate, real (non-padding) tokens seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import storage

try:  # a plain base class when transformers is absent keeps `import clonekit.progress` light
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    TrainerCallback = object  # type: ignore[misc,assignment]

KEYS = ("step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm", "num_input_tokens_seen", "train_tokens_per_second")


def history_from_log(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the entries with a loss, and only the keys worth keeping."""
    out = []
    for entry in log_history:
        if "loss" in entry or "eval_loss" in entry:
            out.append({k: entry[k] for k in KEYS if k in entry})
    return out


class HistoryCallback(TrainerCallback):
    """Writes loss_history.json after every log, so a disconnect loses nothing already shown."""

    def __init__(self, path: str | Path, on_update=None):
        self.path = Path(path)
        self.history: list[dict[str, Any]] = []
        self.on_update = on_update  # e.g. a notebook's live chart

    def record(self, state) -> None:
        self.history = history_from_log(state.log_history)
        storage.write_json(self.path, self.history)
        if self.on_update:
            self.on_update(self.history)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.record(state)


def plot_history(history: list[dict[str, Any]], path: str | Path | None = None, ax=None):
    """Training and validation loss against steps; saved as PNG when `path` is given."""
    import matplotlib

    if path is not None and ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train), label="training loss", marker="." if len(train) < 30 else None)
    if val:
        ax.plot(*zip(*val), label="validation loss", marker="o")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (persona tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    if path is not None and fig is not None:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return ax
