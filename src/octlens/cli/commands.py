"""The CLI commands, each a thin wrapper over one API call."""

from __future__ import annotations

import json
import typing
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from inspect import Parameter, Signature
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from octlens.cli.defaults import AUDIT, EVALUATE, EXPLAIN, REPORT
from octlens.errors import OctlensError

if typing.TYPE_CHECKING:
    from octlens.training import TrainConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="octlens: is my retinal OCT classifier looking at the retina?",
)
# Names come from the user's files: print them as they are, never as rich markup.
console = Console(markup=False, highlight=False)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="folder to write the dataset to")],
    n_per_class: Annotated[int, typer.Option(help="scans per class, all splits together")] = 200,
    seed: int = 0,
    size: Annotated[
        str,
        typer.Option(
            help="HEIGHTxWIDTH of each scan, or 'oct2017': OCT2017's sizes (496x512, 496x768, "
            "496x1536, 512x512) drawn per patient, whatever the class"
        ),
    ] = "oct2017",
    workers: Annotated[int | None, typer.Option(help="processes (default: one per core)")] = None,
    shortcut: Annotated[
        str | None,
        typer.Option(
            help="plant a class-coded burned-in mark: square (gray level codes the class), "
            "text, stripes, checkerboard, logo, scalebar or arrow (shape codes it); "
            "'corner' is the square"
        ),
    ] = None,
    shortcut_rate: Annotated[
        float, typer.Option(help="share of train/val scans that carry the shortcut")
    ] = 0.9,
    shortcut_place: Annotated[
        str,
        typer.Option(
            help="where the mark sits: top-left, top-right, bottom-left, bottom-right, or the "
            "middle of an edge: left, right, top, bottom"
        ),
    ] = "top-left",
) -> None:
    """Write a synthetic OCT dataset (OCT2017 layout, 70/15/15 by patient) with lesion masks."""
    from octlens.data.synth import read_record, synthesize

    counts = synthesize(
        out,
        n_per_class,
        seed=seed,
        size=None if size.lower() == "oct2017" else parse_size(size),
        workers=workers,
        shortcut=shortcut,
        shortcut_rate=shortcut_rate,
        shortcut_place=shortcut_place,
    )
    console.print(f"wrote {sum(counts.values())} scans to {out} (masks/ and retina/ beside them)")
    if shortcut:
        marked = (read_record(out) or {}).get("marked", {})
        sizes = Counter(split for split, _ in counts.elements())
        console.print(
            f"planted a {shortcut} mark at {shortcut_place}: "
            + ", ".join(f"{marked.get(split, 0)} of {n} {split}" for split, n in sizes.items())
            + " scans marked (each scan drawn at random: its class at the rate in train/val, "
            "a wrong class with probability 0.5 in test); listed in shortcut.csv"
        )


@app.command()
def inspect(
    data: Annotated[Path, typer.Argument(help="dataset folder or MedMNIST .npz")],
    hashes: Annotated[
        bool, typer.Option(help="also find byte-identical files across splits")
    ] = False,
    confounds: Annotated[
        bool,
        typer.Option(help="test whether non-anatomy (size, file, corners, ...) predicts labels"),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="folder for confounds.json and confounds.png")
    ] = None,
    split: Annotated[
        list[str] | None, typer.Option(help="splits the confound scan pools (default: all)")
    ] = None,
    permutations: Annotated[int, typer.Option(help="label shuffles of the confound scan")] = 999,
    # the help of TrainConfig's fields of these names (octlens.data is not imported here: it
    # loads torch, and the CLI starts without it)
    patients: Annotated[
        Path | None, typer.Option(help="CSV with columns file,patient: which scans share a patient")
    ] = None,
    patient_pattern: Annotated[
        str | None, typer.Option(help="regex whose group is the patient id in each scan's path")
    ] = None,
    strict: bool = False,
) -> None:
    """Count images per split and class, report patients or files shared between splits, and
    (--confounds) scan the data for labels predictable from things that are not anatomy."""
    from octlens.data.index import scan
    from octlens.data.patients import PatientSource
    from octlens.data.splits import find_leakage, has_patients
    from octlens.report.terminal import split_table

    if confounds and out is None:
        raise OctlensError("--confounds needs --out DIR for confounds.json and its figure")
    source = PatientSource(patients, patient_pattern)
    index = scan(data, strict=strict, patients=source)
    console.print(split_table(index))
    leaks = find_leakage(index, hashes=hashes)
    for leak in leaks:
        files = f": {', '.join(leak.files)}" if leak.files else ""
        console.print(f"leak: {leak.kind} {leak.key} in {', '.join(leak.splits)}{files}")
    console.print(_leakage_summary(len(leaks), has_patients(index), hashes))
    if confounds and out is not None:
        from octlens.data import confound_scan
        from octlens.report.terminal import confounds_table, contingency_table

        report = confound_scan(data, out, split, permutations=permutations, patients=source)
        wide = Console(width=max(console.width, 120), markup=False, highlight=False)
        wide.print(confounds_table(report))
        for variable in report.contingency:
            wide.print(contingency_table(report, variable))
        flagged = ", ".join(report.flagged) or "none"
        console.print(f"confounds flagged: {flagged} -> {out / 'confounds.json'}")


