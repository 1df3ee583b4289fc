from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers import TINY_VIT
from octlens.data.index import DataWarning, patient_id, scan
from octlens.data.synth import synthesize
from octlens.errors import OctlensError
from octlens.training import TrainConfig, load_checkpoint, train
from octlens.training.epoch import warmup_cosine
from octlens.training.history import read_history

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


def test_bf16_precision_trains(tiny_data, tmp_path):
    result = train(_config(tiny_data, tmp_path / "bf16", precision="bf16", epochs=1), verbose=False)
    assert result.precision == "bf16" and 0 < result.history[0]["train_loss"] < 10


def test_loss_balance_weights_each_class_by_its_inverse_frequency():
    from octlens.training.epoch import class_weights

    # 3 scans of class 0, 1 of class 1, none of class 2: total / (classes x count), a missing
    # class counted as one scan so its weight stays finite (total 5)
    weights = class_weights([0, 0, 0, 1], 3)
    assert weights.tolist() == pytest.approx([5 / 9, 5 / 3, 5 / 3])
    assert class_weights([0, 1, 2, 0, 1, 2], 3).tolist() == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize(("balance", "rare_share"), [("none", (0.1, 0.1)), ("sampler", (0.4, 0.6))])
def test_sampler_balance_draws_a_rare_class_as_often_as_a_common_one(tmp_path, balance, rare_share):
    from octlens.training.distributed import ProcessGroup
    from octlens.training.epoch import train_loader

    class Labels(torch.utils.data.Dataset):
        labels = [0] * 900 + [1] * 100
        epoch_seed = 0

        def __len__(self):
            return len(self.labels)

    dataset = Labels()
    config = _config(tmp_path, tmp_path / "run", balance=balance)
    loader = train_loader(dataset, config, 0, 1, ProcessGroup())  # type: ignore[arg-type]
    drawn = [dataset.labels[position] for position in loader.sampler]
    assert len(drawn) == 1000
    assert rare_share[0] <= sum(drawn) / len(drawn) <= rare_share[1]


