"""OCT data: reading folders and MedMNIST files safely, patient splits, transforms, synthesis,
and the confound scan (can the labels be read off what is not anatomy?)."""

from typing import TYPE_CHECKING, Any

from octlens.data.dataset import OCTDataset, estimate_normalization
from octlens.data.index import DatasetIndex, DataWarning, Sample, scan
from octlens.data.splits import find_leakage, split_by_patient
from octlens.data.synth import synthesize
from octlens.data.transforms import Normalization, eval_transform, train_transform

if TYPE_CHECKING:
    from octlens.data.dataset_scan import confound_scan

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


def __getattr__(name: str) -> Any:
    """The confound scan on first use: it brings scikit-learn and matplotlib, which reading and
    training never need."""
    if name == "confound_scan":
        from octlens.data.dataset_scan import confound_scan

        return confound_scan
    raise AttributeError(f"module 'octlens.data' has no attribute '{name}'")
