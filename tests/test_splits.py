from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from octlens.data.index import Sample
from octlens.data.splits import split_by_patient


def _samples() -> list[Sample]:
    samples = []
    for patient in range(40):
        label = patient % 4
        for scan in range(1 + patient % 5):  # 1 to 5 scans per patient
            samples.append(Sample(Path(f"{label}-{patient}-{scan}.png"), label, str(patient)))
    samples += [Sample(Path(f"renamed-{i}.png"), i % 4, "") for i in range(8)]
    return samples


def test_carving_is_by_patient_and_keeps_every_scan():
    samples = _samples()
    kept, carved = split_by_patient(samples, 0.2, seed=1)
    assert sorted(map(str, kept + carved)) == sorted(map(str, samples))
    kept_patients = {s.patient for s in kept if s.patient}
    carved_patients = {s.patient for s in carved if s.patient}
    assert kept_patients and carved_patients and not kept_patients & carved_patients
    assert 0.12 * len(samples) <= len(carved) <= 0.3 * len(samples)
    assert set(Counter(s.label for s in carved)) == {0, 1, 2, 3}


def test_carving_is_seeded():
    samples = _samples()
    assert split_by_patient(samples, 0.2, seed=3) == split_by_patient(samples, 0.2, seed=3)
    assert split_by_patient(samples, 0.2, seed=3) != split_by_patient(samples, 0.2, seed=4)


def test_fraction_must_be_a_fraction():
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_by_patient(_samples(), 1.0)


def test_carving_the_real_dev_sample_keeps_patients_apart(real_dev):
    from octlens.data.index import scan

    samples = scan(real_dev).split("all")
    kept, carved = split_by_patient(samples, 0.25, seed=0)
    kept_patients = {s.patient for s in kept if s.patient}
    carved_patients = {s.patient for s in carved if s.patient}
    assert carved_patients and not kept_patients & carved_patients
    assert len(kept) + len(carved) == len(samples) == 139
