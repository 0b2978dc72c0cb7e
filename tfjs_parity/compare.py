"""Layer-by-layer comparison of two captures. Returns data; printing is report.py's job."""
from dataclasses import dataclass

import numpy as np

from . import KitError


@dataclass
class TensorDiff:
    """One tensor of one key, e.g. dense_1_output[0], compared between two captures."""
    key: str
    index: int
    size: int
    different_values: int
    average_difference: float  # the study's metric: sum(|a - b|) / size, in float64

    @property
    def name(self):
        return f"{self.key}[{self.index}]"


@dataclass
class CaptureDiff:
    reference: str  # labels of the two captures
    other: str
    tensors: list

    @property
    def identical(self):
        return all(t.different_values == 0 for t in self.tensors)

    def __bool__(self):
        return self.identical


def diff_arrays(a, b):
    """(count of differing values, the study's average difference) for two same-shape arrays.

    Computed as the study did (float64, sum then divide) so its printed figures are
    reproduced digit for digit. NaN counts as different from everything, as in numpy."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return int(np.sum(a != b)), float(np.sum(np.abs(a - b)) / np.size(a))


def compare_captures(reference, other):
    """Compare every tensor of `reference` with the same tensor of `other`.

    Raises KitError naming the first layer whose tensors are missing or shaped differently."""
    missing = [k for k in reference.tensors if k not in other.tensors]
    extra = [k for k in other.tensors if k not in reference.tensors]
    if missing or extra:
        key = (missing or extra)[0]
        where = other.label if missing else reference.label
        raise KitError(
            f"layer {_layer_of(key)}: {key} is missing from {where}; "
            f"the captures are of different models (rebuild with create_keras_model.py and rerun)")
    diffs = []
    for key, arrays in reference.tensors.items():
        theirs = other.tensors[key]
        if len(arrays) != len(theirs):
            raise KitError(f"layer {_layer_of(key)}: {key} has {len(arrays)} tensors in "
                           f"{reference.label} but {len(theirs)} in {other.label}")
        for index, (a, b) in enumerate(zip(arrays, theirs)):
            if a.shape != b.shape:
                raise KitError(f"layer {_layer_of(key)}: {key}[{index}] has shape {list(a.shape)} in "
                               f"{reference.label} but {list(b.shape)} in {other.label}")
            count, average = diff_arrays(a, b)
            diffs.append(TensorDiff(key, index, a.size, count, average))
    return CaptureDiff(reference.label, other.label, diffs)


def _layer_of(key):
    return key.rsplit("_", 1)[0]
