"""The JSON encoding of captures (the study's; small captures), and the checks every capture
passes whatever its encoding: metadata, keys, shapes and values, each a KitError naming the
file. docs/captures.md describes the format; tfjs_parity/wire.json names its parts.

A tensor is {"dtype": "float32", "shape": [...], "data": [...]} with `data` flat, in C order.
Numbers are written as the shortest decimal that reads back to the same float, so float32
values round-trip bit for bit; NaN, the infinities and -0 are the wire's strings."""
import json
import math
from pathlib import Path

import numpy as np

from . import KitError
from .wire import DTYPES, OUTPUT_SUFFIX, SPECIAL_NUMBERS, WEIGHTS_SUFFIX

MAX_RANK = 64            # numpy's limit on an array's dimensions
MAX_BYTES = 2 ** 62      # no shape may describe more bytes than this (numpy's sizes are int64)
MAX_METADATA_DEPTH = 32  # a capture's metadata is a few levels deep; deeper is not a capture


def encode_tensor(array):
    """A numpy array (int32 if it holds integers, float64 if it is float64, else float32) as
    a JSON-ready tensor dict."""
    array = np.asarray(array)
    dtype = storage_dtype(array)
    if dtype == "int32":
        return {"dtype": "int32", "shape": list(array.shape), "data": array.astype(np.int32).ravel().tolist()}
    values = array.astype(dtype).ravel().tolist()
    return {"dtype": dtype, "shape": list(array.shape), "data": [_encode_number(v) for v in values]}


def _encode_number(value):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0 and math.copysign(1.0, value) < 0:
        return "-0"
    return value


