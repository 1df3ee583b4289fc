"""The shortcut audit of a trained run: are its explanations faithful, sane, on the lesion, and on
the retina at all?

For every method it explains the scans of one split (the predicted class of each scan) and
measures faithfulness (deletion/insertion beside random maps, average drop/increase), localization
against lesion masks where the data has them, the cascading-randomization sanity check, and the
share of attention off the retina, in the border band, the corners and the scanner's fill. On
data with a planted mark (``shortcut.csv``) it also compares accuracy on clean and marked scans.
The counterfactual region tests (:mod:`octlens.audit.evidence`) lead the verdict, which
:func:`~octlens.audit.shortcut.shortcut_flags` draws; the explanation clusters
(:mod:`octlens.audit.clusters`) show groups of scans the model explains differently.

Retina masks come from the dataset's ``retina/`` folder when it has one (synthetic data), else
from :func:`octlens.data.retina.find_retina`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from octlens.audit.batch import AuditBatch, load_audit_batch
from octlens.audit.clusters import explanation_clusters
from octlens.audit.counterfactual import interval, rate_interval
from octlens.audit.evidence import ScansUnderTest, StoredScans, counterfactual_evidence
from octlens.audit.faithfulness import (
    PerturbationCurves,
    average_drop_increase,
    deletion_insertion,
    random_maps,
    stratified_sample,
)
from octlens.audit.lesions import LESION_PREDICTED, localization_scores, localization_summary
from octlens.audit.plots import (
    plot_attention_by_class,
    plot_perturbation_curves,
    plot_sanity,
    plot_worst_scans,
)
from octlens.audit.result import (
    AccuracySummary,
    AuditResult,
    ClusterSummary,
    CounterfactualSummary,
    Curves,
    FaithfulnessProtocol,
    LocalizationSummary,
    MethodSummary,
    SanitySummary,
    WorstScan,
)
from octlens.audit.sanity import SanityResult, cascading_randomization
from octlens.audit.scores import FAITHFULNESS, PERTURBATION, Score, group_means, oriented
from octlens.audit.shortcut import attention_notes, attention_shares, mark_effects, shortcut_flags
from octlens.data.index import DatasetIndex, Sample
from octlens.data.regions import Region, area_shares, region_masks
from octlens.errors import require_positive
from octlens.explain import (
    EXPLAINERS,
    build_explainer,
    check_layer,
    check_methods,
    default_methods,
)
from octlens.explain.base import scaled_to_unit
from octlens.explain.layers import resolve_layer
from octlens.files import require_writable_folder
from octlens.progress import NO_BAR, Advance, progress_bar
from octlens.runtime import PrecisionPlan, resolve_device, resolve_precision
from octlens.training.run import Run

#: The tests run on each method's maps, one step of the audit's progress bar each.
METHOD_TESTS = ("explaining", "deletion/insertion", "average drop", "sanity check")
#: The regions whose attention share the flag rule weighs against their area share.
SHARES: tuple[str, ...] = (Region.CORNERS, Region.OFF_RETINA)


def audit_run(
    run: str | Path,
    data: str | Path,
    split: str = "test",
    methods: list[str] | None = None,
    scans_per_class: int | None = None,
    steps: int = 20,
    faithfulness_scans: int | None = 200,
    sanity_scans: int = 8,
    worst: int = 4,
    batch_size: int = 64,
    precision: str = "auto",
    device: str | None = None,
    out: str | Path | None = None,
    verbose: bool = True,
    estimate_retina: bool = False,
    layer: str | None = None,
) -> AuditResult:
    """Audit ``run``'s best checkpoint on ``data``/``split``; write ``audit.json`` and figures.

    ``out`` defaults to ``RUN/audit/<split>/``. The retina comes from the data's ``retina/`` masks,
    or from the label-free finder where it has none or with ``estimate_retina``. Scans that cannot
    be decoded are left out, with a warning, and listed under ``unreadable``. ``layer`` (a dotted
    module name, ``layer3``) is the layer the CAMs explain instead of the last stage; without
    ``methods``, only the default methods that explain a layer run then, and ``out`` defaults to
    ``RUN/audit/<split>@<layer>/``. Faithfulness (deletion, insertion, average drop, and the
    random maps' reference) is measured on ``faithfulness_scans`` scans drawn in proportion to
    the predicted classes (None: every scan), with bootstrap intervals over them; ``audit.json``
    lists them. These are the audit's costly numbers (2 x (steps + 1) forward passes per scan and
    method); the rest, one map per scan, runs on every scan. ``steps`` is 20 by default: from 50
    to 20 steps, the mean AUCs moved by at most 0.003 and the methods' order did not change, on
    synthetic and on real scans (``benchmarks/audit_steps.py``, docs/audit.md). Four steps:
    :func:`prepare_audit` (model, scans, masks, predictions), :func:`score_method` for each method,
    :func:`summarize` into the :class:`~octlens.audit.result.AuditResult` that ``audit.json`` holds,
    and the figures. Progress bars count the scans loaded and the tests run, per method
    (``verbose``, on a terminal).

    Example::

        result = audit_run("runs/r18", "data/synth", scans_per_class=8, steps=20)
        result.best_method, result.flagged, result.methods["gradcam"].scores["all"][Region.CORNERS]
    """
    require_positive(
        steps=steps,
        scans_per_class=scans_per_class,
        faithfulness_scans=faithfulness_scans,
        sanity_scans=sanity_scans,
        worst=worst,
    )
    names = None if methods is None else check_methods(methods)  # a typo fails before any work
    check_layer(names or [], layer)
    plan = resolve_precision(precision, resolve_device(device), measuring=True)
    run_ = Run.load(run)
    if layer is not None:  # a misspelt layer fails before the scans load, too
        resolve_layer(run_.model(plan), layer)
    audit = prepare_audit(
        run_,
        data,
        split,
        scans_per_class,
        steps,
        batch_size,
        plan,
        verbose,
        estimate_retina,
        faithfulness_scans,
    )
    methods = names or [
        name
        for name in default_methods(audit.model)
        if layer is None or EXPLAINERS[name].takes_layer
    ]
    # CAMs at another layer are another audit: its own folder, not the default one overwritten
    folder = split if layer is None else f"{split}@{layer}"
    out = require_writable_folder(Path(out) if out else audit.run.audit_dir(folder))
    n, height, width = audit.batch.retina.shape
    tests = 1 + len(methods) * len(METHOD_TESTS) + 1
    with progress_bar("auditing", tests, "tests", verbose) as advance:
        advance.describe("random maps: deletion/insertion")
        random = random_maps((n, height, width))
        random_curves = audit.perturbation(random[audit.faithfulness_scans])
        advance()
        scored = {name: score_method(audit, name, sanity_scans, advance, layer) for name in methods}
        advance.describe("counterfactual region tests")
        evidence = counterfactual_evidence(audit.scans_under_test(), audit.stored_scans())
        advance()
    result = summarize(audit, scored, random, random_curves, worst, evidence, layer)
    result.save(out / "audit.json")
    _write_figures(audit, scored, random_curves, worst, out, f"{result.model} on {split}")
    return result


@dataclass
class PreparedAudit:
    """A run, its scans and masks on the device, and the model's predictions for them."""

    run: Run
    index: DatasetIndex
    split: str
    requested: list[Sample]  # the split asked for (its fingerprint identifies the data)
    batch: AuditBatch
    model: torch.nn.Module
    plan: PrecisionPlan
    images: torch.Tensor  # batch.images on the device
    predictions: torch.Tensor  # (N,) the classes every method explains
    faithfulness_scans: torch.Tensor  # (n,) sorted indices of the scans faithfulness uses
    labels: torch.Tensor
    regions: dict[str, torch.Tensor]
    areas: dict[str, float]
    steps: int
    batch_size: int

    @property
    def black(self) -> float:
        """Pixel value 0 in the model's input space: the deletion baseline."""
        normalization = self.run.checkpoint.normalization
        return -normalization.mean / normalization.std

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, K) of ``images``, in batches on the device."""
        with torch.inference_mode(), self.plan.autocast():
            logits = [
                self.model(chunk.to(self.plan.device)) for chunk in images.split(self.batch_size)
            ]
        return torch.cat(logits).float().softmax(dim=1)

    def scans_under_test(self) -> ScansUnderTest:
        """The scans, masks and model as the counterfactual tests take them."""
        device = self.plan.device
        return ScansUnderTest(
            predict=self.predict,
            images=self.images,
            labels=self.labels,
            predictions=self.predictions,
            retina=self.batch.retina.to(device),
            fill=self.batch.fill.to(device),
            overlay=self.batch.overlay.to(device),
            regions={name: mask.to(device) for name, mask in self.regions.items()},
        )

    def stored_scans(self) -> StoredScans:
        """The scans as stored, re-read a batch at a time (the aspect test)."""
        samples, transform = self.batch.samples, self.run.eval_transform()

        def chunks() -> Iterator[list[np.ndarray]]:
            for start in range(0, len(samples), self.batch_size):
                chunk = samples[start : start + self.batch_size]
                yield [np.asarray(self.index.load(sample)) for sample in chunk]

        return StoredScans(
            widths=frozenset(width for _, width in self.batch.sizes),
            chunks=chunks,
            to_input=lambda pixels: transform(Image.fromarray(pixels)),
        )

    def perturbation(self, maps: torch.Tensor) -> PerturbationCurves:
        """Deletion and insertion curves of ``maps`` of the faithfulness scans (n, S, S)."""
        picks = self.faithfulness_scans.to(self.plan.device)
        return deletion_insertion(
            self.model,
            self.images[picks],
            maps.to(self.plan.device),
            self.predictions[picks],
            steps=self.steps,
            baseline=self.black,
            batch_size=self.batch_size,
            precision=self.plan,
        )


@dataclass
class ScoredMethod:
    """One method's maps and per-scan scores, and its sanity check."""

    maps: torch.Tensor  # (N, S, S) raw, on the CPU
    curves: PerturbationCurves
    per_scan: dict[str, torch.Tensor]  # metric -> (N,)
    sanity: SanityResult