def test_loss_balance_changes_training_on_imbalanced_data(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "imbalanced"
    shutil.copytree(tiny_data, data)
    for scan_file in sorted((data / "train" / "NORMAL").iterdir())[1:]:
        scan_file.unlink()
    plain = train(_config(data, tmp_path / "plain", epochs=1), verbose=False)
    weighted = train(_config(data, tmp_path / "weighted", balance="loss", epochs=1), verbose=False)
    assert weighted.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"])


def test_a_vit_trains_and_stops_early_when_val_loss_stalls(tiny_data, tmp_path):
    config = _config(
        tiny_data,
        tmp_path / "vit",
        model="vit_tiny",
        patch_size=8,
        lr=1e-12,
        epochs=6,
        patience=1,
        model_kwargs=TINY_VIT,
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


@pytest.mark.slow
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


def test_a_diverged_run_stops_with_an_error_and_writes_no_nan_checkpoint(tiny_data, tmp_path):
    config = _config(tiny_data, tmp_path / "diverged", lr=1e12, weight_decay=0, epochs=3)
    with pytest.raises(
        OctlensError, match=r"training diverged in epoch \d .*lower --lr .* or --weight-decay"
    ) as error:
        train(config, verbose=False)
    assert "\n" not in str(error.value)
    last = config.out / "last.safetensors"
    if last.exists():  # epochs before the divergence are kept, and they are finite
        checkpoint = load_checkpoint(last)
        assert all(torch.isfinite(t).all() for t in checkpoint.model_state().values())
        assert f"epochs 1-{checkpoint.meta['epoch']} are saved" in str(error.value)
        checkpoint.build_model()
    else:
        assert "no epoch finished, so no checkpoint was written" in str(error.value)
    assert not (config.out / "best.safetensors").exists() or last.exists()


def test_a_full_disk_keeps_the_finished_epochs(tiny_data, tmp_path, monkeypatch):
    import errno

    from octlens.training import checkpoint as checkpoint_module

    config = _config(tiny_data, tmp_path / "full", epochs=3)
    original, saves = checkpoint_module.save_file, [0]

    def save_file_until_full(tensors, path, metadata=None):
        saves[0] += 1
        if saves[0] > 2:  # best and last of epoch 1 fit; then the disk is full
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file_until_full)
    with pytest.raises(OctlensError, match=r"no space left .*epochs 1-1 are saved .*--resume"):
        train(config, verbose=False)
    monkeypatch.undo()
    assert load_checkpoint(config.out / "last.safetensors").meta["epoch"] == 1
    assert not [p.name for p in config.out.iterdir() if p.name.startswith(".")]
    resumed = train(config, resume=True, verbose=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]


def test_an_out_that_is_a_file_or_unwritable_fails_before_training(
    tiny_data, tmp_path, monkeypatch
):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OctlensError, match="--out is a file"):
        train(_config(tiny_data, tmp_path / "file"), verbose=False)

    def no_write(self, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_bytes", no_write)
    with pytest.raises(OctlensError, match=r"--out is not writable \(Permission denied\)"):
        train(_config(tiny_data, tmp_path / "locked"), verbose=False)


class _Stop(Exception):
    pass


def _stopped(config: TrainConfig, after: int, resume: bool = False) -> TrainConfig:
    """``config``'s run, stopped once epoch ``after`` is saved (as a kill would stop it)."""

    def stop(row):
        if row["epoch"] == after:
            raise _Stop

    with pytest.raises(_Stop):
        train(config, resume=resume, verbose=False, on_epoch=stop)
    return config


@pytest.mark.slow
def test_resume_accepts_another_spelling_of_the_path_and_a_moved_run(tiny_data, tmp_path):
    config = _stopped(_config(tiny_data, tmp_path / "run", epochs=4), after=1)
    other_spelling = _config(
        tiny_data.parent / ".." / tiny_data.parent.name / "data",
        Path(os.path.relpath(tmp_path / "run")),
        epochs=4,
    )
    _stopped(other_spelling, after=2, resume=True)
    assert load_checkpoint(config.out / "last.safetensors").meta["epoch"] == 2
    moved = (tmp_path / "run").rename(tmp_path / "moved")
    data_copy = tmp_path / "data-copy"
    subprocess.run(["cp", "-a", str(tiny_data), str(data_copy)], check=True)
    _stopped(_config(data_copy, moved, epochs=4), after=3, resume=True)
    assert load_checkpoint(moved / "last.safetensors").meta["epoch"] == 3
    (data_copy / "train" / "CNV" / sorted(os.listdir(data_copy / "train" / "CNV"))[0]).unlink()
    with pytest.raises(OctlensError, match="training split has changed since this run was"):
        train(_config(data_copy, moved, epochs=4), resume=True, verbose=False)
    # the original folder holds the same scans as the copy did: it may take the run on
    result = train(_config(tiny_data, moved, epochs=4), resume=True, verbose=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]


def test_temporaries_of_a_killed_checkpoint_write_are_removed(tiny_data, tmp_path, capsys):
    config = _stopped(_config(tiny_data, tmp_path / "run", epochs=2), after=1)
    for name in (".last.safetensors.octlens-tmp", ".last.safetensors.tmp"):
        (config.out / name).write_bytes(b"\x00" * 1024)
    train(config, resume=True, verbose=True)
    assert not [p.name for p in config.out.iterdir() if p.name.startswith(".")]
    assert "left by an interrupted checkpoint write" in capsys.readouterr().out


def test_training_refuses_a_class_it_has_no_scans_of_and_warns_of_leaks(tiny_data, tmp_path):
    data = tmp_path / "data"
    subprocess.run(["cp", "-a", str(tiny_data), str(data)], check=True)
    train_drusen = data / "train" / "DRUSEN"
    for path in (data / "test" / "DRUSEN").iterdir():  # a test patient's scan also in train
        (data / "train" / "DRUSEN" / path.name).write_bytes(path.read_bytes())
        break
    with pytest.warns(DataWarning, match=r"1 patient\(s\) have scans in 'train' and another split"):
        train(_config(data, tmp_path / "leaky", epochs=1), verbose=False)
    for path in train_drusen.iterdir():
        path.unlink()
    train_drusen.rmdir()
    with (
        pytest.warns(DataWarning, match=r"split 'train' has no folder for class\(es\) DRUSEN"),
        pytest.raises(OctlensError, match="training split 'train' has no images of DRUSEN"),
    ):
        train(_config(data, tmp_path / "missing", epochs=1), verbose=False)


def test_an_image_folder_trains_with_default_options_and_carves_val_and_test(tmp_path):
    from octlens.evaluate import evaluate_run

    folder = tmp_path / "folder"
    synthesize(tmp_path / "synth", n_per_class=10, size=(62, 64), workers=1)
    for path in (tmp_path / "synth").glob("*/*/*.jpeg"):  # DATA/<CLASS>/* only
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        path.rename(folder / path.parent.name / path.name)
    result = train(_config(folder, tmp_path / "run", epochs=1, test_fraction=0.2), verbose=False)
    carved = json.loads((tmp_path / "run" / "splits.json").read_text())["splits"]
    index = scan(folder)
    assert set(carved) == {"val", "test"}
    patients = {name: {patient_id(Path(f)) for f in files} for name, files in carved.items()}
    assert not patients["val"] & patients["test"]
    n_all = len(index.split("all"))
    n_val = len(carved["val"])
    assert n_all == 40 and n_val > 0
    # an accuracy over the carved val scans: a whole number of them right
    right = result.best["val_acc"] * n_val
    assert abs(right - round(right)) < 1e-4 and 0 <= round(right) <= n_val
    metrics = evaluate_run(tmp_path / "run", folder, "test")
    assert metrics.n == len(carved["test"]) > 0
    with pytest.warns(DataWarning, match="holds the scans .* was trained on"):
        evaluate_run(tmp_path / "run", folder, "all", out=tmp_path / "all")


def test_a_carve_that_takes_a_class_s_only_patient_says_so(tmp_path):
    from PIL import Image

    for name, value in (("A", 90), ("B", 50)):
        (tmp_path / "d" / name).mkdir(parents=True)
        for k in range(3 if name == "B" else 1):
            Image.new("L", (20, 20), value + k).save(tmp_path / "d" / name / f"{name}-{k}.png")
    with pytest.raises(OctlensError, match=r"carving val by patient left no training images of A"):
        train(_config(tmp_path / "d", tmp_path / "run", epochs=1), verbose=False)


def test_validation_leaves_out_a_scan_that_cannot_be_decoded(tiny_data, tmp_path):
    from helpers import broken_png

    data = tmp_path / "data"
    subprocess.run(["cp", "-a", str(tiny_data), str(data)], check=True)
    victim = sorted((data / "val" / "DME").iterdir())[0]
    victim.unlink()
    broken_png(victim.with_suffix(".png"), (128, 124))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(_config(data, tmp_path / "run", epochs=2), verbose=False)
    named = [w for w in caught if "left out 1 unreadable scan" in str(w.message)]
    assert len(named) == 1 and str(victim.with_suffix(".png")) in str(named[0].message)
    n_val = len(scan(data).split("val"))
    for row in result.history:  # accuracy over the readable scans: a multiple of 1 / (n - 1)
        assert round(row["val_acc"] * (n_val - 1), 4) == round(row["val_acc"] * (n_val - 1))


def test_the_best_epoch_is_the_first_of_equal_losses_and_best_is_saved_only_then(tmp_path):
    from octlens.training.history import best_epoch, patience_exhausted
    from octlens.training.saver import CheckpointSaver

    rows = [{"epoch": e, "val_loss": loss} for e, loss in ((1, 0.9), (2, 0.5), (3, 0.5))]
    assert best_epoch(rows) == 2
    assert patience_exhausted(rows, 1) and not patience_exhausted(rows, 2)
    assert not patience_exhausted(rows, None) and not patience_exhausted([], 1)

    written = []
    saver = CheckpointSaver(tmp_path, "t")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    row = {"lr": 0.1, "train_loss": 1, "train_acc": 0, "val_acc": 0, "seconds": 1}
    for epoch in (1, 2, 3):
        history = [{**row, **r, "images_per_s": 1} for r in rows[:epoch]]
        saver.save(model, {"epoch": epoch, "history": history}, optimizer, scheduler,
                   torch.amp.GradScaler("cpu", enabled=False))  # fmt: skip
        written.append(json.loads((tmp_path / "best.json").read_text())["epoch"])
    assert written == [1, 2, 2]  # epoch 3 ties epoch 2 and does not replace it
