"""ipywidgets for the notebooks: the training form, the dataset form, a live loss chart, a chat box.

The articles trained through a web UI (template, max sequence length, train
on inputs, micro batch, gradient accumulation, epochs, learning rate, how
often to save, how many checkpoints to keep) with a live loss chart; these
widgets are that UI inside the notebook. Every widget works without a
browser: set `.value`, call `.click()`, so nbmake and the tests drive them.

    form, get_config = training_form(TrainConfig())   # display(form); then
    config = get_config()                             # a checked TrainConfig
    chart = LiveLossChart()                           # display(chart)
    run_train(config, callbacks=[chart])              # redrawn at every log

Run as: imported by notebooks/02_finetune_lora.ipynb and 03_chat_and_evaluate.ipynb.
"""

from __future__ import annotations

import html
import io
import time
from dataclasses import replace
from typing import Any, Callable

from . import colab
from .progress import history_from_log

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    TrainerCallback = object  # type: ignore[misc,assignment]

_STYLE = {"description_width": "190px"}
CUSTOM = "as in the config cell"
_LAYOUT = {"width": "520px"}


def _w():
    import ipywidgets

    return ipywidgets


def _help(config_cls, name: str) -> str:
    from dataclasses import fields

    return next(f.metadata.get("help", "") for f in fields(config_cls) if f.name == name)


def _field(widget, config_cls, name: str):
    """Give a widget its config field's help as tooltip."""
    widget.description_allow_html = False
    widget.tooltip = _help(config_cls, name)
    return widget


def model_options() -> list[str]:
    return ["auto", colab.EMBEDDED_SPEC.hub_id, *(m.hub_id for m in colab.RECOMMENDED_MODELS)]


def describe_estimate(base_model: str, max_seq_length: int, micro_batch_size: int, grad_accum: int, lora_r: int,
                      gpu_memory_gb: float | None) -> str:
    """The live line under the form: effective batch, template, memory estimate against the GPU."""
    name = base_model
    if base_model == "auto":
        pick = colab.pick_model(gpu_memory_gb) if gpu_memory_gb else None
        name = pick.hub_id if pick else colab.EMBEDDED_SPEC.hub_id
    spec = colab.recommended_model(name) or colab.recommended_model(name.rstrip("/").rsplit("/", 1)[-1])
    parts = [f"effective batch {micro_batch_size * grad_accum} examples per step"]
    if spec is None:
        return "; ".join(parts + [f"{base_model}: not in the recommended list, no memory estimate"])
    parts.append(f"chat template {spec.template} (from {spec.hub_id})")
    quant = "none" if spec is colab.EMBEDDED_SPEC else "4bit"
    est = colab.estimate_memory_gb(spec, max_seq_length, micro_batch_size, lora_r, quant, device="cuda" if gpu_memory_gb else "cpu")
    where = "GPU" if gpu_memory_gb else "RAM (CPU)"
    verdict = ""
    if gpu_memory_gb:
        verdict = " fits" if est["total"] <= gpu_memory_gb * colab.T4_BUDGET_GB / colab.T4_MEMORY_GB else \
            " DOES NOT FIT: lower micro batch or max sequence length"
    parts.append(f"memory ~{est['total']:.1f} GB {where} at worst (weights {est['weights']:.1f}, activations "
                 f"{est['activations']:.1f}, loss {est['logits']:.1f}){verdict}")
    return "; ".join(parts)


