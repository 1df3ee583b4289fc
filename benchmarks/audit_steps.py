"""How many deletion/insertion steps does the audit need? AUCs and the method ranking at 50, 20
and 10 steps, on the same maps and scans.

    .venv/bin/python benchmarks/audit_steps.py --run runs/demo/resnet18 --data runs/demo/data \\
        --split test [--methods gradcam,gradcam++,hirescam,layercam] [--steps 50 20 10]

Each method explains every scan once; the same maps (and the audit's random maps) then go through
deletion and insertion at each step count, in fp32. Printed per step count and method: the mean
deletion and insertion AUCs, insertion minus deletion (what the best method is chosen by), the
largest change of a method's mean from the first step count's, the mean change per scan, and the
ranking by insertion minus deletion; with the seconds each step count took.
"""

from __future__ import annotations

import argparse
import time

import torch

from octlens.audit.faithfulness import random_maps
from octlens.audit.pipeline import prepare_audit
from octlens.explain import build_explainer, check_methods, default_methods
from octlens.runtime import resolve_device, resolve_precision
from octlens.training.run import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--methods", default=None, help="comma-separated (default: the audit's)")
    parser.add_argument("--steps", nargs="+", type=int, default=[50, 20, 10])
    args = parser.parse_args()

    plan = resolve_precision("fp32", resolve_device(None), measuring=True)
    run = Run.load(args.run)
    audit = prepare_audit(run, args.data, args.split, None, args.steps[0], 64, plan, False)
    model = audit.model
    names = check_methods(args.methods.split(",")) if args.methods else default_methods(model)
    maps = {
        name: torch.cat(
            [
                build_explainer(name, model, plan)(chunk, targets).raw
                for chunk, targets in zip(
                    audit.images.split(64), audit.predictions.split(64), strict=True
                )
            ]
        )
        for name in names
    }
    n, height, width = audit.batch.retina.shape
    maps["random maps"] = random_maps((n, height, width))
    print(f"{run.name} on {args.data} ({args.split}, {n} scans)")
    reference: dict[str, torch.Tensor] = {}
    for steps in args.steps:
        audit.steps = steps
        started = time.perf_counter()
        gaps = {}
        print(f"\n{steps} steps")
        print(
            f"{'method':<16}{'deletion':>10}{'insertion':>11}{'ins - del':>11}"
            f"{'change':>9}{'per scan':>10}"
        )
        for name, method_maps in maps.items():
            curves = audit.perturbation(method_maps)
            gap = curves.insertion_auc - curves.deletion_auc
            reference.setdefault(name, gap)
            gaps[name] = gap.mean().item()
            change = gaps[name] - reference[name].mean().item()
            per_scan = (gap - reference[name]).abs().mean().item()
            print(
                f"{name:<16}{curves.deletion_auc.mean():>10.3f}{curves.insertion_auc.mean():>11.3f}"
                f"{gaps[name]:>11.3f}{change:>+9.3f}{per_scan:>10.3f}"
            )
        ranking = sorted((m for m in gaps if m != "random maps"), key=gaps.get, reverse=True)
        print(f"ranking: {' > '.join(ranking)}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
