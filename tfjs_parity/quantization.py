"""Weight quantization: what tensorflowjs_converter's --quantize_float16 / --quantize_uint8 /
--quantize_uint16 do to a model, and what that costs.

The converter quantizes each chosen float32 weight on its own: uint8/uint16 on an affine
grid (value = min + k * scale, the range nudged so that zero is on the grid), float16 by
rounding. Every runtime (TF Python included: it reads the converted weights back) holds the
dequantized values, so two questions are answered apart:

- is each runtime right about the quantized model? The float64 reference is the quantized
  model's (its dequantized weights), and every point is judged against it as always;
- what does quantization cost? The unquantized model's exact answer, saved beside
  (UNQUANTIZED_CAPTURE), against the quantized model's, point by point.

A weight is judged against its original: within half a step of the quantization grid it is
"quantized"; beyond, a mismatch (a weight file that is not what the converter wrote).
"""
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import KitError
from .files import atomic_write_text, write_error
from .numerics import FLOAT32, joined, storage_precision

MODES = ("float16", "uint8", "uint16")
UNQUANTIZED_CAPTURE = "keras_model_unquantized_float64.json"  # the unquantized model's exact answer


def parse(values):
    """The converter's quantization_dtype_map from --quantize values (MODE or
    MODE=PATTERN,...; the flag may be repeated): {mode: True (every other weight) or
    [patterns]}; KitError naming a value that is not one."""
    result = {}
    for value in values or ():
        mode, _, patterns = value.partition("=")
        if mode not in MODES:
            raise KitError(f"--quantize {value}: the mode is one of {', '.join(MODES)} (optionally "
                           "=WEIGHT_PATTERN,... : the weights it applies to, by name or wildcard)")
        if not _:
            if True in result.values():
                raise KitError(f"--quantize {value}: only one mode may apply to every weight; give the others "
                               "=WEIGHT_PATTERN")
            if mode in result:
                raise KitError(f"--quantize {value}: {mode} is given both for every weight and for patterns")
            result[mode] = True
            continue
        names = [p.strip() for p in patterns.split(",")]
        if not all(names):
            raise KitError(f"--quantize {value}: an empty weight pattern; give names or wildcards, comma-separated")
        if result.get(mode) is True:
            raise KitError(f"--quantize {value}: {mode} is given both for every weight and for patterns")
        result[mode] = result.get(mode, []) + names
    return result


def described(qmap):
    """The flags that give `qmap`, as the user would type them."""
    return " ".join(f"--quantize {mode}" if patterns is True else f"--quantize {mode}={','.join(patterns)}"
                    for mode, patterns in qmap.items())


def manifest_quantization(manifest):
    """{weight name: {"dtype", "scale", "min"}} of the quantized weights a weightsManifest lists."""
    found = {}
    for group in manifest:
        for weight in group.get("weights", []):
            q = weight.get("quantization") if isinstance(weight, dict) else None
            if q is None:
                continue
            if not isinstance(q, dict) or q.get("dtype") not in MODES or \
                    (q["dtype"] != "float16" and not all(isinstance(q.get(k), (int, float)) for k in ("scale", "min"))):
                raise KitError(f"weight {weight.get('name')!r} is quantized in a way the kit does not know "
                               f"({json.dumps(q)[:120]}); the converter writes float16, or uint8/uint16 with a "
                               "scale and a min")
            found[weight["name"]] = {k: q[k] for k in ("dtype", "scale", "min") if k in q}
    return found


# bytes per value of each dtype a weightsManifest names (tfjs-core's DTYPE_VALUE_SIZE_MAP)
STORED = {"float32": np.float32, "int32": np.int32, "bool": np.uint8, "uint8": np.uint8, "uint16": np.uint16,
          "float16": np.float16}


def decoded_weights(folder, manifest):
    """The weights of a converted model in `folder`, decoded as tfjs decodes them (tfjs-core's
    io_utils decodeWeight), bit for bit: [[{"name", "data"}, ...] per group of `manifest`].
    Each group's files are one buffer, its weights one after another. uint8/uint16 values are
    v * scale + min in double precision (JavaScript's numbers), then float32 (or, for an int32
    weight, Math.round: half up); float16 widened exactly; bool as 0/1. The converter's Python
    reader is not used: under NumPy 2 it computes in the codes' own dtype and fails on the
    integer min and scale older converters wrote ("Python integer -1 out of bounds for uint8")."""
    groups = []
    for group in manifest:
        buffer = b"".join((Path(folder) / name).read_bytes() for name in group["paths"])
        offset, entries = 0, []
        for weight in group["weights"]:
            data, offset = _decode_weight(weight, buffer, offset)
            entries.append({"name": weight["name"], "data": data})
        groups.append(entries)
    return groups


