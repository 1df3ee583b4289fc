"""Throughput of every audit metric, beside the forward pass that bounds the costly ones.

    .venv/bin/python benchmarks/audit_metrics.py [--models resnet18 vit_tiny] [--scans 100]

On ``--scans`` random scans at 128 px (the demo's models and size, random weights: speed does not
depend on what a model learned), it times one line per metric in images/s:

- ``forward``: the plain no-grad forward pass at the batch size the metrics use (the baseline);
- ``deletion+insertion``: both curves with ``--steps`` steps, i.e. ``2 * (steps + 1)`` forward
  passes per scan, so the best possible rate is ``forward / (2 * (steps + 1))``; the ratio column
  says how close the batched implementation comes to that bound;
- ``average drop``: two forward passes per scan (bound ``forward / 2``);
- ``pointing+energy+AUROC``: the localization metrics on ready maps;
- ``sanity (gradcam)``: the cascading randomization, per scan;
- ``region swap``: one region's counterfactual swap with both controls, ``3 * DONORS + 1``
  forward passes per scan (bound ``forward / (3 * DONORS + 1)``); the audit runs four regions;
- ``background/retina only``: three forward passes per scan (bound ``forward / 3``);
- ``retina finder``: :func:`octlens.data.retina.find_retina` on 496 x 512 synthetic scans.

CNNs run channels-last, as the audit runs them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from octlens.audit.counterfactual import choose_donors, region_only, region_swap
from octlens.audit.evidence import DONORS
from octlens.audit.faithfulness import average_drop_increase, deletion_insertion, random_maps
from octlens.audit.localization import energy_in_mask, pixel_auroc, pointing_game
from octlens.audit.sanity import cascading_randomization
from octlens.data.regions import edge_regions
from octlens.data.retina import find_retina
from octlens.data.synth import plan_scans, render_job
from octlens.explain import GradCAM
from octlens.models import create_model, is_vit
from octlens.runtime import resolve_precision


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_model(name: str, scans: int, steps: int, batch_size: int, device: torch.device) -> None:
    torch.manual_seed(0)
    model = create_model(name, 4, img_size=128, patch_size=16 if "vit" in name else None)
    model = model.to(device).eval()
    if not is_vit(model):
        model.to(memory_format=torch.channels_last)
    images = torch.randn(scans, 1, 128, 128, device=device)
    maps = random_maps((scans, 128, 128), seed=1).to(device)
    targets = torch.zeros(scans, dtype=torch.long, device=device)

    plan = resolve_precision("auto", device, measuring=True)  # as the metrics do

    def forward():
        with torch.inference_mode(), plan.autocast():
            for chunk in images.split(batch_size):
                model(chunk)

    forward()  # warm-up
    forward_rate = scans / timed(forward)
    lines = [("forward", forward_rate, 1.0)]
    seconds = timed(
        lambda: deletion_insertion(model, images, maps, targets, steps, batch_size=batch_size)
    )
    bound = forward_rate / (2 * (steps + 1))
    lines.append((f"deletion+insertion ({steps} steps)", scans / seconds, scans / seconds / bound))
    seconds = timed(
        lambda: average_drop_increase(model, images, maps, targets, batch_size=batch_size)
    )
    lines.append(("average drop", scans / seconds, scans / seconds / (forward_rate / 2)))
    masks = maps > 0.8
    seconds = timed(
        lambda: (pointing_game(maps, masks), energy_in_mask(maps, masks), pixel_auroc(maps, masks))
    )
    lines.append(("pointing+energy+AUROC", scans / seconds, None))
    few = images[:8]
    seconds = timed(lambda: cascading_randomization(model, GradCAM, few))
    lines.append(("sanity (gradcam)", len(few) / seconds, None))
    lines += bench_counterfactual(model, plan, images, batch_size, forward_rate)
    print(f"\n{name} @128 on {device} ({plan.name}), {scans} scans, batch {batch_size}")
    print(f"{'metric':32s} {'images/s':>10s} {'vs bound':>9s}  (seconds for {scans} scans)")
    for label, rate, ratio in lines:
        versus = f"{ratio:9.2f}" if ratio is not None else " " * 9
        print(f"{label:32s} {rate:10.1f} {versus}  ({scans / rate:.1f} s)")


def bench_counterfactual(model, plan, images, batch_size, forward_rate) -> list:
    """One region swap (``3 * DONORS`` forward passes per scan: swap, random place, same class)
    and region-only (3 forward passes per scan), each against its forward-pass bound."""

    def predict(batch):
        with torch.inference_mode(), plan.autocast():
            logits = [model(chunk) for chunk in batch.split(batch_size)]
        return torch.cat(logits).float().softmax(dim=1)

    n, size = len(images), images.shape[-1]
    generator = torch.Generator().manual_seed(0)
    retina = torch.zeros(n, size, size, dtype=torch.bool, device=images.device)
    retina[:, size // 3 : 2 * size // 3] = True
    predicted = torch.randint(4, (n,), generator=generator).to(images.device)
    other = choose_donors(predicted, DONORS, same_class=False)
    same = choose_donors(predicted, DONORS, same_class=True)
    corners = edge_regions(size, size)["corners"].to(images.device).expand_as(retina)
    seconds = timed(lambda: region_swap(predict, images, corners, retina, other, same))
    swap_bound = forward_rate / (3 * DONORS + 1)
    lines = [(f"region swap ({DONORS} donors)", n / seconds, n / seconds / swap_bound)]
    labels = predicted
    seconds = timed(lambda: region_only(predict, images, labels, retina, torch.zeros_like(retina)))
    lines.append(("background/retina only", n / seconds, n / seconds / (forward_rate / 3)))
    return lines


def bench_retina(count: int = 20) -> None:
    scans = [render_job(job).image for job in plan_scans(count, seed=3)[:count]]
    seconds = timed(lambda: [find_retina(image) for image in scans])
    print(f"\nretina finder: {count / seconds:.1f} scans/s at 496 x 512 ({seconds:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vit_tiny"])
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_grad_enabled(True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}")
    for name in args.models:
        bench_model(name, args.scans, args.steps, args.batch_size, device)
    bench_retina()


if __name__ == "__main__":
    main()
