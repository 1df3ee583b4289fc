"""Do the maps find real lesions beyond the retina? Tables and a figure from audits on masked data.

    .venv/bin/python benchmarks/real_lesions.py --audits runs/duke/r18-all runs/duke/r18-layer3
    .venv/bin/python benchmarks/real_lesions.py --figure docs/images/duke_fluid_maps.png \\
        --run runs/transfer-1000/fine-tuned --data ../shared/data/duke-dme-fluid --split dev \\
        --methods gradcam,layercam-fused,lrp

``--audits`` reads ``audit.json`` of each folder (``octlens audit RUN --data DATA`` on data with
lesion masks) and prints, per model and method, the pointing game, energy in lesion, pixel AUROC
and within-retina AUROC on the scans predicted as their class and on all annotated scans with a
lesion, beside random maps and both retina priors, and each method's gap to the stronger prior on
within-retina AUROC with its 95% bootstrap interval. ``--figure`` draws the scans with the largest
lesions among those predicted as their class (one per patient first), the lesion outlined, with
the thick-retina prior and each method's map.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from octlens.audit import AuditResult
from octlens.audit.batch import load_audit_batch
from octlens.audit.lesions import LESION_PREDICTED
from octlens.audit.priors import PRIORS, RANDOM, thickest_retina_prior
from octlens.audit.scores import LOCALIZATION, Score
from octlens.explain import build_explainer, check_methods
from octlens.explain.base import scaled_to_unit
from octlens.runtime import resolve_device, resolve_precision
from octlens.training.run import Run
from octlens.viz.overlays import plot_explanation_grid

HEADINGS = ("pointing", "energy", "pixel AUROC", "within-retina AUROC")
GROUPS = {LESION_PREDICTED: "predicted as their class", "all": "all annotated"}


def print_tables(folders: list[Path]) -> None:
    audits = [AuditResult.load(folder / "audit.json") for folder in folders]
    for group, words in GROUPS.items():
        credited_here = group == LESION_PREDICTED  # the scans the credit is judged on
        gap_heading = " within-retina AUROC minus the stronger prior |" if credited_here else ""
        print(f"\n**Scans with a lesion, {words}**\n")
        print("| model | method | sanity | " + " | ".join(HEADINGS) + f" |{gap_heading}")
        print(
            "| --- | --- | --- | "
            + " | ".join("---" for _ in HEADINGS)
            + " |"
            + (" --- |" if credited_here else "")
        )
        for folder, audit in zip(folders, audits, strict=True):
            localization = audit.localization
            if localization is None:
                raise SystemExit(f"{folder}: the audit had no lesion masks")
            model = f"{audit.model}" + (f" @{audit.layer}" if audit.layer else "")
            n = localization.n_lesion_predicted if credited_here else localization.n_with_lesion
            for name, summary in audit.methods.items():
                scores = summary.scores.get(group, {})
                gap = localization.beyond_prior.get(name, {}).get(Score.WITHIN_RETINA_AUROC)
                shown = (" - |" if gap is None else f" {gap.signed()} |") if credited_here else ""
                print(
                    f"| {model} (n={n}) | {name} | {'pass' if summary.sanity.passed else 'FAIL'} | "
                    + " | ".join(_number(scores.get(score)) for score in LOCALIZATION)
                    + f" |{shown}"
                )
            for reference in (RANDOM, *PRIORS):
                scores = localization.references[reference][group]
                print(
                    f"| {model} (n={n}) | *{reference}* | | "
                    + " | ".join(_number(scores.get(score)) for score in LOCALIZATION)
                    + (" | |" if credited_here else " |")
                )
    print()
    for folder, audit in zip(folders, audits, strict=True):
        line = audit.localization.verdict(audit.methods, audit.best_method)  # type: ignore[union-attr]
        print(f"- {folder}: {line}")


def draw_figure(args: argparse.Namespace) -> None:
    run = Run.load(args.run)
    plan = resolve_precision("fp32", resolve_device(None), measuring=True)
    index = run.data(args.data, verbose=False)
    samples = run.samples(index, args.split)
    batch = load_audit_batch(
        index, samples, run.img_size, run.checkpoint.normalization, verbose=False
    )
    if batch.lesions is None:
        raise SystemExit(f"{args.data}: no lesion masks")
    model = run.model(plan)
    with torch.no_grad():
        predictions = model(batch.images).argmax(dim=1)
    labels = torch.tensor([sample.label for sample in batch.samples])
    area = batch.lesions.flatten(1).sum(dim=1)
    eligible = [i for i in area.argsort(descending=True).tolist() if area[i] > 0]
    eligible = [i for i in eligible if predictions[i] == labels[i]]
    chosen: list[int] = []
    patients: set[str] = set()
    for i in eligible:  # one scan per patient first, largest lesion first
        patient = batch.samples[i].path.stem.rsplit("-", 1)[0]
        if patient not in patients and len(chosen) < args.scans:
            chosen.append(i)
            patients.add(patient)
    chosen += [i for i in eligible if i not in chosen][: args.scans - len(chosen)]
    picked = torch.tensor(chosen)
    images, targets = batch.images[picked], predictions[picked]
    maps = {"thick-retina prior": scaled_to_unit(thickest_retina_prior(batch.retina[picked]))}
    for name in check_methods(args.methods.split(",")):
        explainer = build_explainer(name, model, plan)
        maps[name] = explainer(images, targets).normalized
    plot_explanation_grid(
        [batch.display[i] for i in chosen],
        {name: value.numpy() for name, value in maps.items()},
        [batch.samples[i].path.name for i in chosen],
        args.figure,
        title=f"{run.name} on {Path(args.data).name}: lesion outlined in cyan",
        outlines=[batch.lesions[i].numpy() for i in chosen],
    )
    print(f"wrote {args.figure}")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", nargs="*", type=Path, default=[])
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--methods", default="gradcam,layercam-fused,lrp")
    parser.add_argument("--scans", type=int, default=4)
    args = parser.parse_args()
    if args.audits:
        print_tables(args.audits)
    if args.figure:
        if not (args.run and args.data):
            parser.error("--figure needs --run and --data")
        draw_figure(args)


if __name__ == "__main__":
    main()
