"""OCT data: reading folders and MedMNIST files safely, patient splits, transforms, synthesis,
and the confound scan (can the labels be read off what is not anatomy?)."""

from octlens.data.confound_scan import confound_scan
from octlens.data.dataset import OCTDataset, estimate_normalization
from octlens.data.index import DatasetIndex, DataWarning, Sample, scan
from octlens.data.splits import find_leakage, split_by_patient
from octlens.data.synth import synthesize
from octlens.data.transforms import Normalization, eval_transform, train_transform

__all__ = [
    "DataWarning",
    "DatasetIndex",
    "Normalization",
    "OCTDataset",
    "Sample",
    "confound_scan",
    "estimate_normalization",
    "eval_transform",
    "find_leakage",
    "scan",
    "split_by_patient",
    "synthesize",
    "train_transform",
]
