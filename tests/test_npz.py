"""MedMNIST ``.npz`` files: pixel scaling, label checks, and files that are not what they claim."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octlens.data.index import scan
from octlens.errors import OctlensError


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _images(n: int = 8, dtype=np.uint8, high: float = 255) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((n, 12, 12)) * high).astype(dtype)


def test_float_images_in_0_1_are_scaled_not_zeroed(tmp_path):
    as_bytes = _images()
    path = _npz(
        tmp_path / "f.npz",
        train_images=as_bytes.astype(np.float32) / 255,
        train_labels=np.arange(8) % 4,
    )
    index = scan(path)
    loaded = np.asarray(index.load(index.split("train")[3]), dtype=float)
    assert np.abs(loaded - as_bytes[3]).max() <= 1


def test_one_scale_for_a_whole_split(tmp_path):
    """A dark image in a float [0, 255] set keeps its level: one scale for the whole split."""
    images = _images().astype(np.float32)
    images[0] = images[0] / 255  # all below 1: alone it would look like a [0, 1] image
    path = _npz(tmp_path / "f.npz", train_images=images, train_labels=np.arange(8) % 4)
    index = scan(path)
    assert np.asarray(index.load(index.split("train")[0])).max() <= 1


def test_16_bit_images_are_scaled_by_their_depth(tmp_path):
    as_bytes = _images()
    path = _npz(
        tmp_path / "u16.npz",
        train_images=as_bytes.astype(np.uint16) * 257,
        train_labels=np.arange(8) % 4,
    )
    index = scan(path)
    assert np.array_equal(np.asarray(index.load(index.split("train")[5])), as_bytes[5])


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            np.array([0, 1, 2, 3, 8, 0, 1, 2]),
            r"labels run up to 8, but no image has label\(s\) 4, 5",
        ),
        (np.array([0, 1, 2, -1, 0, 1, 2, 3]), "negative label -1"),
        (np.array([0, 1, 2, 3.5, 0, 1, 2, 3]), "whole numbers"),
        (np.zeros((8, 14)), r"shape \(8, 14\).*multi-label"),
        (np.array(3), r"shape \(\)"),
        (np.array([0, 1, 2, 3, 0, 1, 2]), "8 images and 7 labels"),
        (np.array(["a"] * 8), "labels of type"),
        (
            np.array([0, 1, 2, 10**12, 0, 1, 2, 3]),
            r"label 1e\+12 is beyond any class count",
        ),
        (np.array([0, 1, 2, 1e300, 0, 1, 2, 3]), r"label 1e\+300 is beyond any class count"),
        (
            np.array([0, 1, 2, 30, 0, 1, 2, 3]),
            r"labels run up to 30, .* 4, 5, 6, 7, 8, 9, 10, 11 \.\.\.",
        ),
    ],
)
def test_labels_are_checked(tmp_path, labels, message):
    path = _npz(tmp_path / "bad.npz", train_images=_images(), train_labels=labels)
    with pytest.raises(OctlensError, match=message):
        scan(path)


def test_empty_arrays_are_refused(tmp_path):
    path = _npz(
        tmp_path / "empty.npz", train_images=np.zeros((0, 12, 12)), train_labels=np.zeros(0)
    )
    with pytest.raises(OctlensError, match=r"shape \(0, 12, 12\)"):
        scan(path)


def test_a_renamed_npy_and_a_truncated_npz_are_one_line_errors(tmp_path):
    npy = tmp_path / "images.npy"
    np.save(npy, _images())
    renamed = npy.rename(tmp_path / "images.npz")
    with pytest.raises(
        OctlensError, match=r"images\.npz: not a \.npz archive .*\.npy file renamed"
    ):
        scan(renamed)
    whole = _npz(tmp_path / "whole.npz", train_images=_images(), train_labels=np.arange(8) % 4)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(OctlensError, match=r"cut\.npz: not a"):
        scan(cut)


def _forged_npz(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npz whose images member has a header claiming ``shape`` but holds a few bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train_images.npy", header.getvalue() + b"\x00" * 64)
        labels = io.BytesIO()
        np.save(labels, np.arange(4))
        archive.writestr("train_labels.npy", labels.getvalue())
    return path


def test_a_header_claiming_a_trillion_elements_is_refused_without_allocating(tmp_path):
    path = _forged_npz(tmp_path / "forged.npz", (10**6, 10**3, 10**3))
    with pytest.raises(OctlensError, match=r"forged\.npz: 'train_images\.npy' claims shape"):
        scan(path)


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "pickle.npz"
    np.savez(path, train_images=np.array([object()] * 2, dtype=object), train_labels=np.arange(2))
    with pytest.raises(OctlensError, match="Python objects"):
        scan(path)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(min_value=0, max_value=3000),
    flips=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 255)), max_size=4),
)
def test_damaged_npz_files_load_or_fail_with_one_line(tmp_path, cut, flips):
    data = bytearray(
        _npz(
            tmp_path / "good.npz", train_images=_images(), train_labels=np.arange(8) % 4
        ).read_bytes()
    )
    for position, value in flips:
        if position < len(data):
            data[position] ^= value
    path = tmp_path / "fuzz.npz"
    path.write_bytes(bytes(data[: max(1, len(data) - cut)]))
    try:
        index = scan(path)
        for sample in index.split("train"):
            index.load(sample)
    except OctlensError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