def _decode_weight(weight, buffer, offset):
    """(the weight's values, the offset after them) from `buffer` at `offset`."""
    name, dtype = weight["name"], weight.get("dtype", "float32")
    shape = weight.get("shape", [])
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ValueError(f"weight {name!r} has shape {str(shape)[:60]}, not a list of sizes")
    if dtype == "string":
        return _decode_strings(name, shape, buffer, offset)
    if dtype not in ("float32", "int32", "bool"):
        raise ValueError(f"weight {name!r} has dtype {str(dtype)[:20]!r}; tfjs decodes float32, int32, bool and "
                         "string weights")
    q = weight.get("quantization")
    stored = STORED[q["dtype"] if q else dtype]
    size = int(np.prod(shape, dtype=np.int64))
    end = offset + size * np.dtype(stored).itemsize
    if end > len(buffer):
        raise ValueError(f"weight {name!r} needs bytes {offset:,} to {end:,} of its group's files, which hold "
                         f"{len(buffer):,}")
    codes = np.frombuffer(buffer, stored, size, offset)
    if q is None:
        data = codes.astype(bool) if dtype == "bool" else codes.copy()
    elif q["dtype"] == "float16":
        if dtype != "float32":
            raise ValueError(f"weight {name!r}: float16 quantization of a {dtype} weight (tfjs refuses it)")
        data = codes.astype(np.float32)
    else:
        if dtype == "bool":
            raise ValueError(f"weight {name!r}: {q['dtype']} quantization of a bool weight (tfjs refuses it)")
        values = codes.astype(np.float64) * float(q["scale"]) + float(q["min"])
        data = np.floor(values + 0.5).astype(np.int32) if dtype == "int32" else values.astype(np.float32)
    return data.reshape(shape), end


def _decode_strings(name, shape, buffer, offset):
    """A string weight as tfjs decodes it: each value a uint32 (little-endian) byte length,
    then its bytes; an object array of bytes."""
    values = []
    for _ in range(int(np.prod(shape, dtype=np.int64))):
        if offset + 4 > len(buffer):
            raise ValueError(f"string weight {name!r} runs past its group's files")
        length = int.from_bytes(buffer[offset:offset + 4], "little")
        offset += 4
        if offset + length > len(buffer):
            raise ValueError(f"string weight {name!r} runs past its group's files")
        values.append(bytes(buffer[offset:offset + length]))
        offset += length
    return np.array(values, dtype=object).reshape(shape), offset


def quantize_converted(model_dir, qmap):
    """Quantize the weights of the unquantized tfjs model converted in `model_dir`, in place,
    as the converter does with the same quantization_dtype_map (its write_weights: the code
    every converter path hands the map to). Returns manifest_quantization of the result.
    KitError naming a pattern that matches no float32 weight."""
    from tensorflowjs import write_weights
    model_json = model_dir / "model.json"
    document = json.loads(model_json.read_text())
    manifest = document["weightsManifest"]
    try:
        groups = decoded_weights(model_dir, manifest)
    except (ValueError, OSError) as error:
        raise KitError(f"the converted model's weights do not decode ({' '.join(str(error).split())[:200]})") from None
    floats = [entry["name"] for group in groups for entry in group if entry["data"].dtype == np.float32]
    for mode, patterns in qmap.items():
        for pattern in ([] if patterns is True else patterns):
            if not fnmatch.filter(floats, pattern):
                shown = ", ".join(floats[:6]) + (", ..." if len(floats) > 6 else "")
                raise KitError(f"--quantize {mode}={pattern}: the pattern matches no float32 weight of the model "
                               f"(its weights are named {shown})")
    if not floats:
        raise KitError("--quantize: the model has no float32 weights to quantize")
    old_files = {name for group in manifest for name in group["paths"]}
    try:
        for name in old_files:
            (model_dir / name).unlink()
        try:
            new_manifest = write_weights.write_weights(groups, str(model_dir), write_manifest=False,
                                                         quantization_dtype_map=qmap)
        except ValueError as error:  # the converter's: two modes' patterns match one weight
            raise KitError(f"--quantize: {' '.join(str(error).split())[:200]}; give each weight one mode") from None
        document["weightsManifest"] = new_manifest
        atomic_write_text(model_json, json.dumps(document))
    except OSError as error:
        raise write_error(model_dir, error) from None
    return manifest_quantization(new_manifest)