def prepare_audit(
    run: Run,
    data: str | Path,
    split: str,
    scans_per_class: int | None,
    steps: int,
    batch_size: int,
    plan: PrecisionPlan,
    verbose: bool = True,
    estimate_retina: bool = False,
    faithfulness_scans: int | None = None,
) -> PreparedAudit:
    """Load the run's model and the chosen scans with their masks; predict once, and draw the
    scans faithfulness is measured on (stratified by predicted class)."""
    require_positive(batch_size=batch_size)
    index = run.data(data, verbose)
    requested = run.samples(index, split)
    chosen = _chosen_samples(requested, len(index.classes), scans_per_class)
    normalization = run.checkpoint.normalization
    batch = load_audit_batch(index, chosen, run.img_size, normalization, verbose, estimate_retina)
    model = run.model(plan)
    images = batch.images.to(plan.device)
    with torch.inference_mode(), plan.autocast():
        logits = torch.cat([model(chunk) for chunk in images.split(batch_size)]).float()
    regions = region_masks(batch.retina, batch.fill)
    areas = {name: share.mean().item() for name, share in area_shares(regions).items()}
    if batch.lesions is not None and batch.lesions.any():
        with_lesion = batch.lesions.flatten(1).any(dim=1)
        areas["lesion"] = batch.lesions[with_lesion].flatten(1).float().mean().item()
    predictions = logits.argmax(dim=1)
    return PreparedAudit(
        run=run,
        index=index,
        split=split,
        requested=requested,
        batch=batch,
        model=model,
        plan=plan,
        images=images,
        predictions=predictions,
        faithfulness_scans=stratified_sample(predictions, faithfulness_scans),
        labels=torch.tensor([s.label for s in batch.samples], device=plan.device),
        regions=regions,
        areas=areas,
        steps=steps,
        batch_size=batch_size,
    )


