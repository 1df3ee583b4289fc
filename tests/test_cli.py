from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import OCTLENS, run_cli, run_cli_in_process, tiny_config


@pytest.mark.slow
def test_synth_inspect_train_evaluate(tmp_path):
    data = tmp_path / "data"
    result = run_cli("synth", str(data), "--n-per-class", "6", "--size", "62x64", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 24 scans" in result.stdout
    assert (data / "masks" / "train").is_dir() and (data / "retina" / "test").is_dir()

    result = run_cli("inspect", str(data), "--hashes")
    assert result.returncode == 0, result.stderr
    assert "no leakage between splits" in result.stdout

    run = tmp_path / "run"
    result = run_cli(
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--model",
        "vit_tiny",
        "--img-size",
        "32",
        "--patch-size",
        "8",
        "--model-arg",
        "depth=2",
        "--model-arg",
        "embed_dim=32",
        "--model-arg",
        "num_heads=2",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert "best epoch 1" in result.stdout
    meta = json.loads((run / "best.json").read_text())
    assert meta["model"]["kwargs"] == {"depth": 2, "embed_dim": 32, "num_heads": 2}

    result = run_cli("evaluate", str(run), "--data", str(data), "--split", "test")
    assert result.returncode == 0, result.stderr
    assert "sensitivity" in result.stdout and (run / "eval" / "test" / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "nowhere", "--out", "x"], "error: nowhere: no such dataset folder"),
        (["evaluate", "nothing.safetensors", "--data", "."], "error: nothing.safetensors: no such"),
        (["synth", "o", "--size", "big"], "error: --size 'big': expected HEIGHTxWIDTH"),
        (["train", "--data", ".", "--out", "x", "--epochs", "0"], "error: --epochs: Input should"),
        (["train", "--data", ".", "--out", "x", "--model-arg", "depth"], "error: --model-arg"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def cli_run(tiny_data, tmp_path_factory) -> Path:
    from octlens.training import train

    out = tmp_path_factory.mktemp("cli") / "run"
    train(
        tiny_config(tiny_data, out, seed=0),
        verbose=False,
    )
    return out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "d", "--out", "r", "--epochs", "abc"], "Invalid value for '--epochs'"),
        (["train", "--data", "d", "--out", "r", "--bogus"], "No such option: --bogus"),
        (["evaluate", "--data", "d"], "Missing argument 'run'"),
        (["train", "--out", "r"], "--data: Field required"),
        (["train", "--data", "d", "--out", "r", "--freeze", "backbone"], "--freeze needs weights"),
        (["train", "--data", "d", "--out", "r", "--layer-decay", "2"], "--layer-decay: Input"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["synth", "o", "--n-per-class", "1.5"], "Invalid value for '--n-per-class'"),
        (["synth", "o", "--shortcut", "banner"], "--shortcut 'banner': choose one of square"),
        (
            ["synth", "o", "--shortcut", "text", "--shortcut-place", "middle"],
            "--shortcut-place 'middle': choose one of top-left",
        ),
    ],
)
def test_usage_errors_are_one_line(monkeypatch, capsys, args, message):
    status, _, err = run_cli_in_process(monkeypatch, capsys, *args)
    assert status == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_no_arguments_prints_help_and_exits_2(monkeypatch, capsys):
    status, out, err = run_cli_in_process(monkeypatch, capsys)
    assert status == 2 and "Usage: " in out and "train" in out and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--device", "banana"], "--device 'banana': not a device"),
        (["train", "--device", "cuda"], "--device 'cuda': no CUDA GPU is available here"),
        (["train", "--device", "cpu", "--precision", "fp16"], "--precision fp16 is for CUDA"),
        (["train", "--model", "vit_tiny", "--patch-size", "0"], "--patch-size: Input should be"),
        (
            ["train", "--model", "vit_tiny", "--model-arg", "embed_dim=100"],
            "model 'vit_tiny' cannot be built with embed_dim=100",
        ),
        (["train", "--model", "resnet18", "--patch-size", "8"], "model 'resnet18' has no patch"),
        (["evaluate", "RUN", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["evaluate", "RUN", "--precision", "fp8"], "--precision 'fp8': choose one of auto"),
        (["evaluate", "RUN", "--device", "banana"], "--device 'banana'"),
        (["audit", "RUN", "--steps", "0"], "--steps 0: must be at least 1"),
        (["audit", "RUN", "--scans-per-class", "0"], "--scans-per-class 0: must be at least 1"),
        (["audit", "RUN", "--sanity-scans", "0"], "--sanity-scans 0: must be at least 1"),
        (["audit", "RUN", "--methods", ","], "--methods: name at least one of gradcam"),
        (["audit", "RUN", "--methods", "rollout"], "attention rollout needs a Vision Transformer"),
        (["explain", "RUN", "SCAN", "--methods", ",", "--out", "OUT"], "--methods: name at least"),
        (["explain", "RUN", "SCAN", "--methods", "magic", "--out", "OUT"], "unknown method(s)"),
        (["explain", "RUN", "SCAN", "--out", "OUT", "--batch-size", "0"], "--batch-size 0: must"),
        (["explain", "RUN", "SCAN", "--out", "OUT", "--device", "banana"], "--device 'banana'"),
        (
            ["explain", "RUN", "SCAN", "--out", "OUT", "--methods", "occlusion", "--layer", "x"],
            "--layer x: occlusion does not explain one layer (the methods that do: gradcam",
        ),
        (
            ["explain", "RUN", "SCAN", "--out", "OUT", "--layer", "layer9"],
            "the model has no layer named 'layer9'",
        ),
        (["audit", "RUN", "--methods", "lrp", "--layer", "layer3"], "--layer layer3: lrp does"),
    ],
)
def test_bad_options_are_one_line_errors(
    monkeypatch, capsys, tiny_data, cli_run, tmp_path, args, message
):
    scan_file = next((tiny_data / "test" / "CNV").iterdir())
    filled = [
        str(cli_run)
        if a == "RUN"
        else str(scan_file)
        if a == "SCAN"
        else str(tmp_path / "o")
        if a == "OUT"
        else a
        for a in args
    ]
    if filled[0] == "train":
        filled += ["--data", str(tiny_data), "--out", str(tmp_path / "r"), "--img-size", "32"]
    if filled[0] in ("evaluate", "audit"):
        filled += ["--data", str(tiny_data)]
    status, _, err = run_cli_in_process(monkeypatch, capsys, *filled)
    assert status == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_files_where_folders_belong_are_one_line_errors(
    monkeypatch, capsys, cli_run, tiny_data, tmp_path
):
    a_file = tmp_path / "taken"
    a_file.write_text("mine")
    for args, message in (
        (["synth", str(a_file), "--n-per-class", "4"], "already exists and is a file"),
        (["synth", str(cli_run), "--n-per-class", "4"], "already exists and is a folder that"),
        (["report", str(cli_run), "--out", str(tmp_path)], "--out is a folder"),
        (["evaluate", str(cli_run), "--data", "x", "--out", str(a_file)], "x: no such dataset"),
        (
            ["evaluate", str(cli_run), "--data", str(tiny_data), "--out", str(a_file)],
            "--out is a file, not a folder",
        ),
        (
            ["audit", str(cli_run), "--data", str(tiny_data), "--out", str(a_file)],
            "--out is a file, not a folder",
        ),
        (["explain", str(cli_run), str(a_file), "--out", str(a_file)], "--out is a file"),
        (["demo", "--out", str(tmp_path / "d"), "--n-per-class", "0"], "--n-per-class 0"),
        (["serve", str(tmp_path)], f"{tmp_path / 'best.safetensors'}: no such checkpoint"),
        (["serve", str(cli_run), "--max-files", "0"], "--max-files 0: a whole number, at least 1"),
    ):
        status, _, err = run_cli_in_process(monkeypatch, capsys, *args)
        assert status == 2 and message in err and err.count("\n") == 1, err
    assert a_file.read_text() == "mine"


