"""Surviving a Colab disconnect: a run cut off after a checkpoint, its VM disk lost, restored from Drive and resumed,
ends exactly where an uninterrupted run ends (same adapter weights, same loss history)."""

from __future__ import annotations

import shutil

import pytest

from conftest import requires_torch

pytestmark = [requires_torch, pytest.mark.slow]


class Disconnect(Exception):
    """What a Colab disconnect looks like to the training loop: it just stops, mid-run."""


def _disconnect_at(step: int):
    from transformers import TrainerCallback

    class DisconnectAt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Disconnect(f"runtime disconnected after step {step}")

    return DisconnectAt()


def _config(data_dir, out_dir, model_dir):
    from clonekit.train import TrainConfig

    # dropout on, several micro batches per step, an eval on the checkpoint step, and an epoch boundary after the
    # resume (24 examples, 8 per step: step 4 is the second epoch's first): every source of difference is live
    return TrainConfig(data_dir=str(data_dir), out_dir=str(out_dir), base_model=model_dir, max_steps=4, epochs=1,
                       micro_batch_size=4, gradient_accumulation_steps=2, max_seq_length=256, learning_rate=2e-3,
                       warmup_ratio=0.25, lora_r=4, lora_alpha=8, lora_dropout=0.2, logging_steps=1, save_steps=2,
                       save_total_limit=1, eval_steps=2, seed=7)


def _adapter_weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_disconnected_run_resumes_from_drive_exactly(tiny_model_dir, tiny_dataset, tmp_path):
    import torch

    from clonekit import drive, storage
    from clonekit.train import run_train

    work = tmp_path / "work"  # tiny_dataset lives in tmp_path itself: keep runs out of the dataset folder
    full = run_train(_config(tiny_dataset, work / "full", tiny_model_dir))

    folder = drive.standin_folder(work / "drive")
    sync = drive.DriveSyncCallback(folder, "clone", data_dir=tiny_dataset, log=lambda s: None)
    run = work / "run"
    with pytest.raises(Disconnect):
        run_train(_config(tiny_dataset, run, tiny_model_dir), callbacks=[sync, _disconnect_at(2)])
    assert [u["step"] for u in sync.uploads] == [2]
    assert drive.remote_checkpoints(folder) == ["checkpoint-2"]
    assert {"train.jsonl", "validation.jsonl"} <= set(folder.list("data"))

    shutil.rmtree(run)  # a new Colab VM: the local disk is empty
    ckpt = drive.restore_run_from_drive(folder, run)
    assert ckpt == run / "checkpoints" / "checkpoint-2" and storage.latest_checkpoint(run / "checkpoints") == ckpt
    assert [h["step"] for h in storage.read_json(run / "loss_history.json") if "loss" in h] == [1, 2]

    resumed = run_train(_config(tiny_dataset, run, tiny_model_dir))
    assert resumed.stats["resumed_from"] == str(ckpt)
    assert resumed.steps == full.steps == 4
    # the loss curve goes on where it stopped: same entries, same numbers, no gap, no duplicate
    # (train_tokens_per_second is wall-clock speed: the only key allowed to differ)
    untimed = lambda history: [{k: v for k, v in h.items() if k != "train_tokens_per_second"} for h in history]
    assert untimed(resumed.history) == untimed(full.history)
    assert len(full.history) == 6 and sum("eval_loss" in h for h in full.history) == 2
    assert [h["step"] for h in resumed.history if "loss" in h] == [1, 2, 3, 4]
    assert max(h["epoch"] for h in full.history) > 1  # the run crossed into a second epoch
    a, b = _adapter_weights(full.run_dir), _adapter_weights(resumed.run_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")
    # the check can fail: steps 3-4 moved the weights away from the restored checkpoint
    from safetensors.torch import load_file

    assert [p.name for p in storage.list_checkpoints(run / "checkpoints")] == ["checkpoint-4"]  # save_total_limit=1
    at_2 = load_file(str(folder.download_file("clone/checkpoints/checkpoint-2/adapter_model.safetensors", work / "at_2.safetensors")))
    assert any(not torch.equal(a[k], at_2[k]) for k in a)