def _leakage_summary(leaks: int, patients: bool, hashes: bool) -> str:
    """The last line of the leakage check; without patient ids it claims no more than it saw."""
    if leaks:
        return f"{leaks} leak(s) between splits"
    if patients:
        return "no leakage between splits"
    if hashes:
        return "no identical files between splits; patients not checked (no patient ids)"
    return "leakage not checked: no scan has a patient id (--hashes finds identical files)"


def _train(config: Path | None = None, resume: bool = False, **options: object) -> None:
    """Train a classifier; RUN gets best/last checkpoints, history.csv and learning curves.

    Each option is a TrainConfig field (its default and help live there); --config reads a
    JSON file of settings, and options given here override it. Under torchrun
    (``torchrun --nproc_per_node=N -m octlens train ...``) the N processes train one run with
    DistributedDataParallel, --batch-size being the global batch.
    """
    from octlens.training import train as train_run

    settings = _settings(config)
    for option, value in options.items():
        if value is not None and value != []:
            settings[_TRAIN_FIELDS.get(option, option)] = value
    if "model_kwargs" in settings and isinstance(settings["model_kwargs"], list):
        settings["model_kwargs"] = parse_kwargs(settings["model_kwargs"])
    train_config = _train_config(settings)
    result = train_run(train_config, resume=resume)
    if not result.main_process:  # rank 0 of a torchrun job reports
        return
    best = result.best
    console.print(
        f"best epoch {result.best_epoch}: val loss {best['val_loss']:.4f}, "
        f"val accuracy {best['val_acc']:.3f} -> {train_config.out / 'best.safetensors'}"
    )


def _train_config(settings: dict[str, object]) -> TrainConfig:
    """``settings`` as a TrainConfig; the first invalid one is a one-line error naming it."""
    from pydantic import ValidationError

    from octlens.training import TrainConfig

    try:
        return TrainConfig.model_validate(settings)
    except ValidationError as error:
        first = error.errors()[0]
        if not first["loc"]:  # a rule across options, which names them itself
            raise OctlensError(str(first["ctx"]["error"])) from None
        field = str(first["loc"][0])
        option = _TRAIN_OPTIONS.get(field, field).replace("_", "-")
        raise OctlensError(f"--{option}: {first['msg']}") from None


def _settings(config: Path | None) -> dict[str, object]:
    """The JSON object of settings in ``config`` (none: empty)."""
    from octlens.files import read_json

    settings = read_json(config) if config is not None else {}
    if not isinstance(settings, dict):
        raise OctlensError(f"{config}: --config must hold a JSON object of settings")
    return settings


# TrainConfig fields whose option has another name, and back.
_TRAIN_OPTIONS = {"num_workers": "workers", "model_kwargs": "model_arg"}
_TRAIN_FIELDS = {option: field for field, option in _TRAIN_OPTIONS.items()}


def option(argument: str) -> str:
    """The option that sets a library function's ``argument``: ``--batch-size`` for
    ``batch_size`` (options are the arguments' names, but for the few renamed above)."""
    return "--" + _TRAIN_OPTIONS.get(argument, argument).replace("_", "-")


def _train_signature() -> Signature:
    """``train``'s options, one per TrainConfig field: its type, its help and its default come
    from the config, so a default lives in one place."""
    from octlens.training.config import TrainConfig

    keyword = Parameter.KEYWORD_ONLY
    parameters = [
        Parameter(
            "config",
            keyword,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(help="JSON file of settings (a run's config); options override it"),
            ],
        )
    ]
    for name, field in TrainConfig.model_fields.items():
        kind = _option_type(name, field.annotation)
        value = None if field.is_required() else field.get_default(call_default_factory=True)
        default = " (required)" if field.is_required() else f" (default: {value})" if value else ""
        parameters.append(
            Parameter(
                _TRAIN_OPTIONS.get(name, name),
                keyword,
                default=None,
                annotation=Annotated[
                    kind | None, typer.Option(help=f"{field.description} ({default})")
                ],
            )
        )
    parameters.append(
        Parameter(
            "resume",
            keyword,
            default=False,
            annotation=Annotated[bool, typer.Option(help="continue the run in --out from 'last'")],
        )
    )
    return Signature(parameters)


