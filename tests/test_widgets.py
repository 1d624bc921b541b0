"""Notebook widgets driven without a browser: set values, click buttons, read what a person would see."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets", reason="needs clonekit[colab]: pip install 'clonekit[colab]'")

from conftest import requires_torch  # noqa: E402


@requires_torch
def test_training_form_round_trips_and_presets_fill_the_knobs():
    from clonekit.train import TrainConfig
    from clonekit.widgets import CUSTOM, fill, training_form

    cfg = TrainConfig(data_dir="d", out_dir="o", max_steps=7, save_steps=5)
    form, get_config = training_form(cfg, runtime={"gpu_memory_gb": None})
    assert get_config() == cfg  # untouched form: the config cell's values
    f = form.fields
    assert f["preset"].value == CUSTOM
    f["preset"].value = "T4 15 GB (free Colab)"
    got = get_config()
    assert (got.base_model, got.micro_batch_size, got.gradient_accumulation_steps) == ("Qwen/Qwen2.5-1.5B-Instruct", 4, 4)
    assert got.data_dir == "d" and got.max_steps == 7  # knobs the form does not show are kept
    assert "fits" in form.estimate.value and "ChatML" in form.estimate.value
    f["micro_batch_size"].value, f["max_seq_length"].value = 32, 4096
    assert "DOES NOT FIT" in form.estimate.value  # the estimate follows every change
    f["train_on_inputs"].value, f["learning_rate"].value, f["save_steps"].value = True, 3e-4, 50
    got = get_config()
    assert got.train_on_inputs and got.learning_rate == pytest.approx(3e-4) and got.save_steps == 50
    f["epochs"].value, f["max_steps"].value = 0.1, -1
    f["base_model"].value = "my/own-model"
    assert get_config().base_model == "my/own-model" and "no memory estimate" in form.estimate.value
    f["gradient_accumulation_steps"].value, f["lora_alpha"].value = 1, 1
    assert get_config().lora_alpha == 1 and "effective batch 32" in form.estimate.value
    # the "Use these settings" button, pressed from code, and fill() by field name
    assert form.config is None
    fill(form, lora_r=8, save_total_limit=4)
    form.apply.click()
    assert form.config == get_config() and (form.config.lora_r, form.config.save_total_limit) == (8, 4)
    assert "LoRA r8/alpha 1" in form.message.value and "train on inputs" in form.message.value
    with pytest.raises(KeyError, match="no field warmup_ratio"):
        fill(form, warmup_ratio=0.5)


def test_apply_button_shows_a_bad_value_instead_of_raising():
    import ipywidgets

    from clonekit.errors import ConfigError
    from clonekit.widgets import _with_apply

    def broken():
        raise ConfigError("TrainConfig: learning_rate must be in (0, 1), got 5")

    box = _with_apply(ipywidgets, [], broken, str)
    box.apply.click()
    assert box.config is None and "learning_rate must be in (0, 1)" in box.message.value and "#b00" in box.message.value


def test_dataset_form_round_trips():
    from clonekit.dataset import DatasetConfig
    from clonekit.widgets import dataset_form

    form, get_config = dataset_form(DatasetConfig(inputs=["x.json"]))
    form.fields["me"].value = "Алексей Смирнов, alexey"
    form.fields["system_prompt"].value = "Отвечай как обычно."
    form.fields["privacy"].value = False
    got = get_config()
    assert got.me == ["Алексей Смирнов", "alexey"] and got.system_prompt == "Отвечай как обычно."
    assert got.privacy.enabled is False and got.inputs == ["x.json"]
    form.apply.click()
    assert form.config == got and "me: Алексей Смирнов, alexey" in form.message.value and "KEPT" in form.message.value


def test_live_loss_chart_redraws_with_speed_and_eta(monkeypatch):
    from clonekit import widgets

    clock = iter([100.0, 110.0, 120.0, 130.0])
    monkeypatch.setattr(widgets.time, "time", lambda: next(clock))
    chart = widgets.LiveLossChart(total_steps=10, min_interval_s=0)
    chart([{"step": 2, "loss": 3.0, "num_input_tokens_seen": 1000}])
    assert chart.draws == 1 and bytes(chart.image.value[:4]) == b"\x89PNG"
    chart([{"step": 2, "loss": 3.0, "num_input_tokens_seen": 1000}, {"step": 4, "loss": 2.5, "num_input_tokens_seen": 3000},
           {"step": 4, "eval_loss": 2.7}])
    # 2000 tokens and 2 steps in 10 s: 200 tokens/s, 5 s/step, 6 steps left -> 30 s
    assert chart.status.value == "step 4/10 · loss 2.500 · validation 2.700 · 200 tokens/s · 5.0 s/step · ETA 0:30"
    assert chart.bar.value == 4 and chart.bar.max == 10 and chart.draws == 2


@requires_torch
def test_live_loss_chart_as_trainer_callback_uses_the_trainer_state():
    from transformers import TrainerState

    from clonekit.widgets import LiveLossChart

    chart = LiveLossChart(min_interval_s=3600)
    state = TrainerState(max_steps=20, global_step=0, num_input_tokens_seen=0)
    chart.on_train_begin(None, state, None)
    assert chart.bar.max == 20
    state.global_step, state.num_input_tokens_seen = 5, 500
    state.log_history = [{"step": 5, "loss": 2.0, "epoch": 0.5}, {"step": 5, "train_runtime": 1.0}]
    chart.on_log(None, state, None)
    assert chart.history == [{"step": 5, "loss": 2.0, "epoch": 0.5}] and chart.draws == 1  # first call always draws
    chart.on_log(None, state, None)
    assert chart.draws == 1  # throttled
    chart.on_train_end(None, state, None)
    assert chart.draws == 2  # the final picture is always drawn


def test_chat_widget_is_drivable_by_clicks():
    from clonekit.widgets import chat_widget

    seen = []

    def respond(messages):
        seen.append(messages)
        return f"ответ на «{messages[-1]['content']}»"

    box = chat_widget(respond)
    box.input.value = "привет"
    box.send.click()
    assert box.input.value == "" and box.messages[-1] == {"role": "assistant", "content": "ответ на «привет»"}
    assert box.say("как дела?") == "ответ на «как дела?»"
    assert [m["role"] for m in seen[-1]] == ["user", "assistant", "user"]
    assert "как дела?" in box.transcript.value and "&lt;" not in "".join(m["content"] for m in box.messages)
    box.input.value = "   "
    box.send.click()  # empty input: nothing sent
    assert len(box.messages) == 4
    box.reset.click()
    assert box.messages == [] and "no messages yet" in box.transcript.value


def test_chat_widget_shows_errors_in_the_chat():
    from clonekit.widgets import chat_widget

    def broken(messages):
        raise RuntimeError("model not loaded")

    box = chat_widget(broken)
    assert box.say("hi") == "[error: RuntimeError: model not loaded]"
