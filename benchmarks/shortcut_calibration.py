"""Calibrate the label-free shortcut verdict against planted marks, where the answer is known.

    .venv/bin/python benchmarks/shortcut_calibration.py --out runs/calibration [--seeds 0 1]
        [--datasets clean square-0.9 text-0.9 ...] [--models resnet18 vit_tiny]

Trains the demo's two recipes (ResNet18, then the ViT-tiny distilled from the ResNet18 of the
same data and seed; 128 px) with two seeds each on clean synthetic data and on data with a
planted mark of each kind (``square``, ``text``, ``stripes``, ``checkerboard``, ``logo``,
``scalebar``, ``arrow``; top-left corner, or ``--place``) at rate 0.9 (and the square at 0.5),
then per model:

- **the manifest's answer**: the test scans written three times (:func:`versions`: clean, with a
  mark of their own class, with a wrong class's), and the model *reads the mark's class* when its
  accuracy with a truthful mark exceeds that with a misleading one by ``ACCURACY_GAP``, or it
  answers the misleading mark's class ``FOLLOW_EXCESS`` more often than its clean-scan errors
  would, ``(1 - clean) / 3``, each with its paired bootstrap interval above zero
  (:func:`manifest_answer`); clean minus misleading is shown beside it;
- **the counterfactual verdict**, which never reads the manifest: ``octlens audit`` on the
  validation split, whose marks code the scan's own class as a real confound would (on the test
  split a same-class donor carries a misleading mark as often as any other, so the same-class
  control would contain the shortcut itself). Each model is audited twice: with the generator's
  ``retina/`` masks, and with the label-free retina finder (``estimate_retina``), as a user's
  data without masks would be.

**Real scans** (``--real ../shared/data/oct2017-real/dev``): the same protocol on real OCT2017
scans, with the marks drawn into them (PNG, lossless) and the label-free finder the only retina
there is: the scans split by patient, about 50% train, 25% val (marks of the scan's own class at the
rate, as a real confound would be; the audit's split), 25% test (every scan twice, clean and with a
wrong class's mark: the manifest's split, paired).

It prints one Markdown row per model and retina source and whether the two agree: on synthetic scans
any flag counts; on real scans, which carry their own border and fill cues, only a flag of the
region holding the mark (the corners, or the border band for a mark at an edge). Finished runs and
audits are kept (delete ``RUN/audit/val*`` after changing the counterfactual tests), so a second
call only does what is missing (``--train-only`` stops after training).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from octlens.audit import AuditResult, audit_run
from octlens.audit.counterfactual import Interval, interval
from octlens.audit.shortcut import ACCURACY_GAP, FOLLOW_EXCESS
from octlens.data.index import scan
from octlens.data.marks import MANIFEST
from octlens.data.overlays import OVERLAY_KINDS, PLACES, draw_overlay
from octlens.data.splits import split_by_patient
from octlens.data.synth import CLASSES, plan_scans, read_record, synthesize
from octlens.data.synth.shortcut import choose_mark, mark_kind
from octlens.data.synth.writer import render_job, with_sizes
from octlens.demo import DEMO_MODELS, demo_config
from octlens.evaluate import evaluate_run
from octlens.files import read_json
from octlens.training import train

#: name -> (mark kind, rate); None for clean data.
DATASETS: dict[str, tuple[str, float] | None] = {
    "clean": None,
    **{f"{kind}-0.9": (kind, 0.9) for kind in OVERLAY_KINDS},
    "square-0.5": ("square", 0.5),
}
SEEDS = [0, 1]
#: Where the retina comes from in each audit: the generator's masks, or the label-free finder.
RETINA = {"masks": False, "finder": True}
#: How each test scan is written for the manifest's answer: the file name's suffix -> the mark.
VERSIONS = {"": None, "-truthful": "its own class", "-misleading": "a wrong class"}
#: The JPEG quality octlens.data.synth.writer saves scans at.
SYNTH_JPEG_QUALITY = 95


def dataset(out: Path, name: str, place: str, n_per_class: int) -> Path:
    mark = DATASETS[name]
    folder = out / "data" / (name if place == "top-left" or mark is None else f"{name}-{place}")
    if read_record(folder) is None:
        extra = (
            {}
            if mark is None
            else {"shortcut": mark[0], "shortcut_rate": mark[1], "shortcut_place": place}
        )
        synthesize(folder, n_per_class, seed=0, verbose=False, **extra)
    return folder


def real_dataset(out: Path, name: str, place: str, source: Path) -> Path:
    """``source``'s scans (one folder per class) split by patient into train/val/test, as PNG.

    Train and val scans are marked as :func:`octlens.data.synth.writer.plant_shortcut` marks
    synthetic ones (their own class at the rate). Every test scan is written in each of the
    :func:`versions` (paired: a few dozen real test scans are too few for independent groups).
    """
    mark = DATASETS[name]
    folder = out / "data" / (f"real-{name}" if mark is None else f"real-{name}-{place}")
    if (folder / MANIFEST).exists():
        return folder
    index = scan(source, verbose=False)
    samples = next(iter(index.splits.values()))
    # seeds chosen for the sizes they give the splits (67, 34, 38 of the 139 dev scans): whole
    # patients of up to 12 scans make a carve overshoot its share for other seeds
    rest, test = split_by_patient(samples, 0.25, seed=3)
    train, val = split_by_patient(rest, 1 / 3, seed=2)
    rows = ["file,mark,kind,place"]

    def write(relative: str, pixels: np.ndarray, code: int | None) -> None:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        if code is not None:
            pixels = pixels.copy()
            draw_overlay(pixels, mark_kind(mark[0]), code, place)  # type: ignore[index]
        Image.fromarray(pixels).save(folder / relative)
        marked = "" if code is None else f"{index.classes[code]},{mark[0]},{place}"  # type: ignore[index]
        rows.append(f"{relative},{marked}" if marked else f"{relative},,,")

    n_classes = len(index.classes)
    for split, chosen in (("train", train), ("val", val), ("test", test)):
        for position, sample in enumerate(chosen):
            pixels = np.array(index.load(sample))
            relative = f"{split}/{index.classes[sample.label]}/{sample.path.stem}"
            rng = np.random.default_rng([position, sample.label, len(split)])
            if split != "test":
                code = (
                    None
                    if mark is None
                    else choose_mark(rng, split, sample.label, n_classes, mark[1])
                )
                write(f"{relative}.png", pixels, code)
                continue
            for suffix, code in versions(sample.label, n_classes, rng, mark is not None):
                write(f"{relative}{suffix}.png", pixels, code)
    (folder / MANIFEST).write_text("\n".join(rows) + "\n")  # written last: the set is complete
    return folder


def versions(
    label: int, n_classes: int, rng: np.random.Generator, marked: bool = True
) -> list[tuple[str, int | None]]:
    """(file-name suffix, class of the mark or None) of each version of a test scan in
    :data:`VERSIONS`: clean, with its own class's mark, with a wrong class's (drawn by ``rng``);
    only the clean one for clean data."""
    wrong = int((label + rng.integers(1, n_classes)) % n_classes)
    codes = {"": None, "-truthful": label, "-misleading": wrong}
    return [(suffix, codes[suffix]) for suffix in VERSIONS if marked or codes[suffix] is None]


def synthetic_test_versions(out: Path, name: str, place: str, n_per_class: int) -> Path:
    """The test scans of the synthetic dataset ``name`` (seed 0), re-rendered by the generator
    and written in each of the :func:`versions`, the marks drawn before JPEG as the generator
    draws them: the same scans clean, with a truthful mark and with a misleading one."""
    kind = DATASETS[name][0]  # type: ignore[index]
    folder = out / "data" / f"{name}-{place}-test-versions"
    if (folder / MANIFEST).exists():
        return folder
    rows = ["file,mark,kind,place"]
    for job in with_sizes(plan_scans(n_per_class, seed=0), None):
        if job.split != "test":
            continue
        label = CLASSES.index(job.label)
        rng = np.random.default_rng([job.patient, job.scan, label, 3])
        rendered = render_job(job).image
        for suffix, code in versions(label, len(CLASSES), rng):
            pixels = rendered.copy()
            if code is not None:
                draw_overlay(pixels, mark_kind(kind), code, place)
            relative = f"test/{job.label}/{job.relative_path.stem}{suffix}.jpeg"
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / relative, quality=SYNTH_JPEG_QUALITY)
            rows.append(
                f"{relative},{CLASSES[code]},{kind},{place}"
                if code is not None
                else f"{relative},,,"
            )
    (folder / MANIFEST).write_text("\n".join(rows) + "\n")  # written last: the set is complete
    return folder


def finished(run: Path, recipe: str, epochs: int | None = None) -> bool:
    last = run / "last.json"
    wanted = epochs or DEMO_MODELS[recipe]["epochs"]
    return last.exists() and read_json(last)["epoch"] >= wanted


def trained(
    data: Path, runs: dict[str, Path], recipe: str, seed: int, epochs: int | None = None
) -> Path:
    """``runs[recipe]`` trained to the end (a distilled recipe's teacher is ``runs``' too), for
    the demo's epochs or ``epochs``."""
    run = runs[recipe]
    if not finished(run, recipe, epochs):
        config = demo_config(recipe, data, run, seed, runs)
        if epochs:
            config = config.model_copy(update={"epochs": epochs})
        train(config, resume=(run / "last.json").exists(), verbose=False)
    return run