def _option_type(name: str, annotation: object) -> type:
    """The command-line type of a config field: X for ``X | None``, str for choices (the config
    checks them), a list of KEY=VALUE for the model's keyword arguments."""
    if name == "model_kwargs":
        return list[str]
    if typing.get_origin(annotation) is typing.Literal:
        return str
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if args:
        return args[0]
    return annotation  # type: ignore[return-value]


_train.__signature__ = _train_signature()  # type: ignore[attr-defined]
app.command(name="train")(_train)


def _existing_run(run: Path) -> Path:
    """Refuse a missing run before the command imports torch (seconds on a small machine)."""
    if not run.exists():
        raise OctlensError(f"{run}: no such run folder or checkpoint")
    return run


@app.command()
def evaluate(
    run: Annotated[
        Path, typer.Argument(help="run folder or checkpoint file", callback=_existing_run)
    ],
    data: Annotated[Path, typer.Option(help="dataset folder or MedMNIST .npz")],
    split: str = EVALUATE["split"],
    out: Annotated[Path | None, typer.Option(help="default: RUN/eval/<split>")] = EVALUATE["out"],
    batch_size: int = EVALUATE["batch_size"],
    precision: str = EVALUATE["precision"],
    device: str | None = EVALUATE["device"],
) -> None:
    """Evaluate a run: metrics.json, predictions.csv and figures."""
    from octlens.evaluate import evaluate_run
    from octlens.report.terminal import metrics_table

    metrics = evaluate_run(
        run, data, split, batch_size=batch_size, precision=precision, device=device, out=out
    )
    console.print(metrics_table(metrics))


@app.command()
def explain(
    run: Annotated[
        Path, typer.Argument(help="run folder or checkpoint file", callback=_existing_run)
    ],
    images: Annotated[list[Path], typer.Argument(help="scans to explain (files; globs work)")],
    out: Annotated[Path, typer.Option(help="folder for overlays, .npy maps and grid.png")],
    methods: Annotated[
        str,
        typer.Option(
            help="comma-separated: gradcam,gradcam++,hirescam,layercam,"
            "rollout,legrad,reciprocam,occlusion,lrp,lrp-gamma,attnlrp,cp-lrp"
        ),
    ] = "gradcam",
    precision: str = EXPLAIN["precision"],
    device: str | None = EXPLAIN["device"],
    batch_size: Annotated[
        int, typer.Option(help="scans decoded, explained and written at a time (bounds memory)")
    ] = EXPLAIN["batch_size"],
    grid_per_class: Annotated[
        int, typer.Option(help="scans of each predicted class shown in grid.png")
    ] = EXPLAIN["grid_per_class"],
    strict: Annotated[bool, typer.Option(help="unreadable images are errors")] = EXPLAIN["strict"],
    layer: Annotated[
        str | None,
        typer.Option(help="the layer the CAMs explain, by name (layer3); default: the last stage"),
    ] = EXPLAIN["layer"],
) -> None:
    """Explain a run's predictions on scans: an overlay and a raw map per scan and method."""
    from octlens.explain.runner import explain_images

    names = parse_methods(methods)
    result = explain_images(
        run,
        images,
        names,
        out,
        strict=strict,
        precision=precision,
        device=device,
        batch_size=batch_size,
        grid_per_class=grid_per_class,
        layer=layer,
    )
    console.print(
        f"explained {len(result.scans)} scan(s) with {', '.join(result.methods)} -> {out} "
        f"(grid.png, explanations.csv)",
        soft_wrap=True,
    )