def adopt_weights(source_json, model_dir):
    """Replace the weights of the model converted in `model_dir` with the quantized weight
    files of `source_json` (a layers model.json given quantized, that very model converted
    again: the same weights by name and shape), so every runtime reads the user's own bytes.
    Returns manifest_quantization of them."""
    import shutil
    source_json = Path(source_json)
    document = json.loads((model_dir / "model.json").read_text())
    theirs = json.loads(source_json.read_text())["weightsManifest"]

    def shapes(manifest):
        return {w["name"]: list(w.get("shape", [])) for group in manifest for w in group["weights"]}
    if shapes(theirs) != shapes(document["weightsManifest"]):
        raise KitError(f"--model {source_json}: its weights do not match the model it describes, by name and shape; "
                       "convert the model again")
    try:
        for group in document["weightsManifest"]:
            for name in group["paths"]:
                (model_dir / name).unlink()
        for group in theirs:
            for name in group["paths"]:
                shutil.copyfile(source_json.parent / name, model_dir / name)
        document["weightsManifest"] = theirs
        atomic_write_text(model_dir / "model.json", json.dumps(document))
    except OSError as error:
        raise write_error(model_dir, error) from None
    return manifest_quantization(theirs)


def plan_section(qmap, weights, points, outputs):
    """The probe plan's record of a quantized model (Plan.quantization): how it was given
    (`qmap`: by --quantize; None: a model given quantized, with no original), each quantized
    weight's scheme, each point's weights by name, the model's outputs."""
    return {"given": described(qmap) if qmap else "given quantized", "original": bool(qmap), "weights": weights,
            "points": {name: names for name, names in points.items() if any(n in weights for n in names)},
            "outputs": outputs}


# --- judging a quantized weight ----------------------------------------------------------------

@dataclass
class WeightCheck:
    dtype: str
    step: float        # the grid's step (uint: the scale; float16: the spacing at the largest value)
    error_steps: float  # the largest |weight - original| in steps of the grid where it lies
    within: bool       # every value within half a step (of the original), or on the grid (no original)
    index: tuple = ()  # the worst element


@dataclass
class Quantized:
    """A quantized model's weights, for judging: each point's (scheme, original) per weight
    (original None for a model given quantized: there is none)."""
    plan: object
    unquantized: object = None  # the unquantized model's float64 capture: its weights are the originals

    def of(self, point):
        section = self.plan.quantization
        names = section.get("points", {}).get(point.name)
        if not names:
            return None
        originals = self.unquantized.weights(point.name) if self.unquantized is not None else [None] * len(names)
        return [None if name not in section["weights"] else (section["weights"][name], original)
                for name, original in zip(names, originals)]


def check_weight(weight, original, scheme, dequantized=None, precision=None):
    """A runtime's `weight` against its `original` (float32, before quantization) under
    `scheme` ({"dtype", "scale", "min"}): within half a step of the grid, allowing the float32
    rounding of the dequantization itself. Without an original (a model given quantized),
    against the `dequantized` values the weight file holds: equal, or a mismatch.
    `precision`: the runtime's storage (numerics.storage_precision); one that stores weights
    in less than float32 (float16 textures) has its own rounding allowed on top."""
    storage_unit = precision.unit_roundoff if precision is not None and precision is not FLOAT32 else 0.0
    w = np.asarray(weight, np.float64)
    stored = storage_unit * np.abs(w) + (2.0 ** -25 if storage_unit else 0.0)
    truth = np.asarray(original if original is not None else dequantized, np.float64)
    if scheme["dtype"] == "float16":
        magnitude = np.abs(truth)
        exponent = np.floor(np.log2(np.where(magnitude > 0, magnitude, 1.0)))
        steps = np.where(magnitude >= 2.0 ** -14, 2.0 ** (np.maximum(exponent, -14) - 10), 2.0 ** -24)
        step = float(2.0 ** (max(np.floor(np.log2(max(float(np.max(magnitude, initial=0)), 2 ** -14))), -14) - 10))
        slack = 0.0
    else:
        steps = np.full(w.shape, float(scheme["scale"]))
        step = float(scheme["scale"])
        slack = 2.0 ** -24 * np.abs(w) / step + 1e-9  # float32(k * scale + min): one more rounding
    with np.errstate(invalid="ignore"):
        error = np.maximum(np.abs(w - truth) - stored, 0.0) / steps
    error = np.where(np.isnan(error) & (np.isnan(w) == np.isnan(truth)), 0.0, error)
    worst = int(np.argmax(np.where(np.isnan(error), np.inf, error))) if error.size else 0
    largest = float(error.ravel()[worst]) if error.size else 0.0
    if original is None:
        within = bool(np.array_equal(w, truth, equal_nan=True)) or (storage_unit > 0 and bool(np.all(error == 0)))
    else:
        within = bool(np.all(error <= 0.5 + slack))
    index = tuple(int(v) for v in np.unravel_index(worst, w.shape)) if w.size else ()
    return WeightCheck(scheme["dtype"], step, largest, within, index)


