"""The trade of a CAM's layer: resolution against class specificity, and localization.

    .venv/bin/python benchmarks/cam_layers.py --run runs/demo/resnet18 --data runs/demo/data \\
        --split test [--methods gradcam,layercam] [--layers layer2 layer3 layer4]

For each CAM at each layer (and the fused LayerCAM): the map's grid at the model's input size;
**class specificity** as the mean Spearman correlation between the maps of the predicted class
and of the runner-up class on the same scan (1: the map is the same whatever class is asked for;
lower is more class-specific; below 0 the two classes' evidence lies in different places); and,
where the data has lesion masks, the within-retina AUROC and pointing game of the predicted
class's maps on the scans predicted as their class, beside the thick-retina prior's. Every
number is a mean over scans.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from octlens.audit.batch import load_audit_batch
from octlens.audit.lesions import localization_scores
from octlens.audit.priors import thickest_retina_prior
from octlens.audit.sanity import spearman_correlation
from octlens.audit.scores import Score
from octlens.explain import Explainer, build_explainer, check_methods
from octlens.explain.cam import layer_gradients
from octlens.explain.layers import resolve_layer
from octlens.runtime import resolve_device, resolve_precision
from octlens.training.run import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--methods", default="gradcam,layercam")
    parser.add_argument("--layers", nargs="+", default=["layer2", "layer3", "layer4"])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    run = Run.load(args.run)
    plan = resolve_precision("fp32", resolve_device(None), measuring=True)
    index = run.data(args.data, verbose=False)
    batch = load_audit_batch(
        index, run.samples(index, args.split), run.img_size, run.checkpoint.normalization
    )
    model = run.model(plan)
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in batch.images.split(args.batch_size)])
    first, second = logits.topk(2, dim=1).indices.unbind(dim=1)
    labels = torch.tensor([sample.label for sample in batch.samples])
    judged = first == labels
    if batch.annotated is not None:
        judged &= batch.annotated & batch.lesions.flatten(1).any(dim=1)  # type: ignore[union-attr]
    print(f"{run.name} on {args.split}: {len(labels)} scans, {int(judged.sum())} judged on lesions")
    print(
        "| method | layer | grid | top vs runner-up class (Spearman) | within-retina AUROC "
        "| pointing |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    if batch.lesions is not None:
        prior_maps = thickest_retina_prior(batch.retina)
        prior = localization_scores(prior_maps, batch.lesions, batch.retina)
        print(f"| *thick-retina prior* | | | | {_mean(prior, judged)} |")
    names = check_methods(args.methods.split(","))
    specs = [(name, layer) for name in names for layer in args.layers]
    for name, layer in [*specs, ("layercam-fused", None)]:
        explainer = build_explainer(name, model, plan, layer)
        top, runner_up = (
            _maps(explainer, batch.images, targets, args.batch_size) for targets in (first, second)
        )
        specificity = spearman_correlation(top, runner_up).nanmean().item()
        grid = "fused"
        if layer is not None:
            (captured,), _ = layer_gradients(
                model, [resolve_layer(model, layer)], batch.images[:1], None
            )
            grid = "x".join(str(size) for size in captured[0].shape[-2:])
        located = (
            _mean(localization_scores(top, batch.lesions, batch.retina), judged)
            if batch.lesions is not None
            else "- | -"
        )
        print(f"| {name} | {layer or 'layer2-4'} | {grid} | {specificity:+.3f} | {located} |")


def _maps(
    explainer: Explainer, images: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> torch.Tensor:
    return torch.cat(
        [
            explainer(chunk, chunk_targets).raw
            for chunk, chunk_targets in zip(
                images.split(batch_size), targets.split(batch_size), strict=True
            )
        ]
    )


def _mean(scores: dict[str, torch.Tensor], judged: torch.Tensor) -> str:
    return " | ".join(
        f"{scores[score][judged].nanmean().item():.3f}"
        for score in (Score.WITHIN_RETINA_AUROC, Score.POINTING_GAME)
    )


if __name__ == "__main__":
    main()
