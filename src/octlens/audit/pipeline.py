"""The shortcut audit of a trained run: are its explanations faithful, sane, on the lesion, and on
the retina at all?

For every method it explains the scans of one split (the predicted class of each scan) and
measures faithfulness (deletion/insertion beside random maps, average drop/increase), localization
against lesion masks where the data has them, the cascading-randomization sanity check, and the
share of attention off the retina, in the border band, the corners and the scanner's fill. On
data with a planted mark (``shortcut.csv``) it also compares accuracy on clean and marked scans.
:func:`~octlens.audit.shortcut.shortcut_flags` turns the numbers into a verdict.

Retina masks come from the dataset's ``retina/`` folder when it has one (synthetic data), else
from :func:`octlens.data.retina.find_retina`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from octlens.audit.faithfulness import (
    PerturbationCurves,
    average_drop_increase,
    deletion_insertion,
    random_maps,
)
from octlens.audit.localization import energy_in_mask, pixel_auroc, pointing_game
from octlens.audit.plots import (
    plot_attention_by_class,
    plot_perturbation_curves,
    plot_sanity,
    plot_worst_scans,
)
from octlens.audit.sanity import SanityResult, cascading_randomization
from octlens.audit.shortcut import area_shares, attention_shares, region_masks, shortcut_flags
from octlens.data.dataset import left_out
from octlens.data.images import UnreadableImageError, load_grayscale
from octlens.data.index import DatasetIndex, Sample
from octlens.data.marks import read_marks
from octlens.data.retina import find_retina, scanner_fill
from octlens.data.transforms import Normalization, eval_transform
from octlens.errors import require_positive
from octlens.explain import EXPLAINERS, check_methods, default_methods
from octlens.explain.base import scaled_to_unit
from octlens.files import require_writable_folder, write_json
from octlens.runtime import resolve_device, resolve_precision
from octlens.training.run import Run

REGIONS = ("off_retina", "border", "corners", "fill")


@dataclass
class AuditBatch:
    """Everything the audit needs about its scans, at the model's input size."""

    samples: list[Sample]  # the scans that could be read, in order
    unreadable: list[Sample]  # the scans left out because they could not be decoded
    images: torch.Tensor  # (N, 1, S, S) normalized
    display: np.ndarray  # (N, S, S) [0, 1] for figures
    lesions: torch.Tensor | None  # (N, S, S) bool, or None without lesion masks
    retina: torch.Tensor  # (N, S, S) bool
    fill: torch.Tensor  # (N, S, S) bool
    retina_source: str  # "masks" or "estimated"
    marks: list[str | None] | None  # class name of each scan's planted mark, if any


