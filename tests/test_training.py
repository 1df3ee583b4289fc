from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from octlens.data.index import scan
from octlens.errors import OctlensError
from octlens.training import TrainConfig, load_checkpoint, train
from octlens.training.history import read_history
from octlens.training.loop import warmup_cosine

TIMING = ("seconds", "images_per_s")


def _config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = {
        "model": "resnet18",
        "img_size": 32,
        "epochs": 2,
        "batch_size": 8,
        "num_workers": 0,
        "seed": 3,
        **overrides,
    }
    return TrainConfig(data=data, out=out, **settings)


def _without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "resnet"
    return train(_config(tiny_data, out), verbose=False)


def test_a_run_writes_checkpoints_history_and_curves(tiny_run):
    out = tiny_run.run_dir
    for name in (
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "history.csv",
        "learning_curves.png",
    ):
        assert (out / name).is_file(), name
    history = read_history(out / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2]
    meta = json.loads((out / "last.json").read_text())
    assert meta["classes"] == ["CNV", "DME", "DRUSEN", "NORMAL"]
    assert meta["model"]["name"] == "resnet18" and meta["img_size"] == 32
    assert set(meta["normalization"]) == {"mean", "std"} and meta["seed"] == 3
    assert meta["epoch"] == 2 and meta["octlens_version"]
    checkpoint = load_checkpoint(out)  # a run folder means its best checkpoint
    assert checkpoint.meta["epoch"] == tiny_run.best_epoch
    model = checkpoint.build_model()
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 4)


def test_same_seed_same_metrics(tiny_data, tiny_run, tmp_path):
    again = train(_config(tiny_data, tmp_path / "again"), verbose=False)
    assert _without_timing(again.history) == _without_timing(tiny_run.history)


def test_precision_and_balance_options_train(tiny_data, tmp_path):
    result = train(
        _config(tiny_data, tmp_path / "bf16", precision="bf16", balance="sampler", epochs=1),
        verbose=False,
    )
    assert result.history[0]["train_loss"] > 0
    weighted = train(_config(tiny_data, tmp_path / "w", balance="loss", epochs=1), verbose=False)
    assert weighted.history[0]["train_loss"] > 0


def test_a_vit_trains_and_stops_early_when_val_loss_stalls(tiny_data, tmp_path):
    config = _config(
        tiny_data,
        tmp_path / "vit",
        model="vit_tiny",
        patch_size=8,
        lr=1e-12,
        epochs=6,
        patience=1,
        model_kwargs={"embed_dim": 32, "depth": 2, "num_heads": 2},
    )
    result = train(config, verbose=False)
    # With no learning, val loss never improves on epoch 1: epoch 2 is the last.
    assert len(result.history) == 2 and result.stopped_early and result.best_epoch == 1


_KILLABLE = """
import sys, time
from pathlib import Path
from octlens.data.dataset import OCTDataset
from octlens.training import TrainConfig, train

config = TrainConfig.model_validate_json(Path(sys.argv[1]).read_text())
marker, kill_after = Path(sys.argv[2]), int(sys.argv[3])
original, calls = OCTDataset.__getitem__, [0]

def getitem(self, position):
    calls[0] += 1
    if calls[0] == kill_after:  # part-way through an epoch: tell the test, then hang
        marker.write_text("now")
        time.sleep(600)
    return original(self, position)

OCTDataset.__getitem__ = getitem
train(config, verbose=False)
"""


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tiny_data, tmp_path):
    config = _config(tiny_data, tmp_path / "killed", epochs=4)
    reference = train(_config(tiny_data, tmp_path / "whole", epochs=4), verbose=False)

    (tmp_path / "config.json").write_text(config.model_dump_json())
    marker = tmp_path / "marker"
    script = tmp_path / "killable.py"
    script.write_text(_KILLABLE)
    index = scan(tiny_data)
    # Items fetched per epoch: the full training batches (drop_last), then every val image.
    per_epoch = len(index.split("train")) // 8 * 8 + len(index.split("val"))
    kill_after = 2 * per_epoch + 3  # three images into epoch 3
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "config.json"), str(marker), str(kill_after)]
    )
    deadline = time.time() + 300
    while not marker.exists():
        assert process.poll() is None, "the training process ended before the kill"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    last = load_checkpoint(config.out / "last.safetensors")
    assert last.meta["epoch"] == 2, "killed in epoch 3: the last checkpoint is epoch 2's"
    resumed = train(config, resume=True, verbose=False)
    assert _without_timing(resumed.history) == _without_timing(reference.history)
    assert [row["epoch"] for row in read_history(config.out / "history.csv")] == [1, 2, 3, 4]
    final = load_checkpoint(config.out / "last.safetensors").model_state()
    expected = load_checkpoint(reference.run_dir / "last.safetensors").model_state()
    for key, tensor in expected.items():
        torch.testing.assert_close(final[key], tensor, rtol=0, atol=0)


def test_resume_refuses_other_settings_and_a_new_run_refuses_an_old_folder(tiny_data, tiny_run):
    with pytest.raises(OctlensError, match=r"cannot resume with different settings \(lr\)"):
        train(_config(tiny_data, tiny_run.run_dir, lr=0.5), resume=True, verbose=False)
    with pytest.raises(OctlensError, match="holds a run already"):
        train(_config(tiny_data, tiny_run.run_dir), verbose=False)
    finished = train(_config(tiny_data, tiny_run.run_dir), resume=True, verbose=False)
    assert len(finished.history) == 2  # nothing left to do


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(OctlensError, match=r"junk.safetensors: not a safetensors checkpoint"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(OctlensError, match=r"foreign.safetensors: .*not an octlens checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(OctlensError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_warmup_then_cosine():
    factor = warmup_cosine(warmup_steps=4, total_steps=14)
    assert factor(0) == pytest.approx(0.2) and factor(3) == pytest.approx(0.8)
    assert factor(4) == pytest.approx(1.0)
    assert factor(9) == pytest.approx(0.5)
    assert factor(14) == pytest.approx(0.0, abs=1e-12)
