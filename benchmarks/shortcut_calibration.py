"""Calibrate the label-free shortcut verdict against planted marks, where the answer is known.

    .venv/bin/python benchmarks/shortcut_calibration.py --out runs/calibration [--seeds 0 1]

Trains the demo's two recipes (ResNet18, then the ViT-tiny distilled from the ResNet18 of the
same data and seed; 128 px) with two seeds each on clean
synthetic data and on data with a planted corner mark at rates 0.5 and 0.9, then per model:

- **the manifest's answer**: on the test split, whose marks code a *wrong* class, accuracy on
  clean and on misleading-mark scans (``shortcut.csv``) and how often the answer is the mark's
  class; the model uses the mark when the audit's manifest rule says so (the accuracy gap is at
  least ``ACCURACY_GAP``, or it follows the mark ``FOLLOW_EXCESS`` more often than its clean-scan
  errors would, ``(1 - clean) / 3``);
- **the counterfactual verdict**, which never reads the manifest: ``octlens audit`` on the
  validation split, whose marks code the scan's own class as a real confound would (on the test
  split a same-class donor carries a misleading mark as often as any other, so the same-class
  control would contain the shortcut itself).

It prints one Markdown row per model and whether the two agree. Finished runs and audits are
kept (delete ``RUN/audit/val`` after changing the counterfactual tests), so a second call only
does what is missing (``--train-only`` stops after
training).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from octlens.audit import AuditResult, audit_run
from octlens.audit.shortcut import ACCURACY_GAP, FOLLOW_EXCESS
from octlens.data.marks import MANIFEST
from octlens.data.synth import read_record, synthesize
from octlens.demo import DEMO_MODELS, demo_config
from octlens.evaluate import evaluate_run
from octlens.files import read_json
from octlens.training import train

DATASETS = {"mark-0.9": 0.9, "mark-0.5": 0.5, "clean": None}
SEEDS = [0, 1]


def dataset(out: Path, name: str, rate: float | None) -> Path:
    folder = out / "data" / name
    if read_record(folder) is None:
        extra = {} if rate is None else {"shortcut": "corner", "shortcut_rate": rate}
        synthesize(folder, 200, seed=0, **extra)
    return folder


def finished(run: Path, recipe: str) -> bool:
    last = run / "last.json"
    return last.exists() and read_json(last)["epoch"] >= DEMO_MODELS[recipe]["epochs"]


def trained(data: Path, runs: dict[str, Path], recipe: str, seed: int) -> Path:
    """``runs[recipe]`` trained to the end (a distilled recipe's teacher is ``runs``' too)."""
    run = runs[recipe]
    if not finished(run, recipe):
        config = demo_config(recipe, data, run, seed, runs)
        train(config, resume=(run / "last.json").exists(), verbose=False)
    return run


def manifest_answer(run: Path, data: Path) -> dict[str, float] | None:
    """Accuracy on clean and misleading-mark test scans, and how often the mark is followed."""
    if not (data / MANIFEST).exists():
        return None
    evaluate_run(run, data, "test")
    with open(data / MANIFEST, newline="") as handle:
        marks = {row["file"]: row["mark"] for row in csv.DictReader(handle)}
    with open(run / "eval" / "test" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    clean, marked, follows = [], [], []
    for row in rows:
        mark = marks.get(Path(row["path"]).relative_to(data).as_posix())
        correct = row["label"] == row["prediction"]
        (marked if mark else clean).append(correct)
        if mark:
            follows.append(row["prediction"] == mark)
    clean_accuracy, marked_accuracy = _mean(clean), _mean(marked)
    return {
        "clean": clean_accuracy,
        "marked": marked_accuracy,
        "follows": _mean(follows),
        "by_chance": (1 - clean_accuracy) / 3,
        "gap": clean_accuracy - marked_accuracy,
    }


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/calibration"))
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--scans-per-class", type=int, default=16)
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument(
        "--audit-only", action="store_true", help="skip runs that are not trained to the end"
    )
    args = parser.parse_args()
    print(
        "| data | model | seed | val acc | test: clean | misleading mark | follows mark (chance) | "
        "uses the mark (manifest) | counterfactual verdict (val, no manifest) | agree |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.datasets:
        data = dataset(args.out, name, DATASETS[name])
        for recipe in DEMO_MODELS:
            for seed in args.seeds:
                runs = {model: args.out / f"{name}-{model}-s{seed}" for model in DEMO_MODELS}
                run = runs[recipe]
                if args.audit_only and not finished(run, recipe):
                    print(f"| {name} | {recipe} | {seed} | not trained |", flush=True)
                    continue
                trained(data, runs, recipe, seed)
                if args.train_only:
                    print(f"trained {run}", flush=True)
                    continue
                answer = manifest_answer(run, data)
                stored = run / "audit" / "val" / "audit.json"
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
                    )
                )
                flagged = result.counterfactual.flagged_regions()
                verdict = ("flagged: " + ", ".join(flagged)) if flagged else "not flagged"
                swaps = result.counterfactual.swaps
                corner = swaps["corners"]
                if corner is not None:
                    verdict += f" (corners {corner.flip_to_donor}, effect {corner.effect})"
                uses = answer is not None and (
                    answer["gap"] >= ACCURACY_GAP
                    or answer["follows"] - answer["by_chance"] >= FOLLOW_EXCESS
                )
                cells = (
                    ["-", "-", "-"]
                    if answer is None
                    else [
                        f"{answer['clean']:.2f}",
                        f"{answer['marked']:.2f}",
                        f"{answer['follows']:.2f} ({answer['by_chance']:.2f})",
                    ]
                )
                print(
                    f"| {name} | {recipe} | {seed} | {result.accuracy.all:.2f} | "
                    + " | ".join(cells)
                    + f" | {'yes' if uses else 'no'} | {verdict} | "
                    f"{'yes' if uses == bool(flagged) else '**no**'} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
