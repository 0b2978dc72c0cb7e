"""Layer-by-layer comparison of two captures. Returns data; printing is report.py's job."""
from dataclasses import dataclass

import numpy as np

from . import KitError
from .wire import OUTPUT_SUFFIX


@dataclass
class TensorDiff:
    """One tensor of one key, e.g. dense_1_output[0], compared between two captures."""
    key: str
    index: int
    size: int
    different_values: int
    average_difference: float  # the study's metric: sum(|a - b|) / size, in float64
    shapes: tuple = None       # (reference's, other's) when the two are shaped differently

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
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, a signalling NaN widens to a quiet one: not warned about
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        return int(np.sum(a != b)), float(np.sum(np.abs(a - b)) / np.size(a))


def compare_captures(reference, other):
    """Compare every tensor of `reference` with the same tensor of `other`. An output shaped
    differently is a difference of every value (NaN average), with both shapes: a runtime that
    computes another shape at one layer is a finding there, not the end of the report.

    Raises KitError naming the first layer whose tensors are missing, counted differently,
    or whose weights are shaped differently (then the captures are of different models)."""
    check_layout(reference, other)
    diffs = []
    for key, arrays in reference.tensors.items():
        for index, (a, b) in enumerate(zip(arrays, other.tensors[key])):
            if np.shape(a) != np.shape(b):
                diffs.append(TensorDiff(key, index, max(np.size(a), np.size(b)), max(np.size(a), np.size(b)),
                                        float("nan"), (list(np.shape(a)), list(np.shape(b)))))
                continue
            count, average = diff_arrays(a, b)
            diffs.append(TensorDiff(key, index, a.size, count, average))
    return CaptureDiff(reference.label, other.label, diffs)


def check_layout(reference, other):
    """KitError naming the first layer whose tensors are missing from one capture, counted
    differently, or whose weights are shaped differently: the captures are of different
    models (read from shapes: a binary capture's tensors are not loaded). An output shaped
    differently passes: it is judged at its layer."""
    missing = [k for k in reference.tensors if k not in other.tensors]
    extra = [k for k in other.tensors if k not in reference.tensors]
    if missing or extra:
        key = (missing or extra)[0]
        where = other.label if missing else reference.label
        raise KitError(
            f"layer {_layer_of(key)}: {key} is missing from {where}; "
            f"the captures are of different models (rebuild with create_keras_model.py and rerun)")
    for key in reference.tensors:
        ours, theirs = _shapes(reference, key), _shapes(other, key)
        if len(ours) != len(theirs):
            raise KitError(f"layer {_layer_of(key)}: {key} has {len(ours)} tensors in "
                           f"{reference.label} but {len(theirs)} in {other.label}")
        for index, (a, b) in enumerate(zip(ours, theirs)):
            if a != b and not key.endswith(OUTPUT_SUFFIX):
                raise KitError(f"layer {_layer_of(key)}: {key}[{index}] has shape {a} in "
                               f"{reference.label} but {b} in {other.label}")


def _shapes(capture, key):
    shapes = getattr(capture.tensors, "shapes", None)  # a safetensors capture knows them unread
    if shapes is not None and key not in getattr(capture.tensors, "replaced", {}):
        count = capture.tensors.keys_and_counts[key]
        return [list(shapes[f"{key}/{i}"]) for i in range(count)]
    return [list(np.shape(a)) for a in capture.tensors[key]]


def check_same_model(converted_dir, captures):
    """KitError naming the first capture (of [(path, Capture)]) made from another model than
    the one in `converted_dir` (by the model id each records; Python's capture, the first,
    decides when the folder holds no model). Captures from before model ids pass."""
    from .plan import PLAN_FILE, Plan
    from .runners import script_of
    plan_file = converted_dir / PLAN_FILE
    truth = Plan.load(plan_file).model_id if plan_file.is_file() else ""
    where = f"the model in {converted_dir}/" if truth else f"{captures[0][0]}'s"
    truth = truth or captures[0][1].metadata.get("model_id")
    for path, capture in captures:
        theirs = capture.metadata.get("model_id")
        if truth and theirs and theirs != truth:
            script = script_of(capture.metadata.get("runtime"))
            again = f"run `python {script}` again" if script else "make it again"
            raise KitError(f"{path} is stale: it was made from another model (id {theirs}) than {where} "
                           f"(id {truth}); {again} (with the same options)")


def _layer_of(key):
    return key.rsplit("_", 1)[0]


@dataclass
class Metrics:
    """One layer output of one runtime against a reference (Python's or the float64 one)."""
    different_values: int     # elements not equal (NaN never equals)
    average_difference: float  # the study's metric
    max_abs: float            # max |a - r|
    max_rel: float            # max |a - r| / max |r|: scaled by the layer, so zero crossings cannot blow it up
    ulp_max: float            # |a - r| in units of the float32 spacing at r
    ulp_median: float
    nonfinite: int            # NaN or infinite values where the reference is finite
    magnitude: float          # max |r| over its finite values


def measure(a, r):
    """Metrics of `a` against reference `r`. Equal values (same-signed infinities included)
    differ by 0; NaN against a number, or infinity against anything else, by NaN/inf."""
    with np.errstate(invalid="ignore"):
        a = np.asarray(a, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(a - r)
        total = float(np.sum(error))
        finite = np.isfinite(total)
        if not finite:  # NaN or infinities somewhere: equal ones (inf == inf, NaN and NaN) differ by 0
            same = (a == r) | (np.isnan(a) & np.isnan(r))
            error = np.where(same, 0.0, error)
        magnitude = float(np.max(np.abs(r), initial=0.0)) if finite else \
            float(np.max(np.abs(r[np.isfinite(r)]), initial=0.0))
        ulps = error / np.spacing(np.abs(r).astype(np.float32)).astype(np.float64)
        if not finite:
            ulps = np.where(same, 0.0, ulps)
    max_abs = _nan_max(error)
    return Metrics(
        different_values=int(a.size - np.count_nonzero(a == r)),  # NaN differs from everything, as in numpy
        average_difference=total / a.size if a.size else float("nan"),  # the study's: sum(|a - r|) / size
        max_abs=max_abs,
        max_rel=max_abs / magnitude if magnitude > 0 else (0.0 if max_abs == 0 else float("inf")),
        ulp_max=_nan_max(ulps),
        ulp_median=float(np.median(ulps)) if ulps.size else 0.0,
        nonfinite=0 if finite else int(np.sum(~np.isfinite(a) & np.isfinite(r))),
        magnitude=magnitude,
    )


def _nan_max(values):
    """max, but NaN when any value is NaN (a NaN must never hide behind a larger number)."""
    return float(np.max(values, initial=0.0)) if not np.any(np.isnan(values)) else float("nan")
