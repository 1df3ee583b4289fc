"""Every long command shows one kind of progress bar on a terminal (counts, time left), and
nothing when it is not on one or asked to be quiet."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from octlens import progress as module
from octlens.progress import counted, progress_bar


@pytest.fixture
def terminal(monkeypatch) -> io.StringIO:
    """What the bars draw, as if stderr were a terminal."""
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, markup=False, highlight=False)
    monkeypatch.setattr(module, "progress_console", lambda: console)
    return screen


def _bars(screen: io.StringIO) -> str:
    """The text drawn, without the terminal's control sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())


def test_a_bar_counts_and_says_the_time_left(terminal):
    with progress_bar("working", total=3, unit="parts") as advance:
        for _ in counted(range(3), advance):
            pass
    assert re.search(r"working .*3/3 parts.*left", _bars(terminal))


def test_a_bar_is_quiet_when_asked_or_not_on_a_terminal(terminal, monkeypatch):
    with progress_bar("working", total=2, verbose=False) as advance:
        advance(2)
    assert terminal.getvalue() == ""
    monkeypatch.setattr(module, "progress_console", lambda: Console(file=io.StringIO()))
    with progress_bar("working", total=2) as advance:  # a pipe or a log file
        advance(2)
    assert terminal.getvalue() == "" and not module._active


def test_results_printed_under_a_bar_stay_on_a_piped_stdout(terminal, capsys):
    with progress_bar("working", total=1) as advance:
        print("result line")
        advance()
    assert "result line" in capsys.readouterr().out and "result line" not in _bars(terminal)


def test_a_bar_opened_under_another_joins_its_display(terminal):
    with progress_bar("outer", total=1) as outer:
        with progress_bar("inner", total=4, unit="files") as inner:
            inner(4)
        outer()
    drawn = _bars(terminal)
    assert "1/1 scans" in drawn and "inner" in drawn and not module._active


def test_indexing_a_folder_shows_files_checked(terminal, tiny_data):
    from octlens.data.index import scan

    index = scan(tiny_data)
    files = sum(len(samples) for samples in index.splits.values())
    assert f"{files}/{files} files" in _bars(terminal)


def test_hashing_for_duplicates_shows_files_hashed(terminal, tiny_data):
    from octlens.data.index import scan
    from octlens.data.splits import find_leakage

    index = scan(tiny_data, verbose=False)
    find_leakage(index, hashes=True)
    files = sum(len(samples) for samples in index.splits.values())
    assert re.search(rf"hashing files .*{files}/{files} files", _bars(terminal))


def test_synthesis_shows_scans_written(terminal, tmp_path):
    from octlens.data.synth import synthesize

    synthesize(tmp_path / "data", n_per_class=3, size=(32, 32), workers=1)
    assert re.search(r"synthesizing .*12/12 scans", _bars(terminal))


def test_evaluation_shows_scans_scored(terminal, tiny_resnet_run, tiny_data, tmp_path):
    from octlens.data.index import scan
    from octlens.evaluate import evaluate_run

    evaluate_run(tiny_resnet_run, tiny_data, "test", batch_size=2, out=tmp_path)
    n = len(scan(tiny_data, verbose=False).split("test"))
    assert re.search(rf"evaluating test .*{n}/{n} scans", _bars(terminal))


def test_explaining_shows_scans_explained(terminal, tiny_resnet_run, tiny_data, tmp_path):
    from octlens.explain.runner import explain_images

    scans = sorted((tiny_data / "train").rglob("*.jpeg"))[:5]
    explain_images(tiny_resnet_run, scans, ["gradcam"], tmp_path, batch_size=2)
    assert re.search(r"explaining .*5/5 scans", _bars(terminal))


@pytest.mark.slow
def test_the_audit_shows_each_method_and_test(terminal, tiny_resnet_run, tiny_data, tmp_path):
    from octlens.audit import audit_run

    result = audit_run(
        tiny_resnet_run,
        tiny_data,
        methods=["gradcam", "layercam"],
        scans_per_class=1,
        steps=2,
        sanity_scans=2,
        out=tmp_path,
    )
    drawn = _bars(terminal)
    n = result.n_scans
    assert re.search(rf"loading scans for the audit .*{n}/{n} scans", drawn)
    assert re.search(r"counterfactual region tests .*10/10 tests", drawn)  # 1 + 2 x 4 + 1


def test_the_confound_scan_shows_scans_and_groups(terminal, tiny_data, tmp_path):
    from octlens.data import confound_scan

    report = confound_scan(tiny_data, tmp_path, permutations=9)
    drawn = _bars(terminal)
    n = report.n_scans
    assert re.search(rf"reading scans for confounds .*{n}/{n} scans", drawn)
    assert re.search(r"testing feature groups .*8/8 groups", drawn)
