from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OCTLENS = [sys.executable, "-c", "from octlens.cli import main; main()"]


def _octlens(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*OCTLENS, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_synth_inspect_train_evaluate(tmp_path):
    data = tmp_path / "data"
    result = _octlens("synth", str(data), "--n-per-class", "6", "--size", "62x64", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 24 scans" in result.stdout
    assert (data / "masks" / "train").is_dir() and (data / "retina" / "test").is_dir()

    result = _octlens("inspect", str(data), "--hashes")
    assert result.returncode == 0, result.stderr
    assert "no leakage between splits" in result.stdout

    run = tmp_path / "run"
    result = _octlens(
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--model",
        "vit_tiny",
        "--img-size",
        "32",
        "--patch-size",
        "8",
        "--model-arg",
        "depth=2",
        "--model-arg",
        "embed_dim=32",
        "--model-arg",
        "num_heads=2",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert "best epoch 1" in result.stdout
    meta = json.loads((run / "best.json").read_text())
    assert meta["model"]["kwargs"] == {"depth": 2, "embed_dim": 32, "num_heads": 2}

    result = _octlens("evaluate", str(run), "--data", str(data), "--split", "test")
    assert result.returncode == 0, result.stderr
    assert "sensitivity" in result.stdout and (run / "eval" / "test" / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "nowhere", "--out", "x"], "error: nowhere: no such dataset folder"),
        (["evaluate", "nothing.safetensors", "--data", "."], "error: nothing.safetensors: no such"),
        (["synth", "o", "--size", "big"], "error: --size 'big': expected HEIGHTxWIDTH"),
        (["train", "--data", ".", "--out", "x", "--epochs", "0"], "error: --epochs: Input should"),
        (["train", "--data", ".", "--out", "x", "--model-arg", "depth"], "error: --model-arg"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, message):
    result = _octlens(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