# --- what quantization costs ---------------------------------------------------------------------

def cost(plan, quantized, unquantized):
    """How far quantization alone moves the model, from the two exact answers (the quantized
    model's float64 capture and the unquantized one's): per point, max |q - u| / max |u|;
    where it grows most; and for each model output the max and mean relative change and,
    for a classifier-like output, how often the top-1 class stays."""
    points = []
    by_name = {}
    for point in plan.points:
        q, u = (joined(c.outputs(point.name)).astype(np.float64) for c in (quantized, unquantized))
        magnitude = float(np.max(np.abs(u), initial=0.0))
        with np.errstate(invalid="ignore"):
            change = float(np.max(np.abs(q - u), initial=0.0))
        relative = change / magnitude if magnitude > 0 else (0.0 if change == 0 else float("inf"))
        fed = max((by_name.get(s.get("point"), 0.0) for s in point.sources), default=0.0)
        by_name[point.name] = relative
        points.append({"point": point.name, "relative": relative, "added": relative - fed})
    largest = max(points, key=lambda p: p["relative"], default=None)
    grows = max(points, key=lambda p: p["added"], default=None)
    outputs = []
    for entry in plan.quantization.get("outputs", []):
        q = np.asarray(quantized.outputs(entry["point"])[entry["index"]], np.float64)
        u = np.asarray(unquantized.outputs(entry["point"])[entry["index"]], np.float64)
        magnitude = float(np.max(np.abs(u), initial=0.0)) or 1.0
        relative = np.abs(q - u) / magnitude
        figures = {"output": f"{entry['point']}[{entry['index']}]", "max_relative": float(np.max(relative, initial=0)),
                   "mean_relative": float(np.mean(relative)) if relative.size else 0.0}
        if q.ndim >= 2 and q.shape[-1] >= 2:  # a softmax, or a last axis read as logits
            same = np.argmax(q, axis=-1) == np.argmax(u, axis=-1)
            figures.update(top1_same=int(np.sum(same)), top1_of=int(same.size),
                           classifier="softmax" if entry.get("softmax") else "last axis read as logits")
        outputs.append(figures)
    return {"points": points, "largest": largest and largest["point"], "grows_most": grows and grows["point"],
            "outputs": outputs}


def weight_rows(plan, captures, unquantized):
    """A row per quantized weight: its scheme's step and the largest error any capture's copy
    of it has against its original (in steps), and whether every copy is within half a step.
    `captures[0]`: TF Python's, whose weights are the dequantized values of the files."""
    rows, quantized = [], Quantized(plan, unquantized)
    for point in plan.points:
        for i, scheme in enumerate(quantized.of(point) or []):
            if scheme is None:
                continue
            dequantized = captures[0].weights(point.name)[i]
            checks = [check_weight(c.weights(point.name)[i], scheme[1], scheme[0], dequantized, storage_precision(c))
                      for c in captures if len(c.weights(point.name)) > i]
            rows.append({"weight": plan.quantization["points"][point.name][i], "point": point.name,
                         "dtype": checks[0].dtype, "step": checks[0].step,
                         "largest_error_steps": max(c.error_steps for c in checks),
                         "within": all(c.within for c in checks)})
    return rows