@pytest.mark.slow
def test_a_name_with_a_newline_or_markup_stays_on_one_line(tmp_path):
    data = tmp_path / "data"
    (data / "A").mkdir(parents=True)
    (data / "B").mkdir()
    for folder in ("A", "B"):
        from PIL import Image

        Image.new("L", (16, 16), 90).save(data / folder / "good.png")
    (data / "A" / "bad\nname.png").write_bytes(b"not an image")
    (data / "B" / "[bold]x.png").write_bytes(b"not an image")
    result = run_cli("inspect", str(data))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("warning:") for line in lines), result.stderr
    warning = [line for line in lines if "unreadable" in line]  # and one: no patient ids
    assert len(warning) == 1 and len(lines) == 2, result.stderr
    assert "bad\\nname.png" in warning[0] and "[bold]x.png" in warning[0]


def _interrupt(args: list[str], ready, timeout: float = 240) -> subprocess.CompletedProcess:
    """Start the CLI, wait until ``ready()`` is true, press Ctrl-C (SIGINT to the group)."""
    import signal
    import time

    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen(
        [*OCTLENS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        # As in a terminal: a suite started in the background (`make test &`) has SIGINT ignored,
        # children inherit that, and Python then never raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_during_training_exits_130_with_how_to_resume(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--out", str(run), "--img-size", "32"]
    args += ["--epochs", "200", "--batch-size", "8", "--workers", "0"]
    result = _interrupt(args, lambda: (run / "history.csv").exists())
    assert result.returncode == 130, result.stderr
    (line,) = result.stderr.strip().splitlines()
    # "after epoch N" when the signal lands while epoch N's files are being written
    assert re.match(rf"error: {re.escape(str(run))}: interrupted (in|after) epoch \d+;", line)
    assert "add --resume" in line
    assert "Traceback" not in result.stderr
    assert (run / "last.safetensors").is_file()


def test_the_first_figure_after_an_epoch_imports_no_compiled_module(tmp_path):
    """A Ctrl-C inside a compiled module's initialisation is an ImportError, not an interrupt:
    the epoch-end figure must find every compiled module it needs already loaded."""
    script = f"""
import importlib.machinery, sys
from pathlib import Path
import octlens.training.loop
from octlens.training.history import plot_learning_curves
before = set(sys.modules)
row = dict(epoch=1, train_loss=1.0, val_loss=1.0, train_acc=0.5, val_acc=0.5)
plot_learning_curves([row], Path({str(tmp_path / "curves.png")!r}))
suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
new = [name for name in set(sys.modules) - before
       if str(getattr(sys.modules[name], "__file__", "")).endswith(suffixes)]
print(sorted(new))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_an_import_broken_by_ctrl_c_is_an_interrupt(monkeypatch, capsys):
    import octlens.cli

    def interrupted_import(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("initialization failed") from interrupt

    monkeypatch.setattr(octlens.cli, "app", interrupted_import)
    status, _, err = run_cli_in_process(monkeypatch, capsys, "train")
    assert (status, err.strip()) == (130, "error: interrupted")


@pytest.mark.slow
def test_ctrl_c_during_synthesis_leaves_nothing_and_a_rerun_starts_afresh(tmp_path):
    out = tmp_path / "synth"
    partial = tmp_path / ".synth.partial"
    args = ["synth", str(out), "--n-per-class", "400", "--size", "124x128", "--workers", "2"]
    result = _interrupt(args, lambda: partial.is_dir() and any(partial.rglob("*.jpeg")))
    assert result.returncode == 130, result.stderr
    expected = f"error: {out}: interrupted; nothing was written (run again to start over)"
    assert result.stderr.strip() == expected
    assert not out.exists() and not partial.exists()
    again = run_cli("synth", str(out), "--n-per-class", "4", "--size", "62x64")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "synth.json").read_text())["n_per_class"] == 4


def test_a_full_disk_anywhere_is_one_line(monkeypatch, capsys, cli_run, tiny_data, tmp_path):
    import errno

    import matplotlib.figure

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    out = tmp_path / "eval"
    status, _, err = run_cli_in_process(
        monkeypatch, capsys, "evaluate", str(cli_run), "--data", str(tiny_data), "--out", str(out)
    )
    assert status == 2 and err.startswith("error: ") and "No space left on device" in err, err
    assert err.count("\n") == 1 and str(out) in err


def test_train_takes_a_config_file_with_overrides(monkeypatch, capsys, tiny_data, tmp_path):
    from octlens.training import TrainConfig

    settings = TrainConfig(
        data=tiny_data, out=tmp_path / "unused", img_size=32, epochs=3, batch_size=8
    ).model_dump(mode="json")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(settings))
    run = tmp_path / "run"
    status, _, err = run_cli_in_process(
        monkeypatch,
        capsys,
        "train",
        "--config",
        str(config),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--workers",
        "0",
    )
    assert status == 0, err
    saved = json.loads((run / "best.json").read_text())["config"]
    assert saved["epochs"] == 1 and saved["img_size"] == 32 and saved["out"] == str(run)
    assert saved["num_workers"] == 0 and saved["lr"] == TrainConfig.model_fields["lr"].default
    assert json.loads((run / "config.json").read_text()) == saved  # the run's own settings file
    status, _, err = run_cli_in_process(monkeypatch, capsys, "train", "--out", str(tmp_path / "x"))
    assert status == 2 and err.startswith("error: --data: Field required"), err
    for content, message in (
        ("[1, 2]", "must hold a JSON object"),
        ('{"data": "d", "out": "o", "bogus": 1}', "--bogus: Extra inputs are not permitted"),
    ):
        config.write_text(content)
        status, _, err = run_cli_in_process(monkeypatch, capsys, "train", "--config", str(config))
        assert status == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("command", ["evaluate", "audit", "explain"])
def test_a_missing_run_is_refused_before_torch_is_imported(command, tmp_path):
    """A typo in RUN answers at once, not after the seconds torch takes to import."""
    missing = tmp_path / "no-such-run"
    extra = ["--data", str(tmp_path)] if command != "explain" else [str(tmp_path), "--out", "o"]
    probe = (
        "import sys\nfrom octlens.cli import main\n"
        f"sys.argv = ['octlens', {command!r}, {str(missing)!r}, *{extra!r}]\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    code = stop.code\n"
        "print('torch' in sys.modules, code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert result.stdout.split() == ["False", "2"], result.stderr
    assert result.stderr.strip() == f"error: {missing}: no such run folder or checkpoint"


@pytest.mark.parametrize(
    ("missing", "args", "extra"),
    [
        ("fastapi", ["serve", "runs/none"], "app"),
        ("uvicorn", ["serve", "RUN"], "app"),
        ("optuna", ["tune", "--data", "d", "--out", "o"], "tune"),
    ],
)
def test_a_command_without_its_extra_names_the_extra(missing, args, extra, tiny_resnet_run):
    args = [str(tiny_resnet_run) if arg == "RUN" else arg for arg in args]
    # the package made unimportable, as on an install without the extra
    script = (
        f"import sys; sys.modules[{missing!r}] = None; sys.argv = ['octlens', *{args!r}]; "
        "from octlens.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: octlens {args[0]} needs the '{extra}' extra ({missing} is not installed): "
        f"pip install 'octlens[{extra}]'"
    )


def test_an_error_names_arguments_to_python_and_options_to_the_command_line():
    from octlens.cli.commands import option
    from octlens.errors import OctlensError, arg

    error = OctlensError(f"{arg('batch_size')} 0 with {arg('num_workers')} 2: a path/--x stays")
    assert str(error) == "batch_size 0 with num_workers 2: a path/--x stays"
    assert error.naming(option) == "--batch-size 0 with --workers 2: a path/--x stays"
    # a value that holds any other control character around a name is left as it is
    odd = OctlensError(f"{arg('out')} /tmp/\x1fout\x1f: not writable")
    assert odd.naming(option) == "--out /tmp/\x1fout\x1f: not writable"


def test_command_defaults_are_the_api_signatures():
    """Each default is defined once, in the API function's signature; the command reads it from
    the source (without importing torch) and passes it on unchanged."""
    import inspect

    import typer.main

    from octlens.audit import audit_run
    from octlens.cli.commands import app
    from octlens.cli.defaults import signature_defaults
    from octlens.evaluate import evaluate_run
    from octlens.explain.runner import explain_images
    from octlens.report import write_report

    functions = {
        "audit": ("audit.pipeline", audit_run),
        "evaluate": ("evaluate.runner", evaluate_run),
        "explain": ("explain.runner", explain_images),
        "report": ("report.html", write_report),
    }
    device = {"batch_size", "precision", "device"}
    expected = {
        "audit": {"split", "methods", "scans_per_class", "steps", "sanity_scans", "out"}
        | {"estimate_retina", "layer", "faithfulness_scans"}
        | device,
        "evaluate": {"split", "out"} | device,
        "explain": {"grid_per_class", "strict", "layer"} | device,
        "report": {"data", "split", "scans_per_class", "confounds", "tune"},
    }
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for command, (module, function) in functions.items():
        signature = {
            name: parameter.default
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty
        }
        assert signature_defaults(module, function.__name__) == signature
        options = {param.name: param.default for param in commands[command].params}
        shared = set(options) & set(signature)
        assert shared == expected[command]
        assert {name: options[name] for name in shared} == {n: signature[n] for n in shared}