def score_method(
    audit: PreparedAudit,
    name: str,
    sanity_scans: int,
    advance: Advance = NO_BAR,
    layer: str | None = None,
) -> ScoredMethod:
    """Explain every scan with ``name`` and measure the maps: faithfulness, attention shares,
    localization where there are lesion masks, and the cascading-randomization check on
    ``sanity_scans`` scans spread evenly over the (class-grouped) scans, so every class is in.
    ``advance`` moves a progress bar past each of :data:`METHOD_TESTS`; ``layer`` is the layer a
    CAM explains (default: the last stage)."""
    advance.describe(f"{name}: {METHOD_TESTS[0]}")
    explainer = build_explainer(name, audit.model, audit.plan, layer)
    maps = torch.cat(
        [
            explainer(chunk, targets).raw.cpu()
            for chunk, targets in zip(
                audit.images.split(audit.batch_size),
                audit.predictions.split(audit.batch_size),
                strict=True,
            )
        ]
    )
    advance()
    advance.describe(f"{name}: {METHOD_TESTS[1]}")
    sampled = audit.faithfulness_scans
    curves = audit.perturbation(maps[sampled])
    advance()
    advance.describe(f"{name}: {METHOD_TESTS[2]}")
    on_device = sampled.to(audit.plan.device)
    drop, increase = average_drop_increase(
        audit.model,
        audit.images[on_device],
        maps[sampled].to(audit.plan.device),
        audit.predictions[on_device],
        audit.black,
        audit.batch_size,
        audit.plan,
    )
    advance()
    advance.describe(f"{name}: {METHOD_TESTS[3]}")
    n = len(audit.batch.samples)
    picks = torch.linspace(0, n - 1, min(sanity_scans, n)).round().long().to(audit.plan.device)
    sanity = cascading_randomization(
        audit.model,
        lambda model: build_explainer(name, model, audit.plan, layer),
        audit.images[picks],
        audit.predictions[picks],
    )
    advance()
    faithfulness: dict[str, torch.Tensor] = {
        Score.DELETION_AUC: curves.deletion_auc,
        Score.INSERTION_AUC: curves.insertion_auc,
        Score.AVERAGE_DROP: drop,
        Score.INCREASE: increase.float(),
    }
    per_scan = {
        **{score: _on_every_scan(values, sampled, n) for score, values in faithfulness.items()},
        **attention_shares(maps, audit.regions),
        **(
            localization_scores(maps, audit.batch.lesions, audit.batch.retina)
            if audit.batch.lesions is not None
            else {}
        ),
    }
    return ScoredMethod(maps=maps, curves=curves, per_scan=per_scan, sanity=sanity)