def training_form(config, runtime: dict[str, Any] | None = None):
    """The training knobs as a form: returns (widget, get_config).

    get_config() builds a new TrainConfig from the widgets (its checks run, so
    a bad value raises ConfigError naming it). A GPU preset fills the knobs
    for that card; the memory estimate below the form follows every change.
    The form's widgets are in `widget.fields` (name -> widget).
    """
    from .train import TrainConfig

    W = _w()
    rt = runtime if runtime is not None else colab.describe_runtime()
    preset = W.Dropdown(options=[CUSTOM, *colab.GPU_PRESETS], value=CUSTOM, description="GPU preset", style=_STYLE, layout=_LAYOUT)
    preset.tooltip = f"fill the knobs for a GPU; this runtime matches '{colab.preset_for_runtime(rt)}'"
    f: dict[str, Any] = {
        "base_model": W.Combobox(value=config.base_model, options=model_options(), ensure_option=False, description="base model"),
        "max_seq_length": W.IntSlider(value=config.max_seq_length, min=128, max=4096, step=64, description="max sequence length"),
        "micro_batch_size": W.IntSlider(value=config.micro_batch_size, min=1, max=32, description="micro batch"),
        "gradient_accumulation_steps": W.IntSlider(value=config.gradient_accumulation_steps, min=1, max=64, description="gradient accumulation"),
        "epochs": W.BoundedFloatText(value=config.epochs, min=0.1, max=50, step=0.5, description="epochs"),
        "max_steps": W.IntText(value=config.max_steps, description="max steps (-1: all epochs)"),
        "learning_rate": W.FloatLogSlider(value=config.learning_rate, base=10, min=-6, max=-2, step=0.1, readout_format=".1e", description="learning rate"),
        "lora_r": W.Dropdown(options=[4, 8, 16, 32, 64, 128], value=config.lora_r if config.lora_r in (4, 8, 16, 32, 64, 128) else 16, description="LoRA rank"),
        "lora_alpha": W.BoundedIntText(value=config.lora_alpha, min=1, max=1024, description="LoRA alpha"),
        "save_steps": W.BoundedIntText(value=config.save_steps, min=1, max=100000, description="save every N steps"),
        "save_total_limit": W.IntSlider(value=config.save_total_limit, min=1, max=10, description="checkpoints to keep"),
        "train_on_inputs": W.Checkbox(value=config.train_on_inputs, description="train on inputs", indent=False),
    }
    for name, widget in f.items():
        _field(widget, TrainConfig, name)
        widget.style = _STYLE
        if not isinstance(widget, W.Checkbox):
            widget.layout = W.Layout(**_LAYOUT)
    estimate = W.HTML()

    def update(_=None):
        gpu = colab.GPU_PRESETS.get(preset.value, {}).get("gpu_memory_gb") or rt.get("gpu_memory_gb")
        text = describe_estimate(f["base_model"].value, f["max_seq_length"].value, f["micro_batch_size"].value,
                                 f["gradient_accumulation_steps"].value, f["lora_r"].value, gpu)
        estimate.value = f"<span style='color:{'#b00' if 'NOT FIT' in text else '#333'}'>{html.escape(text)}</span>"

    def apply_preset(change=None):
        for k, v in colab.GPU_PRESETS.get(preset.value, {}).items():
            if k in f:
                f[k].value = v
        update()

    preset.observe(apply_preset, names="value")
    for widget in f.values():
        widget.observe(update, names="value")
    update()
    def get_config():
        values = {k: w.value for k, w in f.items()}
        values["base_model"] = values["base_model"].strip() or "auto"
        return replace(config, **values)

    box = _with_apply(W, [W.HTML("<b>Training settings</b> (hover a field for its meaning)"), preset, *f.values(), estimate],
                      get_config, describe_train_config)
    box.fields = {"preset": preset, **f}
    box.estimate = estimate
    return box, get_config


def describe_train_config(c) -> str:
    """One line summing up a TrainConfig, shown when the form's settings are taken."""
    steps = f"{c.max_steps} steps" if c.max_steps > 0 else f"{c.epochs:g} epochs"
    return (f"{c.base_model}: {steps}, micro batch {c.micro_batch_size} x {c.gradient_accumulation_steps}, max length "
            f"{c.max_seq_length}, lr {c.learning_rate:.1e}, LoRA r{c.lora_r}/alpha {c.lora_alpha}, checkpoint every "
            f"{c.save_steps} steps (keep {c.save_total_limit}){', train on inputs' if c.train_on_inputs else ''}")


def _with_apply(W, rows: list, get_config: Callable[[], Any], summary: Callable[[Any], str]):
    """A VBox of `rows` plus a "Use these settings" button: pressing it builds the config (`box.config`) and says so.

    A bad value (the config's own checks) is shown under the button instead of
    raising; `box.config` then stays as it was.
    """
    button = W.Button(description="Use these settings", button_style="primary")
    message = W.HTML()
    box = W.VBox([*rows, W.HBox([button, message])])
    box.apply, box.message, box.config = button, message, None

    def take(_button=None):
        try:
            box.config = get_config()
        except Exception as e:  # ConfigError lists every bad field: show it where the person is looking
            message.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        message.value = f"<span style='color:#080'>&#10003; {html.escape(summary(box.config))}</span>"

    button.on_click(take)
    return box


def fill(form, **values) -> None:
    """Set a form's widgets by field name, as a person would with the mouse (tests and nbmake drive forms this way).

    >>> fill(form, lora_r=8, train_on_inputs=True)  # doctest: +SKIP
    """
    unknown = sorted(set(values) - set(form.fields))
    if unknown:
        raise KeyError(f"the form has no field {', '.join(unknown)}; it has {', '.join(form.fields)}")
    for name, value in values.items():
        form.fields[name].value = value


