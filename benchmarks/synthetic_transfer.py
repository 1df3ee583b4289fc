"""Does octlens's synthetic OCT teach a model anything about real OCT2017 scans?

    .venv/bin/python benchmarks/synthetic_transfer.py --out runs/transfer [--holdout]

Three recipes, all the demo's ResNet18 at 128 px, all resumable (finished runs are kept):

1. **synthetic only**: trained on synthetic data (``--n-per-class``, default 1000; the demo's
   data has 200), tested on every real ``dev`` scan. This is where the synthesis and its amount
   are chosen: only ``dev`` is looked at.
2. **synthetic, then fine-tuned on dev**: ``--init`` the synthetic run (full fine-tuning, layer
   decay 0.75), trained on ``dev`` with a patient-disjoint validation carve.
3. **dev from scratch**: the same recipe and carve with no initial weights.

Recipes 2 and 3 print their ``dev`` validation accuracy (to choose on); with ``--holdout`` they
are also tested on the 80 ``holdout`` scans, which must happen once per recipe, after every
choice is made. Accuracies come with 95% Wilson intervals; with 80 scans they are about +-10
points wide.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from octlens.data.synth import read_record, synthesize
from octlens.demo import DEMO_MODELS, IMG_SIZE
from octlens.evaluate import evaluate_run
from octlens.files import read_json
from octlens.training import TrainConfig, train

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "oct2017-real"
# Fine-tuning and scratch share everything but the start; chosen on the dev validation carve.
DEV_RECIPE: dict[str, Any] = {**DEMO_MODELS["resnet18"], "val_fraction": 0.2, "epochs": 20}


def wilson(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``correct / n``."""
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def trained(config: TrainConfig) -> Path:
    last = config.out / "last.json"
    if not last.exists() or read_json(last)["epoch"] < config.epochs:
        train(config, resume=last.exists(), verbose=False)
    return config.out


def row(name: str, run: Path, data: Path, split: str) -> str:
    metrics = evaluate_run(run, data, split)
    n, accuracy = metrics.n, metrics.accuracy
    low, high = wilson(accuracy * n, n)
    recall = " / ".join(f"{m.sensitivity:.2f}" for m in metrics.per_class.values())
    auc = "-" if metrics.macro_auc is None else f"{metrics.macro_auc:.3f}"
    return f"| {name} | {split} ({n}) | {accuracy:.3f} [{low:.2f}, {high:.2f}] | {auc} | {recall} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/transfer"))
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--holdout", action="store_true", help="also test on holdout (once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="a synthetic dataset (default: OUT/data)")
    parser.add_argument(
        "--n-per-class", type=int, default=1000, help="synthetic scans per class to make"
    )
    parser.add_argument(
        "--synthetic-only", action="store_true", help="only recipe 1 (to tune the synthesis)"
    )
    args = parser.parse_args()
    data = args.data or args.out / "data"
    if read_record(data) is None:
        synthesize(data, args.n_per_class, seed=args.seed)
    synthetic = trained(
        TrainConfig(
            data=data,
            out=args.out / "synthetic",
            img_size=IMG_SIZE,
            seed=args.seed,
            **DEMO_MODELS["resnet18"],
        )
    )
    if args.synthetic_only:
        print(row("synthetic only", synthetic, args.real, "dev"))
        return
    dev_runs = {}
    for name, init in (("fine-tuned", synthetic), ("scratch", None)):
        dev_runs[name] = trained(
            TrainConfig(
                data=args.real,
                out=args.out / name,
                train_split="dev",
                img_size=IMG_SIZE,
                seed=args.seed,
                init=init,
                **DEV_RECIPE,
            )
        )
    print(
        "| recipe | tested on | accuracy [95% CI] | macro AUC | sensitivity CNV/DME/DRUSEN/NORMAL |"
    )
    print("| --- | --- | --- | --- | --- |")
    print(row("synthetic only", synthetic, args.real, "dev"))
    for name, run in dev_runs.items():
        best = read_json(run / "best.json")["metrics"]
        print(f"| {name} on dev | dev validation carve | {best['val_acc']:.3f} | | |")
    if args.holdout:
        for name, run in dev_runs.items():
            print(row(f"{name} on dev", run, args.real, "holdout"))


if __name__ == "__main__":
    main()
