"""The models behind the web app: runs loaded once, scans scored and explained in batches.

:class:`ScanService` holds each run's model and one explainer per method, built at start and
reused for every request. :meth:`ScanService.analyse` takes a batch of decoded uploads (with an
optional target class each) and returns, per scan and run, the class probabilities, each
method's map and the share of that map on the regions the audit reads (off the retina, the
corners), with a plain warning when this scan's attention sits off the retina by the audit's own
enrichment thresholds (:mod:`octlens.audit.shortcut`) applied to one scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from octlens.app.uploads import UploadedScan
from octlens.audit.result import AuditResult
from octlens.audit.shortcut import CORNER_ENRICHMENT, OFF_RETINA_ENRICHMENT, attention_shares
from octlens.data.regions import Region, area_shares, edge_regions
from octlens.errors import OctlensError
from octlens.evaluate import METRICS, EvaluationResult
from octlens.explain import (
    EXPLAINERS,
    Explainer,
    build_explainer,
    check_layer,
    check_methods,
    default_methods,
)
from octlens.models import is_vit
from octlens.runtime import resolve_device, resolve_precision
from octlens.training.inference import prepare_input
from octlens.training.run import Run

#: Regions whose attention share is reported for each map.
REGIONS: tuple[str, ...] = (Region.OFF_RETINA, Region.CORNERS)
_ENRICHMENT: dict[str, float] = {
    Region.OFF_RETINA: OFF_RETINA_ENRICHMENT,
    Region.CORNERS: CORNER_ENRICHMENT,
}


@dataclass
class Panel:
    """One method's map of one scan: raw (S, S) fp32 and its share on each region (None when
    the map has no attention to share out: see :func:`panel`)."""

    method: str
    raw: np.ndarray
    shares: dict[str, float] | None
    warning: str | None


@dataclass
class RunAnswer:
    """What one run says about one scan."""

    run: str
    probabilities: dict[str, float]
    predicted: str
    target: str
    display: np.ndarray  # (S, S) [0, 1]: the scan as the model sees it, for overlays
    retina: np.ndarray  # (S, S) bool, estimated by find_retina on the upload
    areas: dict[str, float]  # what an even map would put on each region
    panels: list[Panel] = field(default_factory=list)


@dataclass
class LoadedRun:
    """A run ready to answer: model, explainers, and what its folder says about it."""

    name: str
    folder: Path
    run: Run
    model: torch.nn.Module
    explainers: dict[str, Explainer]
    summary: dict[str, object]


class ScanService:
    """Scores and explains scans with several runs; build once, call :meth:`analyse` per batch.

    ``methods`` defaults to each model's :func:`~octlens.explain.default_methods`; a method that
    does not apply to a model (rollout on a CNN) is left out for that run only. ``layer`` is the
    layer the CAMs explain (default: the model's last stage).
    """

    def __init__(
        self,
        runs: Sequence[str | Path],
        methods: Sequence[str] | None = None,
        device: str | None = None,
        precision: str = "auto",
        layer: str | None = None,
    ) -> None:
        if not runs:
            raise OctlensError("give at least one run folder")
        names = None if methods is None else check_methods(methods)
        check_layer(names or [], layer)
        self.plan = resolve_precision(precision, resolve_device(device), measuring=True)
        self.runs: list[LoadedRun] = []
        for path in runs:
            run = Run.load(path)
            model = run.model(self.plan)
            wanted = names or [
                m for m in default_methods(model) if layer is None or EXPLAINERS[m].takes_layer
            ]
            usable = [m for m in wanted if EXPLAINERS[m].supports(model)]
            if not usable:
                kind = "ViT" if is_vit(model) else type(model).__name__
                raise OctlensError(f"{path}: none of the methods {wanted} applies to a {kind}")
            self.runs.append(
                LoadedRun(
                    name=_unique(run.folder.name, [r.name for r in self.runs]),
                    folder=run.folder,
                    run=run,
                    model=model,
                    explainers={m: build_explainer(m, model, self.plan, layer) for m in usable},
                    summary=run_summary(run),
                )
            )
        classes = {tuple(r.run.classes) for r in self.runs}
        if len(classes) > 1:
            raise OctlensError(f"the runs were trained on different classes: {sorted(classes)}")
        self.classes = self.runs[0].run.classes
        self.sizes = {r.run.img_size for r in self.runs}

    def analyse(
        self, scans: Sequence[UploadedScan], targets: Sequence[str | None]
    ) -> list[list[RunAnswer]]:
        """Per scan, one :class:`RunAnswer` per run; ``targets`` are class names or None
        (the run's predicted class)."""
        for target in targets:
            if target is not None and target not in self.classes:
                raise OctlensError(f"target '{target}': not one of {self.classes}")
        answers: list[list[RunAnswer]] = [[] for _ in scans]
        for loaded in self.runs:
            for position, answer in enumerate(self._answer(loaded, scans, targets)):
                answers[position].append(answer)
        return answers

    def _answer(
        self, loaded: LoadedRun, scans: Sequence[UploadedScan], targets: Sequence[str | None]
    ) -> list[RunAnswer]:
        size = loaded.run.img_size
        transform = loaded.run.eval_transform()
        images = torch.stack([transform(scan.at_size[size]) for scan in scans])
        images = prepare_input(images, self.plan.device, channels_last=not is_vit(loaded.model))
        with torch.no_grad(), self.plan.autocast():
            probabilities = torch.softmax(loaded.model(images).float(), dim=1).cpu()
        predicted = probabilities.argmax(dim=1)
        chosen = torch.tensor(
            [
                self.classes.index(target) if target is not None else int(guess)
                for target, guess in zip(targets, predicted, strict=True)
            ]
        )
        retina = torch.from_numpy(np.stack([_resized(scan.retina, size) for scan in scans]))
        edges = edge_regions(size, size)
        regions: dict[str, torch.Tensor] = {
            Region.OFF_RETINA: ~retina,
            Region.CORNERS: edges[Region.CORNERS].expand_as(retina),
        }
        areas = area_shares(regions)
        maps = {
            method: explainer(images, chosen.to(self.plan.device)).raw.cpu()
            for method, explainer in loaded.explainers.items()
        }
        shares = {method: attention_shares(raw, regions) for method, raw in maps.items()}
        answers = []
        for i, scan in enumerate(scans):
            area = {region: float(areas[region][i]) for region in REGIONS}
            answer = RunAnswer(
                run=loaded.name,
                probabilities={
                    label: float(p) for label, p in zip(self.classes, probabilities[i], strict=True)
                },
                predicted=self.classes[int(predicted[i])],
                target=self.classes[int(chosen[i])],
                display=np.asarray(scan.at_size[size].resize((size, size)), np.float32) / 255,
                retina=retina[i].numpy(),
                areas=area,
            )
            for method, raw in maps.items():
                share = {region: float(shares[method][region][i]) for region in REGIONS}
                answer.panels.append(panel(method, raw[i].numpy(), share, area))
            answers.append(answer)
        return answers


def panel(method: str, raw: np.ndarray, shares: dict[str, float], areas: dict[str, float]) -> Panel:
    """The panel of one map. A map with no positive value (or a NaN) has no attention to share:
    its shares would read "0% off the retina", the best score a map can get, so it has none and
    says so instead."""
    if not np.isfinite(raw).all():
        return Panel(method, raw, None, "no usable map (it holds NaN or infinite values)")
    if not (raw > 0).any():
        return Panel(method, raw, None, "no attention (empty map): nothing to place on the scan")
    return Panel(method, raw, shares, attention_warning(shares, areas))


def attention_warning(shares: dict[str, float], areas: dict[str, float]) -> str | None:
    """A plain sentence when a map's attention sits off the retina or in the corners, by the
    audit's enrichment thresholds (share >= threshold x the region's share of the area)."""
    for region in REGIONS:
        limit = _ENRICHMENT[region] * areas[region]
        if areas[region] > 0 and shares[region] >= min(limit, 0.95):
            where = "off the retina" if region == Region.OFF_RETINA else "in the corners"
            return (
                f"{shares[region]:.0%} of this map's attention is {where} "
                f"({areas[region]:.0%} of the image; warned at {min(limit, 0.95):.0%})"
            )
    return None


def run_summary(run: Run) -> dict[str, object]:
    """Headline numbers from the run's folder: test metrics and the audit verdict, if present."""
    summary: dict[str, object] = {"model": run.name, "img_size": run.img_size}
    metrics = run.eval_dir("test") / METRICS
    if metrics.exists():  # an edited or broken file is a line on the card, never a crash
        try:
            evaluation = EvaluationResult.load(metrics)
        except OctlensError as error:
            summary["test_error"] = str(error)
        else:
            summary["test"] = evaluation.model_dump(include={"n", "accuracy", "macro_auc"})
    for audit_json in sorted((run.folder / "audit").glob("*/audit.json")):
        try:
            result = AuditResult.load(audit_json)
        except OctlensError as error:
            summary["audit_error"] = str(error)
            break
        summary["audit"] = {
            "split": result.split,
            "flagged": result.flagged,
            "verdict": result.verdict_lines(),
            "best_method": result.best_method,
            "n_scans": result.n_scans,
        }
        break
    return summary


def _resized(mask: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((size, size), Image.Resampling.NEAREST)) > 0


def _unique(name: str, taken: list[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate
