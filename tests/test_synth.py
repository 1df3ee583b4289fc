from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from octlens.data.index import scan
from octlens.data.synth import CLASSES, draw_patient, plan_scans, render_job, render_scan


def test_same_seed_same_scan_and_other_seed_other_scan():
    job = plan_scans(6, seed=5)[0]
    first, again = render_job(job), render_job(job)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.lesion, again.lesion)
    other = render_job(plan_scans(6, seed=6)[0])
    assert not np.array_equal(first.image, other.image)


@pytest.mark.parametrize("label", CLASSES)
def test_mask_geometry(label):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        scan_ = render_scan(label, draw_patient(rng), rng)
        assert scan_.image.shape == scan_.lesion.shape == scan_.retina.shape == (496, 512)
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
