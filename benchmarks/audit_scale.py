"""The audit at test-set scale: time against the number of scans, forward passes per scan, and the
ratio to the bare time of the same passes, in one process.

    .venv/bin/python benchmarks/audit_scale.py --run runs/demo/resnet18 --scans 100 300 1000 \\
        [--data runs/audit-scale] [--faithfulness-scans 200] [--steps 50] [--precision fp32]

The scans come from the synthetic generator at OCT2017's sizes (written once under ``--data``,
enough per class for the largest count's test split); each count audits the first scans of
each class with the audit's default four methods and every counterfactual test. A hook on the
model counts the images it sees, with and without gradients (the sanity check's randomized
copies are not counted: they are other modules). The bare time is those counts at the rates the
same model reaches in this process on batches of the audit's size: a forward pass without
gradients, and a forward and backward pass to the input for the explained ones. What the audit
spends beyond it is its own work: decoding, retina finding, perturbing, statistics, figures.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from octlens.audit import audit_run
from octlens.data.synth import synthesize
from octlens.data.synth.writer import plan_scans
from octlens.runtime import resolve_device, resolve_precision
from octlens.training.run import Run

BATCH = 64


def _per_class_for(test_scans: int) -> int:
    """Scans per class to synthesize so the test split holds ``test_scans`` of each class."""
    n = test_scans
    while sum(job.split == "test" for job in plan_scans(n, 0)) < 4 * test_scans:
        n = math.ceil(n * 1.25)
    return n


def _rates(model: torch.nn.Module, size: int, plan) -> tuple[float, float]:
    """Images/s of a bare forward pass, and of a forward and backward pass to the input."""
    images = torch.randn(BATCH, 1, size, size, device=plan.device)

    def timed(step, repeats: int = 3) -> float:
        step()
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        return repeats * BATCH / (time.perf_counter() - started)

    def forward() -> None:
        with torch.inference_mode(), plan.autocast():
            model(images)

    def backward() -> None:
        with plan.autocast():
            inputs = images.clone().requires_grad_()
            model(inputs).max(dim=1).values.sum().backward()

    return timed(forward), timed(backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--scans", nargs="+", type=int, default=[100, 300, 1000])
    parser.add_argument("--data", type=Path, default=None, help="where the scans are written")
    parser.add_argument("--faithfulness-scans", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    data = args.data or Path(tempfile.mkdtemp(prefix="audit-scale-"))
    per_class = math.ceil(max(args.scans) / 4)
    if not (data / "test").is_dir():
        synthesize(data, _per_class_for(per_class), seed=0)
    run = Run.load(args.run)
    plan = resolve_precision(args.precision, resolve_device(None), measuring=True)
    model = run.model(plan)
    bare_forward, bare_backward = _rates(model, run.img_size, plan)
    print(
        f"{run.name} at {run.img_size} px, {args.precision}; bare rates on batches of {BATCH}: "
        f"forward {bare_forward:.0f} img/s, forward and backward {bare_backward:.0f} img/s"
    )
    print(
        f"{'scans':>6}{'seconds':>9}{'passes/scan':>13}{'with grad':>11}{'bare s':>8}"
        f"{'x bare':>8}{'min per 1,000':>15}"
    )
    seen = {"no_grad": 0, "grad": 0}

    def count(module: torch.nn.Module, inputs: tuple) -> None:
        """Images into a whole classifier (a timm model has ``forward_head``; its parts not)."""
        if hasattr(module, "forward_head"):
            seen["grad" if torch.is_grad_enabled() else "no_grad"] += len(inputs[0])

    for n in args.scans:
        seen.update(no_grad=0, grad=0)
        handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
        started = time.perf_counter()
        try:
            audit_run(
                args.run,
                data,
                "test",
                scans_per_class=math.ceil(n / 4),
                steps=args.steps,
                faithfulness_scans=args.faithfulness_scans or None,
                batch_size=BATCH,
                precision=args.precision,
                out=Path(tempfile.mkdtemp(prefix="audit-")),
                verbose=False,
            )
        finally:
            handle.remove()
        seconds = time.perf_counter() - started
        bare = seen["no_grad"] / bare_forward + seen["grad"] / bare_backward
        passes = (seen["no_grad"] + seen["grad"]) / n
        print(
            f"{n:>6}{seconds:>9.0f}{passes:>13.0f}{seen['grad'] / n:>11.1f}{bare:>8.0f}"
            f"{seconds / bare:>8.2f}{seconds / n * 1000 / 60:>15.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