@app.command()
def audit(
    run: Annotated[
        Path, typer.Argument(help="run folder or checkpoint file", callback=_existing_run)
    ],
    data: Annotated[Path, typer.Option(help="dataset folder (retina/ and masks/ used if present)")],
    split: str = AUDIT["split"],
    methods: Annotated[
        str | None, typer.Option(help="comma-separated (default: four suited to the model)")
    ] = AUDIT["methods"],
    scans_per_class: Annotated[
        int | None, typer.Option(help="audit the first N scans of each class (default: all)")
    ] = AUDIT["scans_per_class"],
    steps: Annotated[int, typer.Option(help="deletion/insertion steps")] = AUDIT["steps"],
    faithfulness_scans: Annotated[
        int,
        typer.Option(
            help="scans deletion, insertion and average drop are measured on, drawn in "
            "proportion to the predicted classes (0: every scan)"
        ),
    ] = AUDIT["faithfulness_scans"],
    sanity_scans: Annotated[int, typer.Option(help="scans in the randomization check")] = AUDIT[
        "sanity_scans"
    ],
    out: Annotated[Path | None, typer.Option(help="default: RUN/audit/<split>")] = AUDIT["out"],
    estimate_retina: Annotated[
        bool,
        typer.Option(
            help="find the retina with the label-free finder even where the data has retina/ "
            "masks (as on data without them)"
        ),
    ] = AUDIT["estimate_retina"],
    batch_size: int = AUDIT["batch_size"],
    precision: str = AUDIT["precision"],
    device: str | None = AUDIT["device"],
    layer: Annotated[
        str | None,
        typer.Option(help="the layer the CAMs explain, by name (layer3); default: the last stage"),
    ] = AUDIT["layer"],
) -> None:
    """Audit a run's explanations: faithfulness, localization, sanity, off-retina attention."""
    from octlens.audit import audit_run
    from octlens.report.terminal import audit_table, counterfactual_table

    result = audit_run(
        run,
        data,
        split,
        methods=None if methods is None else parse_methods(methods),
        scans_per_class=scans_per_class,
        steps=steps,
        faithfulness_scans=faithfulness_scans or None,
        sanity_scans=sanity_scans,
        batch_size=batch_size,
        precision=precision,
        device=device,
        out=out,
        estimate_retina=estimate_retina,
        layer=layer,
    )
    wide = Console(width=max(console.width, 140), markup=False, highlight=False)
    wide.print(audit_table(result))
    wide.print(counterfactual_table(result))
    for line in result.verdict_lines():
        console.print(line)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="run folders, shown side by side")],
    out: Annotated[Path, typer.Option(help="the HTML file to write")] = Path("report.html"),
    data: Annotated[
        Path | None,
        typer.Option(help="dataset to evaluate and explain on (default: the runs' own data)"),
    ] = None,
    split: str = REPORT["split"],
    scans_per_class: int = REPORT["scans_per_class"],
    confounds: Annotated[
        Path | None, typer.Option(help="folder of an 'octlens inspect --confounds' scan to show")
    ] = None,
    tune: Annotated[Path | None, typer.Option(help="folder of an 'octlens tune' study")] = None,
) -> None:
    """One self-contained HTML report: metrics, curves and explanations of each run."""
    from octlens.report import training_data, write_report

    if data is None:
        data = training_data(runs)
        if data is not None:
            console.print(f"report: no --data given; using the runs' own data {data} ({split})")
        else:
            console.print("report: no --data given; showing stored results without explanations")
    path = write_report(
        runs,
        out,
        data=data,
        split=split,
        scans_per_class=scans_per_class,
        confounds=confounds,
        tune=tune,
    )
    console.print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the data and both runs")] = Path(
        "runs/demo"
    ),
    n_per_class: int = 200,
    seed: int = 0,
) -> None:
    """Synthesize data, train a ResNet18 and a ViT-tiny at 128 px, evaluate, and compare."""
    from octlens.data.confounds import ConfoundReport
    from octlens.data.dataset_scan import REPORT
    from octlens.demo import CONFOUNDS, run_demo
    from octlens.report.terminal import (
        audit_table,
        confounds_table,
        counterfactual_table,
        demo_table,
    )

    results = run_demo(out, n_per_class=n_per_class, seed=seed)
    wide = Console(width=max(console.width, 140), markup=False, highlight=False)
    wide.print(confounds_table(ConfoundReport.load(out / CONFOUNDS / REPORT)))
    wide.print(demo_table(results))
    for _, _, audit in results.values():
        wide.print(audit_table(audit))
        wide.print(counterfactual_table(audit))
        for line in audit.verdict_lines():
            console.print(line)
    console.print(
        f"runs, metrics, audits and figures under {out}; report: {out / 'report.html'}",
        soft_wrap=True,  # paths stay whole, to copy
    )
    runs = " ".join(str(out / name) for name in results)
    console.print(f"drop your own scans on both models: octlens serve {runs}", soft_wrap=True)


