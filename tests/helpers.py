"""Helpers the test modules share: the tiny training settings, running the CLI, broken files.

Fixtures live in ``conftest.py``; plain functions and constants live here, so no test module
imports another.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import torch

from octlens.training import TrainConfig

#: A 2-block ViT of width 32: the smallest that still has attention worth explaining.
TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}

#: ``octlens`` as a fresh interpreter runs it.
OCTLENS = [sys.executable, "-c", "from octlens.cli import main; main()"]


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """One epoch of a ResNet18 at 32 px in batches of 8, in this process: a run in seconds."""
    settings = {"img_size": 32, "epochs": 1, "batch_size": 8, "num_workers": 0, "seed": 5}
    return TrainConfig(data=data, out=out, **{**settings, **overrides})


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``octlens ARGS`` in a fresh interpreter, as a user runs it."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*OCTLENS, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def run_cli_in_process(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``octlens ARGS`` in this process (fast: no interpreter start): status, stdout, stderr."""
    from octlens.cli import main

    monkeypatch.setattr(sys, "argv", ["octlens", *args])
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main()
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def broken_png(path: Path, size: tuple[int, int] = (32, 32)) -> None:
    """A PNG whose chunks all carry valid CRCs but whose image data is not a deflate stream."""
    width, height = size

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    garbage = bytes(range(256)) * 2
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", garbage)
        + chunk(b"IEND", b"")
    )


def explain_batched_and_single(model, methods, images, atol: float) -> None:
    """Each of ``methods`` (registered names) on ``model``, asked for bf16: fp32 maps at the
    input's size, and one image's map in a batch equal to its map alone."""
    from octlens.explain import EXPLAINERS

    for method in methods:
        explainer = EXPLAINERS[method](model, precision="bf16")  # maps are fp32 regardless
        batch = explainer(images)
        assert batch.raw.shape == (len(images), *images.shape[-2:])
        assert batch.raw.dtype == torch.float32
        single = explainer(images[1:2], batch.targets[1:2]).raw
        torch.testing.assert_close(single[0], batch.raw[1], rtol=1e-4, atol=atol)
