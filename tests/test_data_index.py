from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from octlens.data.dataset import OCTDataset
from octlens.data.images import UnreadableImageError, check_image
from octlens.data.index import DataWarning, patient_id, scan
from octlens.data.splits import find_leakage
from octlens.data.transforms import Normalization, eval_transform
from octlens.errors import OctlensError


def _write_scan(path: Path, value: int = 100, size=(40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8)).save(path)


def test_reads_the_real_oct2017_sample(real_dev):
    index = scan(real_dev)
    assert index.classes == ["CNV", "DME", "DRUSEN", "NORMAL"]
    samples = index.split("all")  # ROOT/<CLASS>/ is a single split
    assert len(samples) == 139
    by_name = {s.path.name: s for s in samples}
    assert by_name["CNV-103044-1.jpeg"].patient == "103044"
    renamed = [s for s in samples if s.path.name.startswith("hhyx_")]
    assert renamed and all(s.patient == "" for s in renamed)
    image = index.load(samples[0])
    assert image.mode == "L" and image.height in (496, 512)


def test_split_names_come_from_the_folders(tmp_path):
    for split in ("dev", "holdout"):
        for label in ("A", "B"):
            _write_scan(tmp_path / split / label / f"{label}-{len(split)}-1.png")
    index = scan(tmp_path)
    assert sorted(index.splits) == ["dev", "holdout"]
    with pytest.raises(OctlensError, match=r"no split named 'train'.*dev, holdout"):
        index.split("train")


def test_patient_id_parsing():
    assert patient_id(Path("CNV-103044-7.jpeg")) == "103044"
    assert patient_id(Path("NORMAL-9884539-2.png")) == "9884539"
    assert patient_id(Path("hhyx_CNV-12.png")) == ""
    assert patient_id(Path("scan.png")) == ""


def test_bad_files_are_skipped_with_one_warning(tmp_path):
    folder = tmp_path / "train" / "CNV"
    _write_scan(folder / "CNV-1-1.png")
    _write_scan(folder / "CNV-1-2.jpeg")
    (folder / "CNV-1-3.jpeg").write_bytes(b"this is not an image")
    good_jpeg = (folder / "CNV-1-2.jpeg").read_bytes()
    (folder / "CNV-1-4.jpeg").write_bytes(good_jpeg[: len(good_jpeg) // 2])  # truncated
    (folder / "CNV-1-5.png").write_text("text file with an image suffix")
    with pytest.warns(DataWarning, match=r"skipped 3 unreadable file\(s\)") as caught:
        index = scan(tmp_path)
    assert len(caught) == 1
    assert "CNV-1-3.jpeg" in str(caught[0].message) and "and" not in str(caught[0].message)[-12:]
    assert sorted(s.path.name for s in index.split("train")) == ["CNV-1-1.png", "CNV-1-2.jpeg"]
    assert {p.name for p, _ in index.skipped} == {"CNV-1-3.jpeg", "CNV-1-4.jpeg", "CNV-1-5.png"}
    with pytest.raises(UnreadableImageError, match="CNV-1-"):
        scan(tmp_path, strict=True)


def test_truncated_jpeg_is_named(tmp_path):
    path = tmp_path / "x.jpeg"
    noise = np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[:-400])
    with pytest.raises(UnreadableImageError, match=r"x\.jpeg: truncated JPEG"):
        check_image(path)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (8000, 6000)).save(path)  # 48 MP, a few kB on disk
    with pytest.raises(UnreadableImageError, match=r"bomb.png: 8000x6000 pixels.*bomb"):
        check_image(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda root: (root / "train" / "CNV").mkdir(parents=True),
            "CNV: class folder has no images",
        ),
        (lambda root: (root / "train").mkdir(parents=True), "train: split folder has no class"),
        (lambda root: root.mkdir(), "no class or split folders"),
        (lambda root: None, "no such dataset folder"),
    ],
)
def test_empty_or_missing_folders_are_one_line_errors(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(OctlensError, match=message) as error:
        scan(root)
    assert "\n" not in str(error.value)


def test_a_file_that_breaks_after_scanning_is_replaced_not_fatal(tmp_path):
    for i in range(3):
        _write_scan(tmp_path / "A" / f"A-1-{i}.png", value=10 * (i + 1))
    index = scan(tmp_path)
    samples = index.split("all")
    samples[1].path.write_bytes(b"gone bad")
    dataset = OCTDataset(index, samples, eval_transform(16, Normalization(0.0, 1.0)))
    with pytest.warns(DataWarning, match=r"A-1-1.png.*next image"):
        image, _ = dataset[1]
    assert image.mean().item() == pytest.approx(30 / 255, abs=1e-3)  # the next scan's pixels
    strict = OCTDataset(index, samples, eval_transform(16, Normalization(0.0, 1.0)), strict=True)
    with pytest.raises(UnreadableImageError):
        strict[1]


def test_medmnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "octmnist.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 255, (6, 28, 28), dtype=np.uint8),
        train_labels=np.array([[0], [1], [2], [3], [0], [1]]),
        test_images=rng.integers(0, 255, (2, 28, 28), dtype=np.uint8),
        test_labels=np.array([[3], [2]]),
    )
    index = scan(path)
    assert index.classes == ["CNV", "DME", "DRUSEN", "NORMAL"]
    assert [s.label for s in index.split("test")] == [3, 2]
    image = index.load(index.split("train")[2])
    assert image.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(image), np.load(path)["train_images"][2])


