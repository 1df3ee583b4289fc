"""Explaining a trained run on image files: maps, overlays and a grid figure on disk.

A test set of thousands of scans is streamed: scans are decoded, predicted and explained
``batch_size`` at a time, each batch's files are written as it finishes, and only a bounded
sample (``grid_per_class`` scans per predicted class) is kept for ``grid.png``, so memory does
not grow with the number of scans.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from octlens.data.images import check_image, is_image_file, load_grayscale
from octlens.data.index import read_each, warn_skipped
from octlens.errors import OctlensError, require_positive
from octlens.explain import Explainer, build_explainer, check_methods
from octlens.files import atomic_write, require_writable_folder, write_text
from octlens.progress import progress_bar
from octlens.runtime import PrecisionPlan, resolve_device, resolve_precision
from octlens.training.run import Run
from octlens.viz import plot_explanation_grid, save_overlay

GRID = "grid.png"
TABLE = "explanations.csv"


@dataclass(frozen=True)
class ExplainedScan:
    """One scan explained: where it came from, the stem of its files, and the model's answer."""

    path: Path
    name: str  # files are OUT/<name>_<method>.png and .npy
    predicted: str
    probability: float


@dataclass
class ExplainResult:
    """What :func:`explain_images` wrote: per scan an overlay and a raw map for each method,
    ``grid.png`` of a sample, and ``explanations.csv`` listing every scan and its files."""

    out: Path
    methods: list[str]
    scans: list[ExplainedScan] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def grid(self) -> Path:
        return self.out / GRID

    def map_path(self, scan: ExplainedScan, method: str, suffix: str = ".npy") -> Path:
        """The raw map (``.npy``) or overlay (``.png``) of ``scan`` for ``method``."""
        return self.out / f"{scan.name}_{method.replace('+', 'p')}{suffix}"


@dataclass
class _Row:
    """One row of the grid figure: the scan at input size, its scaled maps, its title."""

    position: int
    predicted: str
    display: np.ndarray
    maps: dict[str, np.ndarray]
    title: str


def explain_images(
    run: str | Path | Run,
    paths: Sequence[str | Path],
    methods: Sequence[str],
    out: str | Path,
    strict: bool = False,
    precision: str | PrecisionPlan = "auto",
    device: str | None = None,
    batch_size: int = 32,
    grid_per_class: int = 4,
    verbose: bool = True,
    layer: str | None = None,
) -> ExplainResult:
    """Explain ``paths`` with each of ``methods`` on ``run``'s best checkpoint.

    Writes ``<name>_<method>.png`` (overlay) and ``<name>_<method>.npy`` (raw map at the model's
    input size) per scan and method, ``batch_size`` scans at a time on ``device``, then
    ``grid.png`` (the first ``grid_per_class`` scans of each predicted class) and
    ``explanations.csv``. ``<name>`` is the scan's stem under the folder its inputs share, so
    ``x/a.jpeg`` and ``y/a.jpeg`` get ``x/a_*`` and ``y/a_*`` (see :func:`output_names`).
    Unreadable or non-image paths are skipped with one warning (``strict``: an error).
    ``layer`` (a dotted module name, ``layer3``) is the layer the CAMs explain, instead of the
    model's last stage; their files are then named ``<name>_<method>@<layer>.*``.
    """
    require_positive(batch_size=batch_size, grid_per_class=grid_per_class)
    methods = check_methods(methods)
    run = run if isinstance(run, Run) else Run.load(run)
    if not isinstance(precision, PrecisionPlan):
        precision = resolve_precision(precision, resolve_device(device), measuring=True)
    model = run.model(precision)
    # maps at another layer are named for it (gradcam@layer3_...), so they never overwrite
    # the last stage's maps in the same folder
    explainers = {
        name if layer is None else f"{name}@{layer}": build_explainer(name, model, precision, layer)
        for name in methods
    }
    methods = list(explainers)
    out = require_writable_folder(Path(out))
    unique = list(dict.fromkeys(Path(os.path.abspath(path)) for path in paths))
    named = [path for path in unique if is_image_file(path)]  # the others are skipped
    names = dict(zip(named, output_names(named), strict=True))
    result = ExplainResult(out=out, methods=methods)
    grid: dict[str, list[_Row]] = defaultdict(list)
    with progress_bar("explaining", total=len(unique), verbose=verbose) as advance:
        for start in range(0, len(unique), batch_size):
            chunk = unique[start : start + batch_size]
            loaded, skipped = read_each(chunk, lambda path: _decoded(path, run.img_size), strict)
            result.skipped += skipped
            if loaded:
                rows = _explain_batch(run, model, explainers, loaded, names, precision, result)
                for row in rows:
                    kept = grid[row.predicted]
                    if len(kept) < grid_per_class:
                        kept.append(row)
            advance(len(chunk))
    if not result.scans:
        warn_skipped(result.skipped)
        raise OctlensError("none of the given paths is a readable image")
    rows = sorted((row for kept in grid.values() for row in kept), key=lambda row: row.position)
    plot_explanation_grid(
        [row.display for row in rows],
        {name: [row.maps[name] for row in rows] for name in methods},
        [row.title for row in rows],
        out / GRID,
        title=f"{run.name}: predicted class, probability",
    )
    write_text(out / TABLE, _table(result))
    warn_skipped(result.skipped)
    return result


