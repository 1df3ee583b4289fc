"""Explaining a trained run on image files: maps, overlays and a grid figure on disk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from octlens.data.images import check_image, load_grayscale
from octlens.data.index import read_each, warn_skipped
from octlens.errors import OctlensError
from octlens.explain import EXPLAINERS, Explainer, check_methods
from octlens.files import require_writable_folder
from octlens.training.run import Run
from octlens.viz import plot_explanation_grid, save_overlay


def explain_images(
    run: str | Path | Run,
    paths: Sequence[str | Path],
    methods: Sequence[str],
    out: str | Path,
    strict: bool = False,
    precision: str = "auto",
) -> dict[str, np.ndarray]:
    """Explain ``paths`` with each of ``methods`` on ``run``'s best checkpoint.

    Writes ``<stem>_<method>.png`` (overlay) and ``<stem>_<method>.npy`` (raw map at the model's
    input size) per image and method, and ``grid.png``; returns ``{method: maps (N, H, W)}``.
    Unreadable or non-image paths are skipped with one warning (``strict``: an error).
    """
    methods = check_methods(methods)
    run = run if isinstance(run, Run) else Run.load(run)
    model = run.model()
    explainers: dict[str, Explainer] = {
        name: EXPLAINERS[name](model, precision=precision) for name in methods
    }
    out = require_writable_folder(Path(out))
    img_size = run.img_size

    def decoded(path: Path) -> Image.Image:
        check_image(path)
        return load_grayscale(path, img_size)

    loaded, skipped = read_each(map(Path, paths), decoded, strict)
    if not loaded:
        warn_skipped(skipped)
        raise OctlensError("none of the given paths is a readable image")
    readable, scans = [path for path, _ in loaded], [scan for _, scan in loaded]

    transform = run.eval_transform()
    batch = torch.stack([transform(scan) for scan in scans])
    display = [np.asarray(scan.resize((img_size, img_size)), np.float32) / 255 for scan in scans]
    with torch.no_grad():
        predictions = torch.softmax(model(batch), dim=1)

    maps: dict[str, np.ndarray] = {}
    scaled_maps: dict[str, np.ndarray] = {}
    for name, explainer in explainers.items():
        explanation = explainer(batch)
        maps[name] = explanation.raw.numpy()
        scaled_maps[name] = explanation.normalized.numpy()
        for path, image, raw, scaled in zip(
            readable, display, explanation.raw, explanation.normalized, strict=True
        ):
            stem = f"{Path(path).stem}_{name.replace('+', 'p')}"
            np.save(out / f"{stem}.npy", raw.numpy())
            save_overlay(image, scaled.numpy(), out / f"{stem}.png")
    classes = run.classes
    titles = [
        f"{Path(p).name}\n{classes[int(row.argmax())]} {float(row.max()):.2f}"
        for p, row in zip(readable, predictions, strict=True)
    ]
    plot_explanation_grid(
        display,
        scaled_maps,
        titles,
        out / "grid.png",
        title=f"{run.name}: predicted class, probability",
    )
    warn_skipped(skipped)
    return maps