def decode_tensor(obj, where="tensor"):
    """A tensor dict back to a numpy array; KitError (naming `where`) when malformed."""
    if not isinstance(obj, dict) or not {"dtype", "shape", "data"} <= obj.keys():
        raise KitError(f"{where}: expected an object with dtype, shape and data")
    dtype, data = obj["dtype"], obj["data"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise KitError(f"{where}: dtype {shown_value(dtype)} is not one of {', '.join(DTYPES)}")
    shape = check_shape(obj["shape"], where)
    if not isinstance(data, list):
        raise KitError(f"{where}: data must be a list, not {json_type(data)}")
    if math.prod(shape) != len(data):
        raise KitError(f"{where}: shape {shape} needs {math.prod(shape)} values, data has {len(data)}")
    if dtype == "int32":
        if not all(type(v) is int and -2**31 <= v < 2**31 for v in data):
            bad = next(v for v in data if not (type(v) is int and -2**31 <= v < 2**31))
            raise KitError(f"{where}: int32 data holds {shown_value(bad)}, not a 32-bit integer")
        return np.array(data, dtype=np.int32).reshape(shape)
    return _float_array(_numbers(data, where), dtype, where).reshape(shape)


def check_shape(shape, where):
    """`shape` as a list of ints numpy can hold; KitError naming `where` when it is not one."""
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise KitError(f"{where}: shape {shown_value(shape)} is not a list of integers")
    if len(shape) > MAX_RANK:
        raise KitError(f"{where}: shape has {len(shape)} dimensions, more than {MAX_RANK}")
    if any(d < 0 for d in shape):
        raise KitError(f"{where}: shape {shape} has a negative dimension")
    if math.prod(d for d in shape if d) > MAX_BYTES // 8:
        raise KitError(f"{where}: shape {shown_value(shape)} is too large for any array")
    return shape


def _numbers(data, where):
    """Flat JSON values as Python floats: numbers, and the four special strings."""
    try:
        return [v if type(v) is float else (float(v) if type(v) is int else SPECIAL_NUMBERS[v]) for v in data]
    except OverflowError:
        raise KitError(f"{where}: data holds an integer too large for a float") from None
    except (KeyError, TypeError):
        bad = next(v for v in data if type(v) not in (float, int) and not (type(v) is str and v in SPECIAL_NUMBERS))
        raise KitError(f"{where}: data holds {shown_value(bad)}, not a number") from None


def _float_array(values, dtype, where):
    """Python floats as a float32/float64 array; a finite value beyond float32's range is an
    error (no float32 is written that way), not a silent infinity."""
    array = np.array(values, dtype=np.float64)
    if dtype == "float64":
        return array
    with np.errstate(over="ignore"):
        narrowed = array.astype(np.float32)
    if np.any(np.isinf(narrowed) & np.isfinite(array)):
        raise KitError(f"{where}: data holds a value beyond float32's range")
    return narrowed


def nested_array(value, where):
    """The study's nested lists (or a lone number) as a float32 array: regular, numbers only,
    at most MAX_RANK deep. Walked a level at a time, so no nesting can exhaust the stack."""
    shape, level = [], [value]
    while level:
        lists = sum(type(v) is list for v in level)
        if lists == 0:
            break
        if lists != len(level) or len({len(v) for v in level}) != 1:
            raise KitError(f"{where}: not a regular array (sub-lists of different lengths, or lists beside numbers)")
        if len(shape) == MAX_RANK:
            raise KitError(f"{where}: nested more than {MAX_RANK} deep")
        shape.append(len(level[0]))
        level = [v for sub in level for v in sub]
    return _float_array(_numbers(level, where), "float32", where).reshape(shape)


def check_metadata(metadata, source):
    """KitError naming `source` unless every metadata field the kit reads has the type its
    readers assume: labels and ids are one-line strings, descriptions strings (or null),
    groups of facts objects, timings numbers, inputs tensors. Unknown fields are kept as
    they are, but nothing anywhere may nest deeper than MAX_METADATA_DEPTH or hold text
    that is not Unicode."""
    if not isinstance(metadata, dict):
        raise KitError(f"{source}: not a capture (its metadata is not an object); was it written by this kit?")
    _check_tree(metadata, f"{source}: metadata")

    def where(name):
        return f"{source}: metadata.{name}"
    for name in ("runtime", "backend", "variant", "model_id", "device"):  # in labels, file names and one-line messages
        if name in metadata and not (isinstance(metadata[name], str) and metadata[name].isprintable()):
            raise KitError(f"{where(name)} is {shown_value(metadata[name])}, not a one-line string")
    for name in ("renderer", "gpu_vendor", "userAgent", "platform", "cpu", "created"):
        if metadata.get(name) is not None and not isinstance(metadata[name], str):
            raise KitError(f"{where(name)} is {json_type(metadata[name])}, not a string")
    for name in ("versions", "flags", "precision_flags", "evaluated_flags", "environment", "timing", "memory",
                 "repeat", "inputs", "model", "input_origin"):
        if name in metadata and not isinstance(metadata[name], dict):
            raise KitError(f"{where(name)} is {json_type(metadata[name])}, not an object")
    timing = metadata.get("timing")
    if timing:  # a report shows the median and counts the runs
        for name in ("median_ms", "runs_ms"):
            if name not in timing:
                raise KitError(f"{where('timing')} has no {name}")
        for name in ("median_ms", "warmup_ms", "min_ms", "max_ms", "budget_s", "repeat", "cold_ms", "load_ms"):
            if name in timing and not _is_number(timing[name]):
                raise KitError(f"{where('timing.' + name)} is {shown_value(timing[name])}, not a number")
        if not isinstance(timing["runs_ms"], list) or not all(_is_number(v) for v in timing["runs_ms"]):
            raise KitError(f"{where('timing.runs_ms')} is not a list of numbers")
    for name, value in (metadata.get("memory") or {}).items():  # the reports print these as numbers
        if not (_is_number(value) or isinstance(value, bool)):
            raise KitError(f"{where('memory.' + str(name))} is {shown_value(value)}, not a number")
    for name, tensor in metadata.get("inputs", {}).items():
        decode_tensor(tensor, f"{where('inputs')}[{name!r}]")
    if "input" in metadata:  # schema 1 from before named inputs
        decode_tensor(metadata["input"], where("input"))
    return metadata


def _check_tree(value, where):
    """No deeper than MAX_METADATA_DEPTH, and every string (keys too) encodable as UTF-8 (a
    lone surrogate from a JSON escape would fail when printed or written)."""
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > MAX_METADATA_DEPTH:
            raise KitError(f"{where} is nested more than {MAX_METADATA_DEPTH} deep")
        below = []
        for item in level:
            if isinstance(item, dict):
                for key, v in item.items():
                    _check_text(key, where)
                    if isinstance(v, (dict, list)):
                        below.append(v)
                    elif isinstance(v, str):
                        _check_text(v, where)
            elif isinstance(item, list):
                for v in item:
                    if isinstance(v, (dict, list)):
                        below.append(v)
                    elif isinstance(v, str):
                        _check_text(v, where)
        level = below


def _check_text(text, where):
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise KitError(f"{where} holds text that is not valid Unicode (a lone surrogate)") from None


def check_key(key, source, what="entry"):
    """A capture key: <layer>_weights or <layer>_output, printable (it is named in reports)."""
    if not isinstance(key, str) or not key.endswith((WEIGHTS_SUFFIX, OUTPUT_SUFFIX)):
        raise KitError(f"{source}: unexpected {what} {shown_value(key)} (expected <layer>_weights or "
                       "<layer>_output lists)")
    if not key.isprintable():
        raise KitError(f"{source}: key {shown_value(key)} holds a control or unprintable character")


def _is_number(value):
    """An int or float a report can format (bool is not a number here; nor is an int too large
    for a float)."""
    if type(value) is float:
        return True
    if type(value) is not int:
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def json_type(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def shown_value(value, limit=60):
    """A value for a one-line message: its repr, escaped and cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(path):
    """A file name for a one-line message: control characters escaped."""
    text = str(path)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def brief(error, limit=200):
    """A library's error message, as one short line."""
    text = " ".join(str(error).split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def storage_dtype(array):
    dtype = np.asarray(array).dtype
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return "int32"
    return "float64" if dtype == np.float64 else "float32"


def capture_document(metadata, tensors):
    """A capture as the JSON text of {"metadata": ..., key: [tensor, ...], ...}."""
    document = {"metadata": metadata}
    for key, arrays in tensors.items():
        document[key] = [encode_tensor(a) for a in arrays]
    return json.dumps(document, allow_nan=False)


def parse_capture(text, source="capture"):
    """(metadata, {key: [arrays]}) of a JSON capture, validated; KitError naming `source`
    when it is not one. The original study's files (no metadata) are read too."""
    try:
        document = json.loads(text)
    except RecursionError:
        raise KitError(f"{source}: not a capture (JSON nested too deep)") from None
    except json.JSONDecodeError as error:
        raise KitError(f"{source}: not valid JSON ({brief(error)})") from None
    if not isinstance(document, dict):
        raise KitError(f"{source}: not a capture (a JSON {type(document).__name__}); was it written by this kit?")
    if "metadata" not in document:
        return _study_document(document, source)
    metadata = check_metadata(document["metadata"], source)
    tensors = {}
    for key, value in document.items():
        if key == "metadata":
            continue
        check_key(key, source)
        if not isinstance(value, list):
            raise KitError(f"{source}: {key} is {json_type(value)}, not a list of tensors")
        if key.endswith(OUTPUT_SUFFIX) and not value:
            raise KitError(f"{source}: {key} holds no tensors")
        tensors[key] = [decode_tensor(t, f"{source}: {key}[{i}]") for i, t in enumerate(value)]
    if not any(key.endswith(OUTPUT_SUFFIX) for key in tensors):
        raise KitError(f"{source}: holds no layer outputs")
    return metadata, tensors


def _study_document(document, source):
    """The original study's files: `<layer>_weights`/`<layer>_output` lists of nested lists."""
    tensors = {}
    for key, value in document.items():
        if not key.endswith((WEIGHTS_SUFFIX, OUTPUT_SUFFIX)) or not isinstance(value, list) \
                or (key.endswith(OUTPUT_SUFFIX) and not value):
            raise KitError(f"{source}: not a capture (no metadata, and {shown_value(key)} is not a "
                           "<layer>_weights or <layer>_output list of arrays); was it written by this kit or "
                           "the study?")
        check_key(key, source)
        tensors[key] = [nested_array(v, f"{source}: {key}[{i}]") for i, v in enumerate(value)]
    if not any(key.endswith(OUTPUT_SUFFIX) for key in tensors):
        raise KitError(f"{source}: holds no layer outputs")
    name = Path(source).stem
    runtime = "python" if name.endswith("python") else ("browser" if "browser" in name else "node")
    return {"runtime": runtime, "backend": "study file", "schema": 0}, tensors