def _on_every_scan(values: torch.Tensor, picks: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) ``values`` of the scans ``picks``, NaN for the others (group means skip NaN)."""
    spread = torch.full((n,), math.nan)
    spread[picks] = values.float().cpu()
    return spread


def summarize(
    audit: PreparedAudit,
    scored: dict[str, ScoredMethod],
    random: torch.Tensor,
    random_curves: PerturbationCurves,
    worst: int,
    evidence: CounterfactualSummary,
    layer: str | None = None,
) -> AuditResult:
    """Means per group of scans for every method, the explanation clusters of the best method,
    and the verdict: counterfactual evidence, the manifest's accuracy gap, the maps' support,
    and, where there are lesion masks, whether the maps find lesions beyond the retina.
    ``random`` are the random maps (N, S, S) the faithfulness reference was measured on;
    ``layer`` the layer the CAMs explained."""
    samples, classes, marks = audit.batch.samples, audit.index.classes, audit.batch.marks
    groups = _scan_groups(audit)
    methods = {
        name: _method_summary(method, groups, samples, worst) for name, method in scored.items()
    }
    accuracy = _accuracy(audit.labels, audit.predictions, marks, classes)
    reasons = shortcut_flags(
        evidence.flagged_regions(), accuracy.clean_minus_marked_interval, accuracy.follow_excess
    )
    best = best_method(methods)
    clustered = best or next(iter(scored))
    return AuditResult(
        run=str(audit.run.checkpoint.path),
        model=audit.run.name,
        data=str(audit.index.root),
        split=audit.split,
        data_fingerprint=audit.index.fingerprint(audit.requested),
        precision=audit.plan.name,
        n_scans=len(samples),
        unreadable=[str(sample.path) for sample in audit.batch.unreadable],
        retina_masks=audit.batch.retina_source,
        accuracy=accuracy,
        area_share=audit.areas,
        faithfulness_protocol=FaithfulnessProtocol(
            steps=audit.steps,
            baseline="black (pixel 0)",
            insertion_start="Gaussian blur",
            scans=(
                None
                if len(audit.faithfulness_scans) == len(samples)
                else [str(samples[i].path) for i in audit.faithfulness_scans.tolist()]
            ),
        ),
        random_baseline=Curves(
            deletion_auc=random_curves.deletion_auc.mean().item(),
            insertion_auc=random_curves.insertion_auc.mean().item(),
        ),
        methods=methods,
        best_method=best,
        localization=_localization(audit, scored, random, groups),
        layer=layer,
        counterfactual=evidence,
        attention_notes=_attention_notes(methods, audit.areas),
        clusters_method=clustered,
        clusters=_clusters(audit, scored[clustered]),
        flagged=bool(reasons),
        flag_reasons=reasons,
    )


def _method_summary(
    method: ScoredMethod, groups: dict[str, torch.Tensor], samples: list[Sample], worst: int
) -> MethodSummary:
    """One method's scores averaged per group of scans, its sanity check, its worst scans."""
    return MethodSummary(
        scores=group_means(method.per_scan, groups),
        sanity=SanitySummary(
            passed=method.sanity.passed,
            stages=method.sanity.stages,
            spearman_median=method.sanity.spearman.median(dim=1).values.tolist(),
            ssim_median=method.sanity.ssim.median(dim=1).values.tolist(),
        ),
        worst_off_retina=_worst(method.per_scan[Region.OFF_RETINA], samples, worst),
        faithfulness={
            score: (rate_interval if score == Score.INCREASE else interval)(values[~values.isnan()])
            for score, values in method.per_scan.items()
            if score in PERTURBATION
        },
    )