def manifest_answer(run: Path, versions_folder: Path) -> dict:
    """The model's answers on the same test scans clean, with a truthful mark and with a
    misleading one (``versions_folder``'s test split, :func:`versions`).

    The model *reads the mark's class* when its accuracy with a truthful mark exceeds that with
    a misleading one by ``ACCURACY_GAP``, or it answers the misleading mark's class
    ``FOLLOW_EXCESS`` more often than its clean-scan errors would, each with the lower end of its
    95% bootstrap interval (pairs resampled) above zero. Clean against misleading, the audit's
    own planted-mark rule, also counts a model that any mark disturbs whatever its class.
    """
    with open(versions_folder / MANIFEST, newline="") as handle:
        marks = {row["file"]: row["mark"] for row in csv.DictReader(handle) if row["mark"]}
    misleading_files = [file for file in marks if Path(file).stem.endswith("-misleading")]
    predicted = _predictions(run, versions_folder)
    columns: dict[str, list[bool]] = {"clean": [], "truthful": [], "misleading": [], "follows": []}
    for file in misleading_files:
        label, answer = predicted[file]
        columns["clean"].append(predicted[file.replace("-misleading", "")][1] == label)
        columns["truthful"].append(predicted[file.replace("-misleading", "-truthful")][1] == label)
        columns["misleading"].append(answer == label)
        columns["follows"].append(answer == marks[file])
    clean, truthful, misleading, follows = (
        torch.tensor(v, dtype=torch.double) for v in columns.values()
    )
    return {
        "pairs": len(clean),
        "clean": clean.mean().item(),
        "truthful": truthful.mean().item(),
        "misleading": misleading.mean().item(),
        "follows": follows.mean().item(),
        "by_chance": (1 - clean.mean().item()) / 3,
        # the versions of a scan are resampled together (the audit's paired bootstrap)
        "gap": interval(clean - misleading),
        "class_effect": interval(truthful - misleading),
        "follow_excess": interval(follows - (1 - clean) / 3),
    }


