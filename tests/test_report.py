from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import tiny_config
from octlens.data.index import DataWarning
from octlens.errors import OctlensError
from octlens.explain.runner import explain_images
from octlens.training import TrainConfig, train


def test_explain_images_writes_maps_overlays_and_a_grid(tiny_data, tiny_vit_run, tmp_path):
    scans = sorted((tiny_data / "train" / "CNV").glob("*.jpeg"))[:3]
    junk = tmp_path / "notes.txt"
    junk.write_text("not a scan")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file\(s\): .*notes.txt"):
        result = explain_images(
            tiny_vit_run, [*scans, junk], ["gradcam", "rollout", "legrad"], tmp_path / "out"
        )
    assert result.methods == ["gradcam", "rollout", "legrad"]
    assert [scan.path for scan in result.scans] == scans  # one folder: flat names, as before
    for method in result.methods:
        for scan in scans:
            saved = np.load(tmp_path / "out" / f"{scan.stem}_{method}.npy")
            assert saved.shape == (32, 32) and saved.dtype == np.float32
            assert (tmp_path / "out" / f"{scan.stem}_{method}.png").is_file()
    assert (tmp_path / "out" / "grid.png").stat().st_size > 10_000
    assert len((tmp_path / "out" / "explanations.csv").read_text().splitlines()) == 1 + 3


def test_explain_images_errors(tiny_data, tiny_vit_run, tmp_path):
    scan = next((tiny_data / "test").rglob("*.jpeg"))
    with pytest.raises(OctlensError, match="unknown method"):
        explain_images(tiny_vit_run, [scan], ["magic"], tmp_path)
    with (
        pytest.warns(DataWarning, match=r"missing\.png: not an image file"),
        pytest.raises(OctlensError, match="none of the given paths"),
    ):
        explain_images(tiny_vit_run, [tmp_path / "missing.png"], ["gradcam"], tmp_path)


def test_html_report_is_self_contained_with_both_models(tiny_data, tiny_vit_run, tmp_path):
    from octlens.report import write_report

    resnet = tmp_path / "resnet"
    train(
        tiny_config(tiny_data, resnet, seed=0),
        verbose=False,
    )
    path = write_report([resnet, tiny_vit_run], tmp_path / "report.html", data=tiny_data)
    text = path.read_text()
    assert text.count("data:image/png;base64,") >= 10  # curves, evaluation and explanations
    assert "resnet18" in text and "vit_tiny" in text and "Explanations" in text
    assert "What the ViT sees" in text and "accuracy" in text
    assert "src='http" not in text and "href=" not in text  # nothing fetched when opened
    assert not (resnet / "eval").exists()  # evaluated for the report, never into the run folder


def test_a_report_on_medmnist_data_evaluates_and_skips_file_explanations(tmp_path):
    from octlens.report import write_report

    rng = np.random.default_rng(0)
    data = tmp_path / "oct.npz"
    np.savez(
        data,
        train_images=rng.integers(0, 255, (16, 28, 28), dtype=np.uint8),
        train_labels=np.arange(16) % 4,
        val_images=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8),
        val_labels=np.arange(8) % 4,
        test_images=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8),
        test_labels=np.arange(8) % 4,
    )
    run = tmp_path / "run"
    # fp32: a ResNet18 trained in bf16 on 16 px noise reached NaN weights in about 1 run of 8
    # on a CPU with native bf16; this test is about the report, not that recipe
    config = TrainConfig(
        data=data, out=run, img_size=16, epochs=1, batch_size=8, num_workers=0, precision="fp32"
    )
    train(config, verbose=False)
    text = write_report([run], tmp_path / "report.html", data=data).read_text()
    assert "test split, 8 scans" in text and "A sample of the data" in text
    assert "Explanations" not in text


@pytest.mark.slow
def test_report_without_data_uses_the_runs_own_data_and_says_so(tiny_data, tiny_vit_run, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "report.html"
    command = [sys.executable, "-c", "from octlens.cli import main; main()", "report"]
    completed = subprocess.run(
        [*command, str(tiny_vit_run), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert completed.returncode == 0, completed.stderr
    assert f"using the runs' own data {tiny_data} (test)" in completed.stdout
    assert "Explanations" in out.read_text()


def test_a_report_on_a_folder_without_splits_shows_the_run_s_carved_test_split(tiny_data, tmp_path):
    import shutil

    from octlens.data.splits import CARVED_RECORD
    from octlens.report import write_report

    folder = tmp_path / "folder"  # one sub-folder per class, no train/val/test
    for path in sorted(tiny_data.glob("*/*/*.jpeg")):
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.parent.name / path.name)
    run = tmp_path / "run"
    train(tiny_config(folder, run, test_fraction=0.25), verbose=False)
    assert json.loads((run / CARVED_RECORD).read_text())["splits"]["test"]
    # the folder has one split, 'all': the report reads the run's carved 'test' (it raised
    # "no split named 'test'" before), evaluates on it and explains its scans
    page = write_report([run], tmp_path / "r.html", data=folder, split="test").read_text()
    assert "accuracy" in page and "Explanations" in page and "A sample of the data" in page
    assert not (run / "eval").exists()