def _localization(
    audit: PreparedAudit,
    scored: dict[str, ScoredMethod],
    random: torch.Tensor,
    groups: dict[str, torch.Tensor],
) -> LocalizationSummary | None:
    """The maps against the lesion masks, beside random maps and the retina priors."""
    batch = audit.batch
    if batch.lesions is None or batch.annotated is None:
        return None
    return localization_summary(
        {name: method.per_scan for name, method in scored.items()},
        random,
        batch.lesions,
        batch.retina,
        batch.annotated,
        groups[LESION_PREDICTED],
    )


def _attention_notes(methods: dict[str, MethodSummary], areas: dict[str, float]) -> list[str]:
    """What the maps say about the regions of :data:`SHARES`: support for a verdict, never a
    flag (:func:`~octlens.audit.shortcut.attention_notes`)."""
    return attention_notes(
        {
            name: {
                "sanity_passed": summary.sanity.passed,
                # None only if every map was empty: no attention in the region either
                **{region: summary.scores["all"][region] or 0.0 for region in SHARES},
                **{f"{region}_area": areas[region] for region in SHARES},
            }
            for name, summary in methods.items()
        }
    )


def _clusters(
    audit: PreparedAudit, method: ScoredMethod, examples: int = 3
) -> list[ClusterSummary]:
    """The explanation clusters of one method, each with its attention share per region."""
    groups = explanation_clusters(method.maps, audit.predictions)
    return [
        ClusterSummary(
            predicted=audit.index.classes[predicted],
            size=len(members),
            shares={
                region: method.per_scan[region][members].mean().item()
                for region in (Region.OFF_RETINA, Region.BORDER, Region.CORNERS, Region.FILL)
            },
            examples=[str(audit.batch.samples[i].path) for i in members[:examples]],
        )
        for predicted, members in groups
    ]


def best_method(methods: dict[str, MethodSummary]) -> str | None:
    """The most faithful method among those passing sanity: the largest sum of the
    :data:`~octlens.audit.scores.FAITHFULNESS` scores, each turned so that higher is better
    (insertion AUC minus deletion AUC)."""
    passing = [name for name, summary in methods.items() if summary.sanity.passed]
    if not passing:
        return None

    def faithfulness(name: str) -> float:
        scores = methods[name].scores["all"]
        return sum(oriented(score, scores[score] or 0.0) for score in FAITHFULNESS)

    return max(passing, key=faithfulness)