def reads_the_mark(answer: dict | None) -> bool:
    """The manifest's answer (see :func:`manifest_answer`)."""
    if answer is None:
        return False
    effect, excess = answer["class_effect"], answer["follow_excess"]
    return (effect.mean >= ACCURACY_GAP and effect.low > 0) or (
        excess.mean >= FOLLOW_EXCESS and excess.low > 0
    )


def _predictions(run: Path, data: Path) -> dict[str, tuple[str, str]]:
    """``run``'s (label, prediction) on ``data``'s test split by file, evaluated into
    ``RUN/eval/<data's name>``."""
    out = run / "eval" / data.name
    evaluate_run(run, data, "test", out=out, verbose=False)
    with open(out / "predictions.csv", newline="") as handle:
        return {
            Path(row["path"]).relative_to(data).as_posix(): (row["label"], row["prediction"])
            for row in csv.DictReader(handle)
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/calibration"))
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument(
        "--scans-per-class",
        type=int,
        help="audit this many validation scans per class (default: all, as octlens audit does: "
        "on 16 per class a logo-reading ViT's corner effect was 2%% [-4, 6], on all 125 "
        "scans 6%% [2, 10])",
    )
    parser.add_argument(
        "--n-per-class", type=int, default=200, help="synthetic scans per class, all splits"
    )
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--place", choices=PLACES, default="top-left")
    parser.add_argument("--models", nargs="+", choices=list(DEMO_MODELS), default=list(DEMO_MODELS))
    parser.add_argument("--retina", nargs="+", choices=list(RETINA), default=list(RETINA))
    parser.add_argument(
        "--real", type=Path, help="mark these real scans (one folder per class) instead"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="train this long instead of the demo's epochs (a few dozen "
        "real scans make two steps an epoch)",
    )
    parser.add_argument(
        "--audit-only", action="store_true", help="skip runs that are not trained to the end"
    )
    args = parser.parse_args()
    print(
        "| data | model | seed | retina | val acc | test, same scans: clean | truthful mark | "
        "misleading mark | clean - misleading | truthful - misleading | follows mark (chance) | "
        "reads the mark's class (manifest) | counterfactual verdict (val, no manifest) | agree |"
    )
    print("| --- " * 14 + "|")
    for name in args.datasets:
        data = (
            dataset(args.out, name, args.place, args.n_per_class)
            if args.real is None
            else real_dataset(args.out, name, args.place, args.real)
        )
        test_versions = (
            data
            if args.real is not None or DATASETS[name] is None
            else synthetic_test_versions(args.out, name, args.place, args.n_per_class)
        )
        for recipe in args.models:
            for seed in args.seeds:
                runs = {model: args.out / f"{data.name}-{model}-s{seed}" for model in DEMO_MODELS}
                run = runs[recipe]
                if args.audit_only and not finished(run, recipe, args.epochs):
                    print(f"| {name} | {recipe} | {seed} | not trained |", flush=True)
                    continue
                trained(data, runs, recipe, seed, args.epochs)
                if args.train_only:
                    print(f"trained {run}", flush=True)
                    continue
                answer = None if DATASETS[name] is None else manifest_answer(run, test_versions)
                for source in args.retina if args.real is None else ["finder"]:
                    print(row(run, data, name, recipe, seed, source, answer, args), flush=True)


def row(
    run: Path,
    data: Path,
    name: str,
    recipe: str,
    seed: int,
    source: str,
    answer: dict | None,
    args: argparse.Namespace,
) -> str:
    """One Markdown row: the manifest's answer beside the counterfactual verdict."""
    folder = run / "audit" / ("val" if source == "masks" else "val-estimated")
    stored = folder / "audit.json"
    result = (
        AuditResult.load(stored)
        if stored.exists()
        else audit_run(
            run,
            data,
            "val",
            methods=["gradcam"],
            scans_per_class=args.scans_per_class,
            steps=10,
            sanity_scans=4,
            out=folder,
            estimate_retina=RETINA[source],
            verbose=False,
        )
    )
    flagged = result.counterfactual.flagged_regions()
    verdict = ("flagged: " + ", ".join(flagged)) if flagged else "not flagged"
    # Real scans carry their own border and fill cues, so there a model agrees with the manifest
    # when the region holding the mark is flagged exactly when it uses the mark; synthetic scans
    # have no other cue, so there any flag counts.
    region = "corners" if "-" in args.place else "border"
    caught = region in flagged if args.real is not None else bool(flagged)
    corner = result.counterfactual.swaps["corners"]
    if corner is not None:
        verdict += f" (corners {corner.flip_to_donor}, effect {corner.effect}"
        if corner.changed is not None:
            verdict += f"; any change {corner.changed.mean:.0%}, effect {corner.change_effect}"
        verdict += ")"
    uses = reads_the_mark(answer)

    def with_interval(value: Interval) -> str:
        return f"{value.mean:.2f} [{value.low:.2f}, {value.high:.2f}]"

    cells = (
        ["-"] * 6
        if answer is None
        else [
            f"{answer['clean']:.2f}",
            f"{answer['truthful']:.2f}",
            f"{answer['misleading']:.2f} (n={answer['pairs']})",
            with_interval(answer["gap"]),
            with_interval(answer["class_effect"]),
            f"{answer['follows']:.2f} ({answer['by_chance']:.2f})",
        ]
    )
    return (
        f"| {data.name} | {recipe} | {seed} | {source} | {result.accuracy.all:.2f} | "
        + " | ".join(cells)
        + f" | {'yes' if uses else 'no'} | {verdict} | "
        f"{'yes' if uses == caught else '**no**'} |"
    )


if __name__ == "__main__":
    main()