def _decoded(path: Path, img_size: int) -> Image.Image:
    check_image(path)
    return load_grayscale(path, img_size)


def _explain_batch(
    run: Run,
    model: torch.nn.Module,
    explainers: dict[str, Explainer],
    loaded: list[tuple[Path, Image.Image]],
    names: dict[Path, str],
    plan: PrecisionPlan,
    result: ExplainResult,
) -> list[_Row]:
    """Predict and explain one batch, write its files, record its scans in ``result``, and
    return each scan's grid row."""
    transform, size = run.eval_transform(), run.img_size
    batch = torch.stack([transform(scan) for _, scan in loaded]).to(plan.device)
    display = [np.asarray(scan.resize((size, size)), np.float32) / 255 for _, scan in loaded]
    with torch.inference_mode(), plan.autocast():
        probabilities = model(batch).float().softmax(dim=1).cpu()
    predicted = probabilities.argmax(dim=1)
    scans = [
        ExplainedScan(path, names[path], run.classes[int(label)], float(row[label]))
        for (path, _), row, label in zip(loaded, probabilities, predicted, strict=True)
    ]
    scaled: dict[str, np.ndarray] = {}
    for method, explainer in explainers.items():
        explanation = explainer(batch, predicted.to(plan.device))
        raw, scaled[method] = explanation.raw.cpu().numpy(), explanation.normalized.cpu().numpy()
        for scan, image, raw_map, heat in zip(scans, display, raw, scaled[method], strict=True):
            _save_maps(result.map_path(scan, method), image, raw_map, heat)
    first = len(result.scans)
    result.scans += scans
    return [
        _Row(
            position=first + offset,
            predicted=scan.predicted,
            display=image,
            maps={method: maps[offset] for method, maps in scaled.items()},
            title=f"{scan.path.name}\n{scan.predicted} {scan.probability:.2f}",
        )
        for offset, (scan, image) in enumerate(zip(scans, display, strict=True))
    ]


def _save_maps(npy: Path, image: np.ndarray, raw: np.ndarray, heat: np.ndarray) -> None:
    """The raw map as ``.npy`` and its overlay as ``.png`` beside it, each written atomically."""

    def save_array(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, raw)

    atomic_write(npy, save_array)
    atomic_write(npy.with_suffix(".png"), lambda tmp: save_overlay(image, heat, tmp))


def output_names(paths: Sequence[Path]) -> list[str]:
    """A distinct file stem per path (absolute, distinct paths), relative to the output folder.

    A scan is named by its stem under the deepest folder all ``paths`` share, so scans of one
    folder keep flat names (``a``) and ``x/a.jpeg`` and ``y/a.jpeg`` become ``x/a`` and ``y/a``.
    Where two stems still meet (``a.jpeg`` and ``a.png``; or ``A`` and ``a``, one file on a
    case-insensitive disk) the whole file name is used, then a counter, so no scan's files
    overwrite another's.
    """
    if not paths:
        return []
    root = Path(os.path.commonpath([path.parent for path in paths]))
    folders = [path.parent.relative_to(root) for path in paths]
    stems = [(folder / path.stem).as_posix() for folder, path in zip(folders, paths, strict=True)]
    clashes = Counter(stem.casefold() for stem in stems)
    names: list[str] = []
    taken: set[str] = set()
    for stem, folder, path in zip(stems, folders, paths, strict=True):
        name = stem if clashes[stem.casefold()] == 1 else (folder / path.name).as_posix()
        unique, count = name, 1
        while unique.casefold() in taken:
            count += 1
            unique = f"{name}-{count}"
        taken.add(unique.casefold())
        names.append(unique)
    return names


def _table(result: ExplainResult) -> str:
    """``explanations.csv``: every scan explained, the stem of its files, the model's answer."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["scan", "files", "predicted", "probability"])
    for scan in result.scans:
        writer.writerow([str(scan.path), scan.name, scan.predicted, f"{scan.probability:.6f}"])
    return text.getvalue()