def _write_figures(
    audit: PreparedAudit,
    scored: dict[str, ScoredMethod],
    random_curves: PerturbationCurves,
    worst: int,
    out: Path,
    title: str,
) -> None:
    samples = audit.batch.samples
    curves = {"random": random_curves, **{name: m.curves for name, m in scored.items()}}
    plot_perturbation_curves(curves, out / "deletion_insertion.png", title)
    plot_attention_by_class(
        {name: m.per_scan[Region.OFF_RETINA].numpy() for name, m in scored.items()},
        [audit.index.classes[s.label] for s in samples],
        audit.areas[Region.OFF_RETINA],
        out / "off_retina_by_class.png",
        title,
    )
    plot_sanity({name: m.sanity for name, m in scored.items()}, out / "sanity.png", title)
    plot_worst_scans(
        audit.batch.display,
        audit.batch.retina.numpy(),
        {name: scaled_to_unit(m.maps).numpy() for name, m in scored.items()},
        {name: m.per_scan[Region.OFF_RETINA].numpy() for name, m in scored.items()},
        [s.path.name for s in samples],
        worst,
        out / "worst_off_retina.png",
    )


def _chosen_samples(samples: list[Sample], n_classes: int, per_class: int | None) -> list[Sample]:
    """All samples, or the first ``per_class`` of each class."""
    if per_class is None:
        return list(samples)
    by_class = [[s for s in samples if s.label == label][:per_class] for label in range(n_classes)]
    return [s for chosen in by_class for s in chosen]


def _accuracy(
    labels: torch.Tensor,
    predictions: torch.Tensor,
    marks: list[str | None] | None,
    classes: list[str],
) -> AccuracySummary:
    correct = (labels == predictions).cpu()
    overall = correct.float().mean().item()
    if marks is None:
        return AccuracySummary(all=overall)
    # Only a mark that names another class than the scan's can mislead (the test split's);
    # a truthful mark (training and validation splits) counts in neither group.
    names = [classes[int(label)] for label in labels.tolist()]
    marked = torch.tensor(
        [m is not None and m != name for m, name in zip(marks, names, strict=True)]
    )
    unmarked = torch.tensor([m is None for m in marks])
    follows = [
        classes[int(p)] == m
        for p, m, misleading in zip(predictions.tolist(), marks, marked.tolist(), strict=True)
        if misleading
    ]
    clean = correct[unmarked].float().mean().item() if unmarked.any() else None
    on_marked = correct[marked].float().mean().item() if marked.any() else None
    effects = (
        mark_effects(correct[unmarked], correct[marked], torch.tensor(follows), len(classes))
        if unmarked.any() and marked.any()
        else {}
    )
    return AccuracySummary(
        all=overall,
        clean=clean,
        marked=on_marked,
        n_clean=int(unmarked.sum()),
        n_marked=int(marked.sum()),
        follows_mark=float(np.mean(follows)) if follows else None,
        follows_by_chance=None if clean is None else (1 - clean) / (len(classes) - 1),
        clean_minus_marked=None if clean is None or on_marked is None else clean - on_marked,
        clean_minus_marked_interval=effects.get("gap"),
        follow_excess=effects.get("follow_excess"),
    )


def _scan_groups(audit: PreparedAudit) -> dict[str, torch.Tensor]:
    """The groups of scans each score is averaged over: all, each class, marked and clean ones
    when the data has planted marks, and the scans with a lesion the model predicts as their
    class (the lesion's) when it has lesion masks."""
    batch, classes = audit.batch, audit.index.classes
    labels = audit.labels.cpu()
    groups = {"all": torch.ones_like(labels, dtype=torch.bool)}
    groups.update({name: labels == i for i, name in enumerate(classes)})
    if batch.marks is not None:
        marked = torch.tensor([m is not None for m in batch.marks])
        groups.update({"marked": marked, "clean": ~marked})
    if batch.annotated is not None and batch.lesions is not None:
        with_lesion = batch.annotated & batch.lesions.flatten(1).any(dim=1)
        groups[LESION_PREDICTED] = with_lesion & (audit.predictions.cpu() == labels)
    return groups


def _worst(shares: torch.Tensor, samples: list[Sample], count: int) -> list[WorstScan]:
    order = shares.argsort(descending=True)[:count]
    return [WorstScan(scan=str(samples[i].path), off_retina=shares[i].item()) for i in order]
