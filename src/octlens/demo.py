"""The demo: everything octlens does, on built-in synthetic data, in minutes on a laptop CPU.

It synthesizes a small OCT dataset, scans it for confounds, trains a ResNet18 and then a ViT-tiny
(convolutional stem, distilled from that ResNet) from scratch at 128 px, evaluates both on the
test split, audits them (counterfactual region swaps, faithfulness, localization, sanity,
off-retina attention), puts everything in an HTML report, and returns the numbers for
side-by-side tables. A demo that was interrupted continues where it stopped (its runs resume from
their ``last`` checkpoints).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from octlens.audit import AuditResult, audit_run
from octlens.data import confound_scan
from octlens.data.synth import GENERATOR, RECORD, read_record, synthesize
from octlens.errors import Interrupted, OctlensError
from octlens.evaluate import EvaluationResult, evaluate_run
from octlens.report import write_report
from octlens.training import TrainConfig, TrainResult, train

IMG_SIZE = 128
CONFOUNDS = "confounds"
# The audit's share of the demo's time: 8 test scans per class (`octlens audit` takes every
# scan) at the audit's 20 deletion/insertion steps, and two methods per model (`octlens audit`
# takes all four): on a ResNet, Grad-CAM (HiResCAM is the same map on its pooled linear head) and
# Grad-CAM++; on a ViT, attention rollout and LeGrad.
AUDIT: dict[str, Any] = {"scans_per_class": 8, "sanity_scans": 8}
AUDIT_METHODS = {"resnet18": ["gradcam", "gradcam++"], "vit_tiny": ["rollout", "legrad"]}

# Chosen on the synthetic validation split (benchmarks/vit_recipes.py; README, Benchmarks). The
# ResNet learns fastest with small batches (more steps in the same time). A plain ViT-tiny stays
# near chance in the demo's budget whatever its depth, pooling, batch or distillation; with a
# convolutional stem (Xiao et al., 2021), 6 blocks and the demo's ResNet as its teacher (DeiT's
# idea, in Hinton's logit form) it learns in a few epochs. "teacher" names the demo's own run.
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "resnet18": {
        "model": "resnet18",
        "epochs": 14,
        "batch_size": 16,
        "lr": 1e-3,
        "warmup_epochs": 0.5,
    },
    "vit_tiny": {
        "model": "vit_tiny",
        "patch_size": 16,
        "model_kwargs": {"depth": 6, "stem": "conv"},
        "epochs": 12,
        "lr": 1e-3,
        "warmup_epochs": 2,
        "teacher": "resnet18",
        "distill_weight": 0.5,
        "distill_temperature": 2.0,
    },
}


def run_demo(
    out: str | Path, n_per_class: int = 200, seed: int = 0, verbose: bool = True
) -> dict[str, tuple[EvaluationResult, TrainResult, AuditResult]]:
    """Run the demo under ``out``; return ``{model: (test metrics, training result, audit)}``.

    Also writes ``out/confounds/`` (the confound scan of the data) and ``out/report.html``: the
    confound scan, both models side by side, explanations of one test scan per class and the
    audit.
    """
    out = Path(out)
    data = out / "data"
    try:
        _synthesized(data, n_per_class, seed, verbose)
        confound_scan(data, out / CONFOUNDS, verbose=verbose)
        results = {}
        for name in DEMO_MODELS:
            run_dir = out / name
            config = demo_config(
                name, data, run_dir, seed, {model: out / model for model in DEMO_MODELS}
            )
            result = train(config, resume=(run_dir / "last.safetensors").exists(), verbose=verbose)
            metrics = evaluate_run(run_dir, data, "test", verbose=verbose)
            methods = AUDIT_METHODS[name]
            audit = audit_run(run_dir, data, "test", methods=methods, verbose=verbose, **AUDIT)
            results[name] = (metrics, result, audit)
        runs = [out / name for name in DEMO_MODELS]
        write_report(runs, out / "report.html", data=data, confounds=out / CONFOUNDS)
    except (KeyboardInterrupt, Interrupted):
        raise Interrupted(
            f"{out}: demo interrupted; run it again with the same --out to continue where it "
            "stopped (finished epochs are kept)"
        ) from None
    return results


def demo_config(
    model: str, data: Path, out: Path, seed: int, runs: Mapping[str, Path]
) -> TrainConfig:
    """The demo's training config of ``model`` (a :data:`DEMO_MODELS` key), its teacher taken from
    ``runs`` (model name -> run folder, trained before it)."""
    settings = dict(DEMO_MODELS[model])
    if "teacher" in settings:
        settings["teacher"] = runs[settings["teacher"]]
    return TrainConfig(data=data, out=out, img_size=IMG_SIZE, seed=seed, **settings)


def _synthesized(data: Path, n_per_class: int, seed: int, verbose: bool = True) -> None:
    """Make the demo's data, or check that the data already there was made with these settings
    (a demo rerun with other settings must not train on the old data)."""
    if not data.exists():
        synthesize(data, n_per_class, seed=seed, verbose=verbose)
        return
    record = read_record(data)
    if record is None:
        raise OctlensError(
            f"{data}: not a complete synthetic dataset (no {RECORD}); remove it or choose "
            "another --out"
        )
    wanted = {"n_per_class": n_per_class, "seed": seed, "shortcut": None, "generator": GENERATOR}
    made = {key: record.get(key) for key in wanted}
    if made != wanted:
        raise OctlensError(
            f"{data}: made with {made}, not {wanted}; choose another --out for other settings"
        )
