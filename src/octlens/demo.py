"""The demo: everything octlens does, on built-in synthetic data, in minutes on a laptop CPU.

It synthesizes a small OCT dataset, scans it for confounds, trains a ResNet18 and a ViT-tiny from
scratch at 128 px, evaluates both on the test split, audits them (counterfactual region swaps,
faithfulness, localization, sanity, off-retina attention), puts everything in an HTML report, and
returns the numbers for side-by-side tables. A demo that
was interrupted continues where it stopped (its runs resume from their ``last`` checkpoints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from octlens.audit import AuditResult, audit_run, confound_scan
from octlens.data.synth import GENERATOR, RECORD, read_record, synthesize
from octlens.errors import Interrupted, OctlensError
from octlens.evaluate import evaluate_run
from octlens.report import write_report
from octlens.training import TrainConfig, TrainResult, train

IMG_SIZE = 128
CONFOUNDS = "confounds"
# The audit's share of the demo's time: 8 test scans per class, 20 deletion/insertion steps
# (each step is one forward pass per scan; `octlens audit` defaults to every scan and 50 steps).
AUDIT: dict[str, Any] = {"scans_per_class": 8, "steps": 20, "sanity_scans": 8}

# Chosen on the synthetic validation split. The ResNet learns fastest with small batches (more
# steps in the same time). The ViT gets the usual ViT recipe (lower peak rate, longer warm-up);
# with no convolutional prior it learns little from 550 scans in this budget, which the demo
# shows rather than hides.
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
        "epochs": 6,
        "lr": 5e-4,
        "warmup_epochs": 2,
    },
}


def run_demo(
    out: str | Path, n_per_class: int = 200, seed: int = 0, verbose: bool = True
) -> dict[str, tuple[dict[str, Any], TrainResult, AuditResult]]:
    """Run the demo under ``out``; return ``{model: (test metrics, training result, audit)}``.

    Also writes ``out/confounds/`` (the confound scan of the data) and ``out/report.html``: the
    confound scan, both models side by side, explanations of one test scan per class and the
    audit.
    """
    out = Path(out)
    data = out / "data"
    try:
        _synthesized(data, n_per_class, seed)
        confound_scan(data, out / CONFOUNDS)
        results = {}
        for name, settings in DEMO_MODELS.items():
            run_dir = out / name
            config = TrainConfig(data=data, out=run_dir, img_size=IMG_SIZE, seed=seed, **settings)
            result = train(config, resume=(run_dir / "last.safetensors").exists(), verbose=verbose)
            metrics = evaluate_run(run_dir, data, "test")
            results[name] = (metrics, result, audit_run(run_dir, data, "test", **AUDIT))
        runs = [out / name for name in DEMO_MODELS]
        write_report(runs, out / "report.html", data=data, confounds=out / CONFOUNDS)
    except (KeyboardInterrupt, Interrupted):
        raise Interrupted(
            f"{out}: demo interrupted; run it again with the same --out to continue where it "
            "stopped (finished epochs are kept)"
        ) from None
    return results


def _synthesized(data: Path, n_per_class: int, seed: int) -> None:
    """Make the demo's data, or check that the data already there was made with these settings
    (a demo rerun with other settings must not train on the old data)."""
    if not data.exists():
        synthesize(data, n_per_class, seed=seed)
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