def test_leakage_between_splits(tmp_path):
    _write_scan(tmp_path / "train" / "CNV" / "CNV-111-1.png", value=1)
    _write_scan(tmp_path / "test" / "CNV" / "CNV-111-2.png", value=2)  # same patient
    _write_scan(tmp_path / "train" / "DME" / "DME-222-1.png", value=3)
    _write_scan(tmp_path / "test" / "DME" / "DME-333-1.png", value=3)  # identical bytes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = scan(tmp_path)
    leaks = find_leakage(index, hashes=True)
    assert [(leak.kind, leak.key, leak.splits) for leak in leaks if leak.kind == "patient"] == [
        ("patient", "111", ("test", "train"))
    ]
    duplicates = [leak for leak in leaks if leak.kind == "duplicate"]
    assert len(duplicates) == 1 and duplicates[0].splits == ("test", "train")
    assert find_leakage(index) == leaks[:1]


def test_class_folders_that_differ_only_in_case_are_refused(tmp_path):
    for split, name in (("train", "CNV"), ("train", "DME"), ("test", "cnv"), ("test", "DME")):
        _write_scan(tmp_path / split / name / f"{name.upper()}-1-1.png")
    with pytest.raises(OctlensError, match=r"differ only in letter case \(train/CNV vs test/cnv\)"):
        scan(tmp_path)


def test_a_class_missing_from_a_split_is_named_in_a_warning(tmp_path):
    for split, name in (("train", "CNV"), ("train", "DME"), ("test", "CNV")):
        _write_scan(tmp_path / split / name / f"{name}-1-1.png")
    with pytest.warns(DataWarning, match=r"split 'test' has no folder for class\(es\) DME"):
        index = scan(tmp_path)
    assert index.classes == ["CNV", "DME"]
    assert index.missing_classes(index.split("test")) == ["DME"]


def test_an_unreadable_folder_is_a_one_line_error(tmp_path, monkeypatch):
    _write_scan(tmp_path / "train" / "CNV" / "CNV-1-1.png")
    blocked = tmp_path / "train" / "CNV"
    original = Path.iterdir

    def iterdir(self):
        if self == blocked:
            raise PermissionError(13, "Permission denied")
        return original(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(OctlensError, match=r"train/CNV: cannot read folder \(Permission denied\)"):
        scan(tmp_path)


def test_strict_decodes_and_finds_a_broken_png_the_crc_check_passes(tmp_path):
    from helpers import broken_png

    _write_scan(tmp_path / "A" / "A-1-1.png")
    broken_png(tmp_path / "A" / "A-1-2.png")
    assert len(scan(tmp_path).split("all")) == 2  # the cheap check passes it
    with pytest.raises(UnreadableImageError, match=r"A-1-2\.png"):
        scan(tmp_path, strict=True)


def test_leaking_duplicates_are_named_by_file(tmp_path):
    _write_scan(tmp_path / "train" / "DME" / "DME-222-1.png", value=3)
    _write_scan(tmp_path / "test" / "DME" / "DME-333-1.png", value=3)
    (duplicate,) = find_leakage(scan(tmp_path), hashes=True)
    assert duplicate.files == ("test/DME/DME-333-1.png", "train/DME/DME-222-1.png")


def test_fingerprint_tells_data_apart(tmp_path):
    for i in range(3):
        _write_scan(tmp_path / "A" / f"A-1-{i}.png", value=10 * (i + 1))
    index = scan(tmp_path)
    first = index.fingerprint(index.split("all"))
    assert first == scan(tmp_path).fingerprint(scan(tmp_path).split("all"))
    assert first != index.fingerprint(index.split("all")[:2])
    _write_scan(tmp_path / "A" / "A-1-0.png", value=10, size=(41, 32))  # same name, new bytes
    assert first != scan(tmp_path).fingerprint(scan(tmp_path).split("all"))
