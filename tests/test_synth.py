from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from octlens.data.index import scan
from octlens.data.synth import (
    CLASSES,
    draw_patient,
    plan_scans,
    read_record,
    render_job,
    render_scan,
    synthesize,
)
from octlens.errors import OctlensError


def test_same_seed_same_scan_and_other_seed_other_scan():
    job = plan_scans(6, seed=5)[0]
    first, again = render_job(job), render_job(job)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.lesion, again.lesion)
    other = render_job(plan_scans(6, seed=6)[0])
    assert not np.array_equal(first.image, other.image)


@pytest.mark.parametrize("label", CLASSES)
@pytest.mark.parametrize("width", [512, 768])
def test_mask_geometry(label, width):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        scan_ = render_scan(label, draw_patient(rng), rng, 496, width)
        assert scan_.image.shape == scan_.lesion.shape == scan_.retina.shape == (496, width)
        # The retina is one vertical run per column: ILM down to Bruch's membrane.
        column_runs = np.diff(scan_.retina.astype(np.int8), axis=0)
        assert (np.abs(column_runs).sum(axis=0) <= 2).all()
        assert scan_.retina.sum(axis=0).min() > 30
        if label == "NORMAL":
            assert not scan_.lesion.any()
        else:
            assert scan_.lesion.sum() > 40, "every disease scan has a visible lesion"
            assert not (scan_.lesion & ~scan_.retina).any(), "lesions lie inside the retina"


def test_dme_cysts_are_dark_and_drusen_lift_the_rpe():
    rng = np.random.default_rng(0)
    dme = render_scan("DME", draw_patient(rng), rng)
    retina_only = dme.retina & ~dme.lesion
    assert dme.image[dme.lesion].mean() < 0.6 * dme.image[retina_only].mean()


@pytest.mark.parametrize("label", CLASSES)
def test_a_wider_scan_samples_the_same_field_more_densely(label):
    """The masks of a 1536-wide scan, every third column, are those of the 512-wide scan drawn
    from the same stream: the geometry is laid out on one field, whatever the sampling."""
    scans = {}
    for width in (512, 1536):
        rng = np.random.default_rng(11)
        scans[width] = render_scan(label, draw_patient(rng), rng, 496, width)
    for kind in ("retina", "lesion"):
        narrow, wide = getattr(scans[512], kind), getattr(scans[1536], kind)[:, ::3]
        union = (narrow | wide).sum()
        if union:
            assert (narrow & wide).sum() / union > 0.95, kind


def test_the_default_sizes_are_oct2017_s_drawn_per_patient_whatever_the_class(tmp_path):
    from octlens.data.synth.writer import OCT2017_SIZES, plan_scans, with_sizes

    jobs = with_sizes(plan_scans(400, seed=0), None)
    by_patient = {}
    for job in jobs:
        assert job.size in OCT2017_SIZES
        by_patient.setdefault(job.patient, set()).add(job.size)
    assert all(len(sizes) == 1 for sizes in by_patient.values())
    for label in CLASSES:  # each class gets roughly the dev sample's shares, not its own
        patients = {job.patient: job.size for job in jobs if job.label == label}
        wide = sum(size == (496, 768) for size in patients.values()) / len(patients)
        assert 0.12 < wide < 0.38, (label, wide)
    out = tmp_path / "mixed"
    synthesize(out, 6, seed=4, workers=1)
    record = read_record(out)
    assert record["size"] == "oct2017" and sum(record["sizes"].values()) == 24
    for path in out.rglob("*.jpeg"):
        width, height = Image.open(path).size
        assert (height, width) in OCT2017_SIZES
        mask = Image.open(out / "masks" / path.relative_to(out).with_suffix(".png"))
        assert mask.size == (width, height)