def dataset_form(config):
    """The dataset knobs (who you are, system prompt, context, gaps, validation share): returns (widget, get_config)."""
    from .dataset import DatasetConfig

    W = _w()
    f: dict[str, Any] = {
        "me": W.Text(value=", ".join(config.me), placeholder="empty: the export's owner", description="me (your name in the export)"),
        "system_prompt": W.Textarea(value=config.system_prompt, description="system prompt", rows=3),
        "context_turns": W.IntSlider(value=config.context_turns, min=0, max=20, description="context turns"),
        "gap_hours": W.FloatSlider(value=config.gap_hours, min=0.5, max=48, step=0.5, description="new chat after (hours)"),
        "validation_fraction": W.FloatSlider(value=config.validation_fraction, min=0.0, max=0.5, step=0.05, description="validation share"),
    }
    for name, widget in f.items():
        _field(widget, DatasetConfig, name)
        widget.style = _STYLE
        widget.layout = W.Layout(**_LAYOUT)
    privacy = W.Checkbox(value=config.privacy.enabled, description="scrub personal data (phones, cards, names...)", indent=False)

    def get_config():
        values = {k: w.value for k, w in f.items()}
        values["me"] = [x.strip() for x in values["me"].split(",") if x.strip()]
        return replace(config, privacy=replace(config.privacy, enabled=privacy.value), **values)

    box = _with_apply(W, [W.HTML("<b>Dataset settings</b>"), *f.values(), privacy], get_config, describe_dataset_config)
    box.fields = {**f, "privacy": privacy}
    return box, get_config


def describe_dataset_config(c) -> str:
    """One line summing up a DatasetConfig, shown when the form's settings are taken."""
    me = ", ".join(c.me) or "the export's owner"
    return (f"me: {me}; {c.context_turns} context turns; new chat after {c.gap_hours:g} h; validation share "
            f"{c.validation_fraction:.0%}; personal data {'scrubbed' if c.privacy.enabled else 'KEPT'}")