@app.command()
def tune(
    data: Annotated[Path, typer.Option(help="dataset folder (its val split, or one carved)")],
    out: Annotated[Path, typer.Option(help="study folder: trial-NNN runs, journal, results")],
    trials: Annotated[int, typer.Option(help="trials in the study, all workers together")] = 20,
    storage: Annotated[
        str | None,
        typer.Option(help="database URL for workers on many machines (default: OUT's journal)"),
    ] = None,
    pruner: Annotated[str, typer.Option(help="median or hyperband")] = "median",
    models: Annotated[
        str | None, typer.Option(help="comma-separated models to choose among (default: --model)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="JSON of the settings not searched (a run's config)")
    ] = None,
    model: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per trial (default 10)")] = None,
    seed: int | None = None,
    precision: str | None = None,
    device: str | None = None,
    workers: int | None = None,
) -> None:
    """Search learning rate, weight decay, batch size, smoothing, augmentation and warm-up."""
    with needs_extra("tune", "tune"):
        from octlens.training.tune import described
        from octlens.training.tune import tune as tune_study

    settings = _settings(config)
    given = {
        "data": data, "model": model, "img_size": img_size, "patch_size": patch_size,
        "epochs": epochs, "seed": seed, "precision": precision, "device": device,
        "num_workers": workers,
    }  # fmt: skip
    settings.update({key: value for key, value in given.items() if value is not None})
    settings["out"] = out / "best"
    base = _train_config(settings)
    names = [] if models is None else parse_methods(models)
    study = tune_study(base, out, trials, storage, pruner, names)
    best = study.best_trial
    console.print(
        f"best of {len(study.trials)} trial(s): #{best.number}, val loss {best.value:.4f}, "
        f"{described(best.params)}; train it: octlens train --config {out / 'best_config.json'}",
        soft_wrap=True,
    )


@app.command()
def serve(
    runs: Annotated[list[Path], typer.Argument(help="run folders to serve side by side")],
    host: Annotated[str, typer.Option(help="interface (127.0.0.1: this machine only)")] = (
        "127.0.0.1"
    ),
    port: int = 8000,
    methods: Annotated[
        str | None, typer.Option(help="comma-separated (default: four suited to each model)")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="largest file accepted")] = 20.0,
    max_files: Annotated[int, typer.Option(help="most files in one request")] = 16,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(help="another name the page is opened by (the loopback names and --host are)"),
    ] = None,
    device: str | None = None,
    precision: str = "auto",
    layer: Annotated[
        str | None,
        typer.Option(help="the layer the CAMs explain, by name (layer3); default: the last stage"),
    ] = None,
) -> None:
    """A local web app: drop a scan, see each run's answer and explanations side by side."""
    with needs_extra("app", "serve"):  # uvicorn is imported when the server starts
        from octlens.app import Limits
        from octlens.app import serve as serve_app

        names = None if methods is None else parse_methods(methods)
        limits = Limits(max_upload_mb, max_files)
        serve_app(
            runs, host, port, names, limits, device, precision,
            announce=console.print, allow_hosts=allow_host or (), layer=layer,
        )  # fmt: skip


#: The optional parts of octlens (``pip install 'octlens[EXTRA]'``) and the packages they bring.
EXTRAS = {
    "app": ("fastapi", "starlette", "uvicorn", "multipart", "python_multipart"),
    "tune": ("optuna",),
}


@contextmanager
def needs_extra(extra: str, command: str) -> Iterator[None]:
    """A package of ``extra`` missing is one line naming the extra to install, not an
    ImportError from deep inside; any other missing module is a bug and stays one."""
    try:
        yield
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in EXTRAS[extra]:
            raise
        raise OctlensError(
            f"octlens {command} needs the '{extra}' extra ({error.name} is not installed): "
            f"pip install 'octlens[{extra}]'"
        ) from None


def parse_methods(text: str) -> list[str]:
    """``"gradcam, legrad"`` -> ``["gradcam", "legrad"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_size(text: str) -> tuple[int, int]:
    """``"496x512"`` -> ``(496, 512)`` (height x width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise OctlensError(f"--size '{text}': expected HEIGHTxWIDTH, e.g. 496x512") from None
    return height, width


def parse_kwargs(pairs: list[str]) -> dict[str, object]:
    """``["depth=4", "embed_dim=96"]`` -> ``{"depth": 4, "embed_dim": 96}``; values as JSON."""
    parsed: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OctlensError(f"--model-arg '{pair}': expected KEY=VALUE, e.g. depth=6")
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value
    return parsed