def test_writer_layout_and_patient_disjoint_splits(tiny_data):
    index = scan(tiny_data)
    assert sorted(index.splits) == ["test", "train", "val"]
    assert index.classes == list(CLASSES)
    assert sum(len(s) for s in index.splits.values()) == 32
    patients = {split: {s.patient for s in samples} for split, samples in index.splits.items()}
    assert not patients["train"] & patients["test"] and not patients["train"] & patients["val"]
    for sample in index.split("train"):
        for kind in ("masks", "retina"):
            mask_path = index.mask_path(sample, kind)
            assert mask_path is not None
            mask = np.asarray(Image.open(mask_path))
            assert mask.shape == (124, 128) and set(np.unique(mask)) <= {0, 255}
        lesion = np.asarray(Image.open(index.mask_path(sample, "masks")))
        assert (lesion.any()) == (index.classes[sample.label] != "NORMAL")


def test_classes_are_not_separable_by_a_trivial_global_statistic():
    """A logistic regression on 8x8-downsampled pixels must stay far from perfect."""

    def features(jobs):
        pixels = [
            np.asarray(Image.fromarray(render_job(job).image).resize((8, 8), Image.BOX), float)
            for job in jobs
        ]
        return np.stack(pixels).reshape(len(jobs), -1), [CLASSES.index(j.label) for j in jobs]

    train_x, train_y = features(plan_scans(40, seed=0))
    test_x, test_y = features(plan_scans(15, seed=1))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    accuracy = model.fit(train_x, train_y).score(test_x, test_y)
    assert accuracy < 0.75, f"8x8 pixels separate the classes too well ({accuracy:.2f})"


def test_synthesis_never_writes_into_an_existing_dataset_and_records_completion(tmp_path):
    out = tmp_path / "data"
    leftover = tmp_path / ".data.partial"
    (leftover / "train" / "CNV").mkdir(parents=True)  # what an interrupted run left
    (leftover / "train" / "CNV" / "CNV-1-1.jpeg").write_bytes(b"half")
    counts = synthesize(out, 4, seed=2, size=(62, 64), workers=1)
    assert not leftover.exists()
    record = read_record(out)
    assert record["n_per_class"] == 4 and record["seed"] == 2 and record["size"] == [62, 64]
    assert sum(record["scans"].values()) == sum(counts.values()) == 16
    assert len(list(out.rglob("*.jpeg"))) == 16  # nothing of the leftover came along
    with pytest.raises(OctlensError, match="already exists and is a folder that is not empty"):
        synthesize(out, 4, size=(62, 64), workers=1)
    (tmp_path / "empty").mkdir()
    synthesize(tmp_path / "empty", 3, size=(62, 64), workers=1)  # an empty folder is fine


def test_the_demo_refuses_data_made_with_other_settings_or_left_incomplete(tmp_path):
    from octlens.demo import _synthesized

    synthesize(tmp_path / "data", 4, seed=0, size=(62, 64), workers=1)
    _synthesized(tmp_path / "data", 4, seed=0)  # the same settings: reused
    with pytest.raises(
        OctlensError, match=r"made with \{'n_per_class': 4, .*not \{'n_per_class': 5"
    ):
        _synthesized(tmp_path / "data", 5, seed=0)
    (tmp_path / "data" / "synth.json").unlink()
    with pytest.raises(OctlensError, match="not a complete synthetic dataset"):
        _synthesized(tmp_path / "data", 4, seed=0)


def test_an_interrupted_demo_says_how_to_continue(tmp_path, monkeypatch):
    import octlens.demo
    from octlens.errors import Interrupted

    def interrupted_training(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(octlens.demo, "train", interrupted_training)
    with pytest.raises(Interrupted, match="demo interrupted; run it again with the same --out"):
        octlens.demo.run_demo(tmp_path / "demo", n_per_class=3, verbose=False)
    assert read_record(tmp_path / "demo" / "data")["n_per_class"] == 3  # the data is complete


def test_absurd_sizes_are_refused_before_any_work(tmp_path):
    with pytest.raises(OctlensError, match=r"^n_per_class 1000000000: from 3"):
        synthesize(tmp_path / "a", 10**9)
    with pytest.raises(OctlensError, match=r"^size 100000x512"):
        synthesize(tmp_path / "b", 4, size=(100_000, 512))
    assert not list(tmp_path.iterdir())