def audit_run(
    run: str | Path,
    data: str | Path,
    split: str = "test",
    methods: list[str] | None = None,
    scans_per_class: int | None = None,
    steps: int = 50,
    sanity_scans: int = 8,
    worst: int = 4,
    batch_size: int = 64,
    precision: str = "auto",
    device: str | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Audit ``run``'s best checkpoint on ``data``/``split``; write ``audit.json`` and figures.

    ``out`` defaults to ``RUN/audit/<split>/``. Returns the contents of ``audit.json``. Scans
    that cannot be decoded are left out, with a warning, and listed under ``unreadable``.
    """
    require_positive(
        steps=steps,
        scans_per_class=scans_per_class,
        sanity_scans=sanity_scans,
        batch_size=batch_size,
    )
    run_ = Run.load(run)
    index = run_.data(data)
    plan = resolve_precision(precision, resolve_device(device), measuring=True)
    model = run_.model(plan)
    methods = list(default_methods(model) if methods is None else methods)
    check_methods(methods)

    requested = run_.samples(index, split)
    out = require_writable_folder(Path(out) if out else run_.audit_dir(split))
    norm = run_.checkpoint.normalization
    batch = load_audit_batch(
        index,
        _chosen_samples(requested, len(index.classes), scans_per_class),
        run_.img_size,
        norm,
    )
    samples = batch.samples
    images = batch.images.to(plan.device)
    black = -norm.mean / norm.std  # pixel value 0 in the model's input space

    with torch.inference_mode(), plan.autocast():
        logits = torch.cat([model(chunk) for chunk in images.split(batch_size)]).float()
    predictions = logits.argmax(dim=1)
    labels = torch.tensor([s.label for s in samples], device=plan.device)
    regions = region_masks(batch.retina, batch.fill)
    areas = {name: share.mean().item() for name, share in area_shares(regions).items()}
    if batch.lesions is not None and batch.lesions.any():
        with_lesion = batch.lesions.flatten(1).any(dim=1)
        areas["lesion"] = batch.lesions[with_lesion].flatten(1).float().mean().item()
    faith = {"steps": steps, "baseline": "black (pixel 0)", "insertion_start": "Gaussian blur"}

    def perturbation(maps: torch.Tensor) -> PerturbationCurves:
        return deletion_insertion(
            model,
            images,
            maps.to(plan.device),
            predictions,
            steps=steps,
            baseline=black,
            batch_size=batch_size,
            precision=plan,
        )

    # Scans are grouped by class: the sanity check takes them evenly spread, so every class is in.
    sanity_picks = torch.linspace(0, len(samples) - 1, min(sanity_scans, len(samples))).round()
    sanity_picks = sanity_picks.long().to(plan.device)
    random_curves = perturbation(random_maps(tuple(batch.retina.shape)))
    curves: dict[str, PerturbationCurves] = {"random": random_curves}
    maps: dict[str, torch.Tensor] = {}
    per_scan: dict[str, dict[str, torch.Tensor]] = {}
    summary: dict[str, dict[str, Any]] = {}
    sanity: dict[str, SanityResult] = {}
    for name in methods:
        explainer = EXPLAINERS[name](model, precision=plan)
        maps[name] = torch.cat(
            [
                explainer(chunk, targets).raw.cpu()
                for chunk, targets in zip(
                    images.split(batch_size), predictions.split(batch_size), strict=True
                )
            ]
        )
        curves[name] = perturbation(maps[name])
        drop, increase = average_drop_increase(
            model, images, maps[name].to(plan.device), predictions, black, batch_size, plan
        )
        per_scan[name] = {
            "deletion_auc": curves[name].deletion_auc,
            "insertion_auc": curves[name].insertion_auc,
            "average_drop": drop,
            "increase": increase.float(),
            **attention_shares(maps[name], regions),
            **_localization(maps[name], batch.lesions),
        }
        sanity[name] = cascading_randomization(
            model,
            lambda m, name=name: EXPLAINERS[name](m, precision=plan),
            images[sanity_picks],
            predictions[sanity_picks],
        )
        summary[name] = {
            **_summarize(per_scan[name], samples, index.classes, batch.marks),
            "sanity": {
                "passed": sanity[name].passed,
                "stages": sanity[name].stages,
                "spearman_median": sanity[name].spearman.median(dim=1).values.tolist(),
                "ssim_median": sanity[name].ssim.median(dim=1).values.tolist(),
            },
            "worst_off_retina": _worst(per_scan[name]["off_retina"], samples, worst),
        }

    accuracy = _accuracy(labels, predictions, batch.marks, index.classes)
    flag_inputs = {
        name: {
            "sanity_passed": summary[name]["sanity"]["passed"],
            **{region: summary[name]["all"][region] for region in ("corners", "off_retina")},
            **{f"{region}_area": areas[region] for region in ("corners", "off_retina")},
        }
        for name in methods
    }
    reasons = shortcut_flags(flag_inputs, accuracy.get("clean_minus_marked"))
    result = {
        "run": str(run_.checkpoint.path),
        "model": run_.name,
        "data": str(index.root),
        "split": split,
        "data_fingerprint": index.fingerprint(requested),
        "precision": plan.name,
        "n_scans": len(samples),
        "unreadable": [str(sample.path) for sample in batch.unreadable],
        "retina_masks": batch.retina_source,
        "accuracy": accuracy,
        "area_share": areas,
        "faithfulness_protocol": faith,
        "random_baseline": {
            "deletion_auc": random_curves.deletion_auc.mean().item(),
            "insertion_auc": random_curves.insertion_auc.mean().item(),
        },
        "methods": summary,
        "best_method": best_method(summary),
        "flagged": bool(reasons),
        "flag_reasons": reasons,
    }
    write_json(out / "audit.json", result)
    title = f"{result['model']} on {split}"
    plot_perturbation_curves(curves, out / "deletion_insertion.png", title)
    plot_attention_by_class(
        {m: per_scan[m]["off_retina"].numpy() for m in methods},
        [index.classes[s.label] for s in samples],
        areas["off_retina"],
        out / "off_retina_by_class.png",
        title,
    )
    plot_sanity(sanity, out / "sanity.png", title)
    plot_worst_scans(
        batch.display,
        batch.retina.numpy(),
        {m: scaled_to_unit(maps[m]).numpy() for m in methods},
        {m: per_scan[m]["off_retina"].numpy() for m in methods},
        [s.path.name for s in samples],
        worst,
        out / "worst_off_retina.png",
    )
    return result


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """The audit's verdict in words: accuracy with and without planted marks, and the flag."""
    lines = []
    accuracy = result["accuracy"]
    if "clean" in accuracy:
        lines.append(
            f"accuracy: clean scans {_number(accuracy['clean'])} (n={accuracy['n_clean']}), "
            f"scans with a misleading mark {_number(accuracy['marked'])} "
            f"(n={accuracy['n_marked']}); follows the mark {_number(accuracy['follows_mark'])}"
        )
    if result["flagged"]:
        lines += [f"FLAGGED: {reason}" for reason in result["flag_reasons"]]
    else:
        lines.append("not flagged: no sign of a shortcut (rule: octlens.audit.shortcut)")
    return lines


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def best_method(summary: dict[str, dict[str, Any]]) -> str | None:
    """The method with the largest insertion minus deletion AUC among those passing sanity."""
    passing = [name for name, s in summary.items() if s["sanity"]["passed"]]
    if not passing:
        return None
    return max(
        passing,
        key=lambda name: (
            summary[name]["all"]["insertion_auc"] - summary[name]["all"]["deletion_auc"]
        ),
    )


def load_audit_batch(
    index: DatasetIndex, samples: list[Sample], img_size: int, normalization: Normalization
) -> AuditBatch:
    """Load ``samples`` and their masks (lesion, retina, scanner fill) at ``img_size``."""
    transform = eval_transform(img_size, normalization)
    images, display, lesions, retina, fill = [], [], [], [], []
    has_lesions = all(index.mask_path(s, "masks") for s in samples)
    has_retina = all(index.mask_path(s, "retina") for s in samples)
    scored = set()
    for position, sample in enumerate(samples):
        try:
            scan_image = index.load(sample)
        except UnreadableImageError:
            continue
        scored.add(position)
        pixels = np.asarray(scan_image)
        images.append(transform(scan_image))
        display.append(_resized(pixels, img_size, Image.Resampling.BILINEAR) / 255)
        if has_lesions:
            lesions.append(_mask_at(index.mask_path(sample, "masks"), img_size))
        if has_retina:
            retina.append(_mask_at(index.mask_path(sample, "retina"), img_size))
            fill.append(_resized(scanner_fill(pixels), img_size) > 0)
        else:
            found = find_retina(pixels)
            retina.append(_resized(found.mask(), img_size) > 0)
            fill.append(_resized(found.fill, img_size) > 0)
    unreadable = left_out(index, samples, scored)
    readable = [sample for position, sample in enumerate(samples) if position in scored]
    return AuditBatch(
        samples=readable,
        unreadable=unreadable,
        images=torch.stack(images),
        display=np.stack(display).astype(np.float32),
        lesions=torch.from_numpy(np.stack(lesions)) if has_lesions else None,
        retina=torch.from_numpy(np.stack(retina)),
        fill=torch.from_numpy(np.stack(fill)),
        retina_source="masks" if has_retina else "estimated",
        marks=read_marks(index, readable),
    )


def _localization(maps: torch.Tensor, lesions: torch.Tensor | None) -> dict[str, torch.Tensor]:
    if lesions is None:
        return {}
    return {
        "pointing_game": pointing_game(maps, lesions),
        "energy_in_lesion": energy_in_mask(maps, lesions),
        "pixel_auroc": pixel_auroc(maps, lesions),
    }


def _chosen_samples(samples: list[Sample], n_classes: int, per_class: int | None) -> list[Sample]:
    """All samples, or the first ``per_class`` of each class."""
    if per_class is None:
        return list(samples)
    by_class = [[s for s in samples if s.label == label][:per_class] for label in range(n_classes)]
    return [s for chosen in by_class for s in chosen]


def _resized(pixels: np.ndarray, size: int, resample=Image.Resampling.NEAREST) -> np.ndarray:
    image = Image.fromarray(pixels.astype(np.uint8) * (255 if pixels.dtype == bool else 1))
    return np.asarray(image.resize((size, size), resample), dtype=np.float32)


def _mask_at(path: Path, size: int) -> np.ndarray:
    """A mask file at ``size``; a broken mask is a one-line error naming it, like a scan."""
    return _resized(np.asarray(load_grayscale(path)), size) > 127


def _accuracy(labels, predictions, marks, classes) -> dict[str, Any]:
    correct = (labels == predictions).cpu()
    result: dict[str, Any] = {"all": correct.float().mean().item()}
    if marks is None:
        return result
    marked = torch.tensor([m is not None for m in marks])
    follows = [classes[int(p)] == m for p, m in zip(predictions.tolist(), marks, strict=True) if m]
    result.update(
        {
            "clean": correct[~marked].float().mean().item() if (~marked).any() else None,
            "marked": correct[marked].float().mean().item() if marked.any() else None,
            "n_clean": int((~marked).sum()),
            "n_marked": int(marked.sum()),
            "follows_mark": float(np.mean(follows)) if follows else None,
        }
    )
    if result["clean"] is not None and result["marked"] is not None:
        result["clean_minus_marked"] = result["clean"] - result["marked"]
    return result


def _summarize(
    scores: dict[str, torch.Tensor],
    samples: list[Sample],
    classes: list[str],
    marks: list[str | None] | None,
) -> dict[str, Any]:
    """Mean of each score over all scans, per class, and over marked and clean scans when the
    data has planted marks (NaN scores, e.g. localization on NORMAL scans, are skipped)."""
    labels = torch.tensor([s.label for s in samples])
    groups = {"all": torch.ones_like(labels, dtype=torch.bool)}
    groups.update({name: labels == i for i, name in enumerate(classes)})
    if marks is not None:
        marked = torch.tensor([m is not None for m in marks])
        groups.update({"marked": marked, "clean": ~marked})
    return {
        group: {key: _nan_mean(values[members]) for key, values in scores.items()}
        for group, members in groups.items()
    }


def _nan_mean(values: torch.Tensor) -> float | None:
    value = values.nanmean().item() if len(values) else math.nan
    return None if math.isnan(value) else value


def _worst(shares: torch.Tensor, samples: list[Sample], count: int) -> list[dict[str, Any]]:
    order = shares.argsort(descending=True)[:count]
    return [{"scan": str(samples[i].path), "off_retina": shares[i].item()} for i in order]
