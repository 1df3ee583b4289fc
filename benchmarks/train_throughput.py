"""Training throughput: the real loop from image files vs the bare model step, same process.

    .venv/bin/python benchmarks/train_throughput.py [--n-per-class 100] [--workers auto 1 2]
        [--models resnet18@128 vit_tiny@128 resnet50@224 vit_small@224] [--epochs 4]

For each model it times (1) the bare step: forward, backward and AdamW update on one in-memory
batch, in the precision and memory layout octlens picks, and (2) the real loop: a training epoch
of ``octlens.training.train`` reading, decoding, resizing and augmenting JPEG scans through the
DataLoader (the median of epochs 2 to ``--epochs``, so start-up is not counted). Bare steps are
timed the same way: the median of three rounds. The ratio loop / bare is the share of compute
speed that the data pipeline keeps; the goal is >= 0.9.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from timm.optim import param_groups_weight_decay

from octlens.data.synth import synthesize
from octlens.models import create_model, is_vit
from octlens.runtime import resolve_device, resolve_precision
from octlens.training import TrainConfig, train

MODELS = {
    "resnet18@128": {"model": "resnet18", "img_size": 128},
    "vit_tiny@128": {"model": "vit_tiny", "img_size": 128, "patch_size": 16},
    "resnet50@224": {"model": "resnet50", "img_size": 224},
    "vit_small@224": {"model": "vit_small", "img_size": 224, "patch_size": 16},
}


def bare_step_rate(settings: dict, batch_size: int, steps: int = 8) -> tuple[float, str]:
    """Images/s of the model step alone on one fixed in-memory batch."""
    plan = resolve_precision("auto", resolve_device(None))
    model = create_model(
        settings["model"], 4, img_size=settings["img_size"], patch_size=settings.get("patch_size")
    )
    channels_last = not is_vit(model)
    model.to(
        plan.device, memory_format=torch.channels_last if channels_last else torch.preserve_format
    ).train()
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, 0.05), lr=1e-3)
    size = settings["img_size"]
    images = torch.randn(batch_size, 1, size, size, device=plan.device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 4, (batch_size,), device=plan.device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        with plan.autocast():
            logits = model(images)
        loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * batch_size / (time.perf_counter() - started))
    return statistics.median(rates), plan.name


def loop_rate(
    data: Path, out: Path, settings: dict, batch_size: int, workers: int | None, epochs: int
) -> float:
    config = TrainConfig(
        data=data,
        out=out,
        epochs=epochs,
        batch_size=batch_size,
        num_workers=workers,
        warmup_epochs=0,
        **settings,
    )
    history = train(config, verbose=False).history
    return statistics.median(row["images_per_s"] for row in history[1:])


def _workers(text: str) -> int | None:
    return None if text == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=_workers,
        nargs="+",
        default=[None],
        help="data-loading processes; auto (the default) is what octlens picks",
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs 2 to this one are timed")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=["resnet18@128", "vit_tiny@128"],
        help="the 224 px models take about 10 minutes each on 2 cores",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesize(data, args.n_per_class, seed=0)
        print(
            f"{'model':<14}{'precision':>10}{'workers':>9}{'bare img/s':>12}"
            f"{'loop img/s':>12}{'loop/bare':>11}"
        )
        for name in args.models:
            settings = MODELS[name]
            bare, precision = bare_step_rate(settings, args.batch_size)
            for workers in args.workers:
                out = Path(tmp) / f"{name}-{workers}"
                loop = loop_rate(data, out, settings, args.batch_size, workers, args.epochs)
                shown = "auto" if workers is None else workers
                print(
                    f"{name:<14}{precision:>10}{shown:>9}{bare:>12.1f}{loop:>12.1f}"
                    f"{loop / bare:>11.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
