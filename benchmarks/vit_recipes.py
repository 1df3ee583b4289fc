"""Which ViT recipe learns the demo's synthetic data in the demo's CPU budget?

    .venv/bin/python benchmarks/vit_recipes.py --out runs/vit-recipes [--parallel 4]
    .venv/bin/python benchmarks/vit_recipes.py --cost          # CPU images/s of each recipe

Trains each recipe of :data:`RECIPES` on the demo's data (synthesized here: the demo's size and
seed) and prints its best and last *validation* accuracy (the test split is never looked at: the
demo reports it). Recipes that distil first train the demo's ResNet18 as the teacher. Runs are
independent processes (``--parallel``), so a GPU machine can try them all at once; they are
pinned to fp32, the precision the demo runs in on a CPU without bf16.

``--cost`` measures what each recipe would cost in the demo instead: training images per second
of the bare step on this machine's CPU (the teacher's forward pass included), and the seconds
its epochs would take on the demo's training split.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from octlens.data.synth import read_record, synthesize
from octlens.models import create_model
from octlens.training import TrainConfig, train

IMG_SIZE = 128
TEACHER = "resnet18"
_RESNET = {"model": "resnet18", "batch_size": 16, "lr": 1e-3, "warmup_epochs": 0.5}
_VIT = {"model": "vit_tiny", "patch_size": 16, "lr": 1e-3, "warmup_epochs": 2}
_KD = {"teacher": TEACHER, "distill_weight": 0.5, "distill_temperature": 2.0}


_GAP = {"class_token": False, "global_pool": "avg"}  # average the patch tokens, no CLS token


def _vit(
    depth: int, epochs: int, gap: bool = False, conv: bool = False, **more: Any
) -> dict[str, Any]:
    kwargs = {"depth": depth, **(_GAP if gap else {}), **({"stem": "conv"} if conv else {})}
    return {**_VIT, "model_kwargs": kwargs, "epochs": epochs, **more}


RECIPES: dict[str, dict[str, Any]] = {
    TEACHER: {**_RESNET, "epochs": 14},
    "vit-d12-e6": {**_VIT, "epochs": 6, "lr": 5e-4},  # the demo's recipe before issue 11
    "vit-d4-e30": _vit(4, 30),
    "vit-d6-e20-gap": _vit(6, 20, gap=True),
    "vit-d6-e20-kd": _vit(6, 20, **_KD),
    "vit-d6-e20-gap-bs8": _vit(6, 20, gap=True, batch_size=8, lr=5e-4),
    "vit-d6-e20-gap-bs8-kd": _vit(6, 20, gap=True, batch_size=8, lr=5e-4, **_KD),
    "vit-d6-e20-gap-bs16-kd": _vit(6, 20, gap=True, batch_size=16, lr=1e-3, **_KD),
    "vit-p8-d4-e20-gap-bs16-kd": _vit(4, 20, gap=True, patch_size=8, batch_size=16, **_KD),
    "vitc-d6-e12": _vit(6, 12, conv=True),
    "vitc-d6-e16": _vit(6, 16, conv=True),
    "vitc-d6-e12-kd": _vit(6, 12, conv=True, **_KD),  # the demo's recipe
}


def run_recipe(
    name: str,
    data: Path,
    out: Path,
    seed: int,
    workers: int | None,
    teacher: Path | None,
    verbose: bool = False,
) -> dict:
    settings = dict(RECIPES[name])
    if "teacher" in settings:
        settings["teacher"] = teacher or out / f"{TEACHER}-s{seed}"
    run_dir = out / f"{name}-s{seed}"
    config = TrainConfig(
        data=data,
        out=run_dir,
        img_size=IMG_SIZE,
        seed=seed,
        precision="fp32",
        num_workers=workers,
        **settings,
    )
    started = time.perf_counter()
    result = train(config, resume=(run_dir / "last.safetensors").exists(), verbose=verbose)
    accuracies = [row["val_acc"] for row in result.history]
    return {
        "recipe": name,
        "seed": seed,
        "best_val_loss_epoch": result.best_epoch,
        "val_acc_at_best_loss": result.best["val_acc"],
        "max_val_acc": max(accuracies),
        "last_val_acc": accuracies[-1],
        "seconds": round(time.perf_counter() - started, 1),
    }


def cpu_cost(names: list[str], train_images: int, batch: int = 32) -> None:
    """Bare-step images/s on the CPU and the demo seconds of each recipe."""
    torch.manual_seed(0)
    images = torch.randn(batch, 1, IMG_SIZE, IMG_SIZE)
    labels = torch.randint(0, 4, (batch,))
    teacher = create_model(TEACHER, 4, img_size=IMG_SIZE).eval()
    print(f"{'recipe':<22}{'img/s':>8}{'epoch s':>9}{'train s':>9}")
    for name in names:
        settings = RECIPES[name]
        model = create_model(
            settings["model"],
            4,
            img_size=IMG_SIZE,
            patch_size=settings.get("patch_size"),
            **settings.get("model_kwargs", {}),
        ).train()
        rate = _step_rate(model, teacher if "teacher" in settings else None, images, labels)
        epoch = train_images / rate
        print(f"{name:<22}{rate:>8.1f}{epoch:>9.1f}{epoch * settings['epochs']:>9.0f}", flush=True)


def _results(jobs: list[tuple], parallel: int) -> Iterator[dict]:
    """Each job's result row, in order: in this process with its epochs printed (``parallel``
    1), else from that many spawned processes."""
    if parallel == 1:
        for job in jobs:
            yield run_recipe(*job, verbose=True)
        return
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(run_recipe, *job) for job in jobs]:
            yield future.result()


def _step_rate(
    model: torch.nn.Module,
    teacher: torch.nn.Module | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 4,
) -> float:
    """Training images/s of ``model`` (with the teacher's forward pass when distilling)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        if teacher is not None:
            with torch.no_grad():
                teacher(images)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/vit-recipes"))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-per-class", type=int, default=200)
    parser.add_argument(
        "--data", type=Path, help="the demo's data, made already (default: OUT/data)"
    )
    parser.add_argument("--teacher", type=Path, help="a trained teacher run (default: train one)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--workers", type=int, default=None, help="data workers per run")
    parser.add_argument("--cost", action="store_true", help="CPU cost of each recipe instead")
    args = parser.parse_args()
    data = args.data or args.out / "data"
    if args.cost:
        record = read_record(data) if data.exists() else None
        train_images = sum(
            count for key, count in (record or {}).get("scans", {}).items() if key[:5] == "train"
        )
        cpu_cost(args.recipes, train_images or 549)
        return
    if not data.exists():
        synthesize(data, args.n_per_class, seed=0)
    students = [name for name in args.recipes if "teacher" in RECIPES[name]]
    first = [name for name in args.recipes if name not in students]
    if students and TEACHER not in first and args.teacher is None:
        first.insert(0, TEACHER)
    results = []
    for names in (first, students):
        jobs = [
            (name, data, args.out, seed, args.workers, args.teacher)
            for seed in args.seeds
            for name in names
        ]
        for row in _results(jobs, args.parallel):
            results.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'recipe':<22}{'seed':>5}{'val acc (best loss)':>21}{'max':>7}{'last':>7}{'s':>7}")
    for row in sorted(results, key=lambda row: (row["recipe"], row["seed"])):
        print(
            f"{row['recipe']:<22}{row['seed']:>5}{row['val_acc_at_best_loss']:>21.3f}"
            f"{row['max_val_acc']:>7.3f}{row['last_val_acc']:>7.3f}{row['seconds']:>7.0f}"
        )


if __name__ == "__main__":
    main()