# ---------------------------------------------------------------- live loss chart


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class LiveLossChart(TrainerCallback):
    """Training and validation loss, redrawn during training, with a progress bar, tokens/s and ETA.

    Use it as a Trainer callback (`run_train(cfg, callbacks=[chart])`) or as
    `HistoryCallback(path, on_update=chart)`: either way it gets the loss
    history (a list of dicts with step, loss / eval_loss, num_input_tokens_seen).
    """

    def __init__(self, total_steps: int | None = None, title: str = "loss", min_interval_s: float = 1.0):
        W = _w()
        self.total_steps = total_steps
        self.title = title
        self.min_interval_s = min_interval_s
        self.image = W.Image(format="png", layout=W.Layout(width="640px"))
        self.bar = W.IntProgress(value=0, min=0, max=max(1, total_steps or 1), description="step", layout=W.Layout(width="640px"))
        self.status = W.HTML("waiting for the first logged step...")
        self.widget = W.VBox([self.bar, self.status, self.image])
        self.history: list[dict[str, Any]] = []
        self.session: list[tuple[float, int, int]] = []  # (time, step, tokens) seen in this session
        self._last_draw = 0.0
        self.draws = 0

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # ---- as a callback
    def on_train_begin(self, args, state, control, **kwargs):
        if state.max_steps and state.max_steps > 0:
            self.total_steps = state.max_steps
            self.bar.max = state.max_steps
        self.session = [(time.time(), state.global_step, state.num_input_tokens_seen or 0)]

    def on_log(self, args, state, control, logs=None, **kwargs):
        self(history_from_log(state.log_history), tokens=state.num_input_tokens_seen, step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self(history_from_log(state.log_history), tokens=state.num_input_tokens_seen, step=state.global_step, force=True)

    # ---- as on_update
    def __call__(self, history: list[dict[str, Any]], tokens: int | None = None, step: int | None = None, force: bool = False) -> None:
        self.history = list(history)
        last = self.history[-1] if self.history else {}
        step = step if step is not None else int(last.get("step", 0))
        tokens = tokens if tokens is not None else int(max((h.get("num_input_tokens_seen", 0) for h in self.history), default=0))
        now = time.time()
        if not self.session:
            self.session = [(now, step, tokens)]
        elif step > self.session[-1][1]:
            self.session.append((now, step, tokens))
        self.bar.value = min(step, self.bar.max)
        self.status.value = self.status_line(step, tokens, now)
        if force or now - self._last_draw >= self.min_interval_s:
            self.draw()
            self._last_draw = now

    def status_line(self, step: int, tokens: int, now: float) -> str:
        t0, s0, k0 = self.session[0]
        losses = [h["loss"] for h in self.history if "loss" in h]
        evals = [h["eval_loss"] for h in self.history if "eval_loss" in h]
        parts = [f"step {step}" + (f"/{self.total_steps}" if self.total_steps else "")]
        if losses:
            parts.append(f"loss {losses[-1]:.3f}")
        if evals:
            parts.append(f"validation {evals[-1]:.3f}")
        dt = now - t0
        if dt > 0 and step > s0:
            if tokens > k0:
                parts.append(f"{(tokens - k0) / dt:,.0f} tokens/s")
            per_step = dt / (step - s0)
            parts.append(f"{per_step:.1f} s/step")
            if self.total_steps:
                parts.append(f"ETA {_fmt_time(per_step * (self.total_steps - step))}")
        return " · ".join(parts)

    def draw(self) -> None:
        from matplotlib.figure import Figure

        from .progress import plot_history

        fig = Figure(figsize=(7, 3.6), dpi=90)
        ax = fig.add_subplot()
        if self.history:
            plot_history(self.history, ax=ax)
        else:
            ax.text(0.5, 0.5, "no loss logged yet", ha="center", va="center", transform=ax.transAxes)
        if self.total_steps:
            ax.set_xlim(0, self.total_steps)
        ax.set_title(self.title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        self.image.value = buf.getvalue()
        self.draws += 1


# ---------------------------------------------------------------- chat


class ChatBox:
    """A chat with the clone: a transcript, a text box, Send and Reset buttons.

    `respond_fn(messages) -> str` gets the conversation so far (OpenAI-style
    dicts, the last one the user's) and returns the clone's reply. Drive it
    without a browser: `box.input.value = "привет"; box.send.click()`.
    """

    def __init__(self, respond_fn: Callable[[list[dict[str, str]]], str], title: str = "Chat with your clone"):
        W = _w()
        self.respond_fn = respond_fn
        self.messages: list[dict[str, str]] = []
        self.transcript = W.HTML(layout=W.Layout(width="640px", min_height="80px", border="1px solid #ccc", padding="6px"))
        self.input = W.Text(placeholder="write a message and press Send", layout=W.Layout(width="480px"))
        self.send = W.Button(description="Send", button_style="primary")
        self.reset = W.Button(description="Reset")
        self.send.on_click(self._on_send)
        self.reset.on_click(self._on_reset)
        self.widget = W.VBox([W.HTML(f"<b>{html.escape(title)}</b>"), self.transcript, W.HBox([self.input, self.send, self.reset])])
        self._render()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _render(self, pending: bool = False) -> None:
        rows = []
        for m in self.messages:
            who, color, align = ("you", "#e8f0fe", "right") if m["role"] == "user" else ("clone", "#f1f3f4", "left")
            rows.append(f"<div style='text-align:{align};margin:3px'><span style='background:{color};padding:4px 8px;"
                        f"border-radius:8px;display:inline-block'><small>{who}</small><br>{html.escape(m['content'])}</span></div>")
        if pending:
            rows.append("<div><i>the clone is typing...</i></div>")
        self.transcript.value = "".join(rows) or "<i>no messages yet</i>"

    def _on_send(self, _button=None) -> None:
        text = self.input.value.strip()
        if not text:
            return
        self.input.value = ""
        self.messages.append({"role": "user", "content": text})
        self._render(pending=True)
        try:
            reply = self.respond_fn(list(self.messages))
        except Exception as e:  # show it in the chat instead of losing the widget
            reply = f"[error: {type(e).__name__}: {e}]"
        self.messages.append({"role": "assistant", "content": reply})
        self._render()

    def _on_reset(self, _button=None) -> None:
        self.messages = []
        self._render()

    def say(self, text: str) -> str:
        """Type `text` and press Send; returns the reply."""
        self.input.value = text
        self.send.click()
        return self.messages[-1]["content"]


def chat_widget(respond_fn: Callable[[list[dict[str, str]]], str], title: str = "Chat with your clone") -> ChatBox:
    """A ChatBox (display it; type and Send, or drive it with `.say(text)`)."""
    return ChatBox(respond_fn, title)


def clone_responder(config) -> Callable[[list[dict[str, str]]], str]:
    """respond_fn for chat_widget from a ChatConfig: a run folder (base + adapter), a merged folder or a .gguf file.

    Uses the system prompt and generation settings the clone was trained and
    tuned with (as `clonekit chat` does) and the last `history_turns` turns.
    """
    from pathlib import Path

    from .chat import build_history, generate_reply, load_clone, trained_system_prompt, tuned_generation

    path = Path(config.run_dir)
    if path.suffix == ".gguf":
        from .gguf_chat import chat_gguf

        system = config.system_prompt if config.system_prompt is not None else trained_system_prompt(path.parent)
        return lambda turns: chat_gguf(str(path), build_history(system, turns, config.history_turns), max_tokens=config.max_new_tokens,
                                       temperature=config.temperature, top_p=config.top_p, repeat_penalty=config.repetition_penalty)
    config = replace(config, **tuned_generation(path))
    system = config.system_prompt if config.system_prompt is not None else trained_system_prompt(path)
    model, tok = load_clone(path, config.base_model)
    return lambda turns: generate_reply(model, tok, build_history(system, turns, config.history_turns), config)
