"""Explainer throughput and peak memory beside the model's forward pass and pytorch-grad-cam.

    .venv/bin/python benchmarks/explain_throughput.py [--models resnet18@128 vit_tiny@128 ...]

Every (model, method) runs in a fresh process, so its peak memory is its own: the high-water mark
of the process's resident memory while explaining, minus the mark after the model and batch were
made (on CUDA, ``torch.cuda.max_memory_allocated``). Throughput is images/s over ``--repeats``
batches after one warm-up batch. Ratios are against the plain forward pass (``forward``, no grad)
and against one forward and backward pass to the input (``backward``, the gradient of the top
logit: the bound a gradient method works against, and the one LRP and AttnLRP are held to) in
the same table; ``pgc-gradcam`` is pytorch-grad-cam's GradCAM on the same model and batch.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch

MODELS = {
    "resnet50@224": {"name": "resnet50", "img_size": 224},
    "vit_small@224": {"name": "vit_small", "img_size": 224, "patch_size": 16},
    "resnet18@128": {"name": "resnet18", "img_size": 128},
    "vit_tiny@128": {"name": "vit_tiny", "img_size": 128, "patch_size": 16},
}
CNN_METHODS = ["gradcam", "gradcam++", "hirescam", "layercam", "occlusion", "lrp", "lrp-gamma"]
VIT_METHODS = [*CNN_METHODS[:4], "rollout", "legrad", "reciprocam", "attnlrp", "cp-lrp"]


def _peak_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure(model_key: str, method: str, batch_size: int, repeats: int) -> dict:
    """One measurement, meant to run alone in its process."""
    from octlens.explain import EXPLAINERS
    from octlens.models import create_model

    spec = MODELS[model_key]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = (
        create_model(spec["name"], 4, img_size=spec["img_size"], patch_size=spec.get("patch_size"))
        .to(device)
        .eval()
    )
    images = torch.randn(batch_size, 1, spec["img_size"], spec["img_size"], device=device)
    if method == "forward":

        def run():
            with torch.no_grad():
                model(images)
    elif method == "backward":

        def run():
            inputs = images.detach().requires_grad_()
            torch.autograd.grad(model(inputs).max(dim=1).values.sum(), inputs)
    elif method == "pgc-gradcam":
        from pytorch_grad_cam import GradCAM

        layer = model.blocks[-1].norm1 if hasattr(model, "blocks") else model.layer4
        grid = spec["img_size"] // 16

        def reshape(tokens):
            return tokens[:, 1:].reshape(len(tokens), grid, grid, -1).permute(0, 3, 1, 2)

        cam = GradCAM(
            model, [layer], reshape_transform=reshape if hasattr(model, "blocks") else None
        )

        def run():
            cam(images, targets=None)
    else:
        explainer = EXPLAINERS[method](model)

        def run():
            explainer(images)

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = _peak_mb()
    run()
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"images_per_s": repeats * batch_size / seconds, "peak_mb": _peak_mb() - baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], help="methods, or pgc-gradcam, to skip")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.batch_size, args.repeats)))
        return
    print(
        f"{'model':<15}{'method':<13}{'img/s':>8}{'x forward':>11}{'x backward':>11}"
        f"{'peak MB':>9}{'x forward':>11}"
    )
    for model_key in args.models:
        methods = VIT_METHODS if "vit" in model_key else CNN_METHODS
        baseline = backward = None
        chosen = [m for m in ["pgc-gradcam", *methods] if m not in args.skip]
        for method in ["forward", "backward", *chosen]:
            command = [
                sys.executable,
                __file__,
                "--one",
                model_key,
                method,
                "--batch-size",
                str(args.batch_size),
                "--repeats",
                str(args.repeats),
            ]
            result = json.loads(
                subprocess.run(command, capture_output=True, text=True, check=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            baseline = baseline or result
            if method == "backward":
                backward = result
            speed = result["images_per_s"] / baseline["images_per_s"]
            cost = backward["images_per_s"] / result["images_per_s"] if backward else math.nan
            memory = result["peak_mb"] / max(baseline["peak_mb"], 1e-9)
            print(
                f"{model_key:<15}{method:<13}{result['images_per_s']:>8.1f}{speed:>11.2f}"
                f"{cost:>11.2f}{result['peak_mb']:>9.0f}{memory:>11.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
