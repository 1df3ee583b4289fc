"""``octlens explain`` at the scale of a test set: streamed in batches, files per batch, a
bounded grid, and no two scans writing to the same files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octlens.errors import OctlensError
from octlens.explain import EXPLAINERS, GradCAM
from octlens.explain import runner as module
from octlens.explain.runner import explain_images, output_names


def _scans(tiny_data: Path, count: int) -> list[Path]:
    return sorted((tiny_data / "train").rglob("*.jpeg"))[:count]


def test_two_scans_with_one_name_in_two_folders_keep_their_own_files(
    tiny_data, tiny_resnet_run, tmp_path
):
    first, second = _scans(tiny_data, 8)[0], _scans(tiny_data, 8)[-1]
    for folder, scan in (("x", first), ("y", second)):
        (tmp_path / folder).mkdir()
        shutil.copy(scan, tmp_path / folder / "a.jpeg")
    shutil.copy(first, tmp_path / "x" / "a.png")  # same stem, same folder, other format
    inputs = [tmp_path / "x" / "a.jpeg", tmp_path / "y" / "a.jpeg", tmp_path / "x" / "a.png"]
    again = tmp_path / "x" / ".." / "x" / "a.jpeg"  # one scan given twice is explained once
    result = explain_images(tiny_resnet_run, [*inputs, again], ["gradcam"], tmp_path / "out")
    assert len(list((tmp_path / "out").rglob("*.npy"))) == 3  # none overwritten

    files = [result.map_path(scan, "gradcam") for scan in result.scans]
    assert len(set(files)) == 3 and all(path.is_file() for path in files)
    for scan, path in zip(result.scans, files, strict=True):
        alone = explain_images(tiny_resnet_run, [scan.path], ["gradcam"], tmp_path / "alone")
        np.testing.assert_allclose(
            np.load(path), np.load(alone.map_path(alone.scans[0], "gradcam")), atol=1e-6
        )
    assert not np.allclose(np.load(files[0]), np.load(files[1]))  # two scans, two maps
    with open(tmp_path / "out" / "explanations.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["scan"]) for row in rows] == inputs
    assert [row["files"] for row in rows] == [scan.name for scan in result.scans]


class _Recording:
    """Grad-CAM that records each batch it is given and the maps on disk at that moment."""

    calls: ClassVar[list[tuple[int, int]]] = []
    out: Path

    def __init__(self, model, precision="auto"):
        self.inner = GradCAM(model, precision=precision)

    def __call__(self, images, targets=None):
        written = len(list(self.out.rglob("*.npy"))) if self.out.exists() else 0
        self.calls.append((len(images), written))
        return self.inner(images, targets)


def test_scans_are_explained_and_written_batch_by_batch(
    tiny_data, tiny_resnet_run, tmp_path, monkeypatch
):
    _Recording.calls, _Recording.out = [], tmp_path / "out"
    monkeypatch.setitem(EXPLAINERS, "gradcam", _Recording)
    scans = _scans(tiny_data, 7)
    result = explain_images(
        tiny_resnet_run, scans, ["gradcam"], tmp_path / "out", batch_size=3, device="cpu"
    )
    assert [size for size, _ in _Recording.calls] == [3, 3, 1]
    assert [written for _, written in _Recording.calls] == [0, 3, 6]  # each batch on disk first
    assert len(result.scans) == 7


def test_maps_do_not_depend_on_the_batch_size(tiny_data, tiny_resnet_run, tmp_path):
    scans = _scans(tiny_data, 5)
    one = explain_images(tiny_resnet_run, scans, ["gradcam"], tmp_path / "1", batch_size=1)
    all_ = explain_images(tiny_resnet_run, scans, ["gradcam"], tmp_path / "5", batch_size=5)
    assert [s.predicted for s in one.scans] == [s.predicted for s in all_.scans]
    for a, b in zip(one.scans, all_.scans, strict=True):
        np.testing.assert_allclose(
            np.load(one.map_path(a, "gradcam")), np.load(all_.map_path(b, "gradcam")), atol=1e-5
        )


def test_the_grid_shows_a_bounded_sample_per_predicted_class(
    tiny_data, tiny_resnet_run, tmp_path, monkeypatch
):
    drawn: list[list[str]] = []

    def draw(images, maps, titles, path, title):
        drawn.append(titles)

    monkeypatch.setattr(module, "plot_explanation_grid", draw)
    scans = _scans(tiny_data, 12)
    result = explain_images(
        tiny_resnet_run, scans, ["gradcam"], tmp_path / "out", batch_size=4, grid_per_class=1
    )
    predicted = [scan.predicted for scan in result.scans]
    (titles,) = drawn
    assert len(titles) == len(set(predicted)) < len(scans)
    # the first scan of each predicted class, in input order
    firsts = [scan for i, scan in enumerate(result.scans) if scan.predicted not in predicted[:i]]
    assert titles == [f"{s.path.name}\n{s.predicted} {s.probability:.2f}" for s in firsts]
    assert len(list((tmp_path / "out").rglob("*.npy"))) == 12  # every scan still explained


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "^batch_size 0: must be at least 1"),
        ({"grid_per_class": 0}, "^grid_per_class 0: must be at least 1"),
        ({"device": "banana"}, "^device 'banana': not a device"),
        ({"device": "cpu", "precision": "fp16"}, "^precision fp16 is for CUDA"),
    ],
)
def test_bad_explain_options_are_one_line_errors(
    tiny_data, tiny_resnet_run, tmp_path, options, message
):
    with pytest.raises(OctlensError, match=message):
        explain_images(tiny_resnet_run, _scans(tiny_data, 1), ["gradcam"], tmp_path, **options)
    assert not list(tmp_path.rglob("*.npy"))


_PART = st.sampled_from(["a", "A", "b", "x", "a.jpeg", "a-2", "scan 1", "Ä"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(_PART, max_size=3), _PART, st.sampled_from([".jpeg", ".png"]))))
def test_output_names_are_distinct_relative_and_name_their_scan(entries):
    given_paths = (Path("/data", *folders, f"{name}{ext}") for folders, name, ext in entries)
    paths = list(dict.fromkeys(given_paths))
    names = output_names(paths)
    assert len({name.casefold() for name in names}) == len(paths)  # also on a case-blind disk
    for path, name in zip(paths, names, strict=True):
        relative = PurePosixPath(name)
        assert not relative.is_absolute() and ".." not in relative.parts
        assert relative.name.startswith(path.stem)
        folders = relative.parent.parts  # the scan's own folders, under the shared one
        assert path.parent.parts[len(path.parent.parts) - len(folders) :] == folders


def test_the_explain_command_streams_a_test_set(
    monkeypatch, capsys, tiny_data, tiny_resnet_run, tmp_path
):
    from helpers import run_cli_in_process

    scans = sorted((tiny_data / "test").glob("*/*.jpeg"))  # test/*/*.jpeg
    out = tmp_path / "out"
    options = ["--batch-size", "2", "--device", "cpu", "--grid-per-class", "1"]
    status, printed, err = run_cli_in_process(
        monkeypatch, capsys, "explain", str(tiny_resnet_run), *map(str, scans), "--out", str(out),
        *options,
    )  # fmt: skip
    assert status == 0, err
    assert f"explained {len(scans)} scan(s) with gradcam" in printed
    for scan in scans:  # under their class folder, as in the data
        assert (out / scan.parent.name / f"{scan.stem}_gradcam.npy").is_file()


def test_maps_at_another_layer_are_named_for_it_and_do_not_overwrite(
    tiny_data, tiny_resnet_run, tmp_path
):
    scans = _scans(tiny_data, 2)
    last = explain_images(tiny_resnet_run, scans, ["gradcam"], tmp_path, verbose=False)
    earlier = explain_images(
        tiny_resnet_run, scans, ["gradcam"], tmp_path, verbose=False, layer="layer3"
    )
    assert earlier.methods == ["gradcam@layer3"]
    for a, b in zip(last.scans, earlier.scans, strict=True):
        kept, finer = (
            np.load(last.map_path(a, "gradcam")),
            np.load(earlier.map_path(b, "gradcam@layer3")),
        )
        assert kept.shape == finer.shape and not np.allclose(kept, finer)
