"""The capture formats: what every runtime saves, as JSON or as safetensors, on every side.

A capture is metadata plus, per key, a list of tensors. Two encodings of the same thing:

JSON (the study's; small captures). A capture is a JSON object. Its `metadata` entry says who produced it; every other entry
keeps the original study's keys and holds a list of tensors:

    {"metadata": {"schema": 1, "runtime": "node", "backend": "tensorflow", ...},
     "dense_0_weights": [<kernel>, <bias>],
     "dense_0_output": [<output>], ...}

A tensor is {"dtype": "float32", "shape": [...], "data": [...]} with `data` flat, in C
order. Numbers are written as the shortest decimal that reads back to the same float, so
float32 values round-trip bit for bit. JSON has no NaN, infinities or negative zero, so
those four are written as the strings "NaN", "Infinity", "-Infinity" and "-0"
(inference_common.js does the same on the JS side). The original study's own files (no
metadata, nested lists) are read too.

safetensors (big captures: raw little-endian tensors, memory-mappable, read with the
`safetensors` library). An 8-byte header length, a JSON header naming each tensor
`<key>/<index>` with its dtype (F32, F64, I32), shape and byte range, then the bytes. The
header's `__metadata__` holds one string, `capture`: the JSON of {"metadata": ...,
"keys": [[key, tensor count], ...]} (safetensors metadata is str -> str; the key list keeps
the study's order). Tensors are read one key at a time, so a comparison holds one layer in
memory, not the model.

Whatever a file holds, reading it ends in a Capture or in one KitError naming the file:
every tensor's dtype, shape and values, the key list and the metadata fields the kit reads
(check_metadata) are checked when the file is loaded, not when a report first uses them.
"""
import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import KitError
from .files import atomic_file, atomic_write_text
from .wire import (CAPTURE_METADATA_KEY, DTYPES, OUTPUT_SUFFIX, SAFETENSORS_DTYPES, SPECIAL_NUMBERS,
                   WEIGHTS_SUFFIX, read_safetensors_header)

FORMATS = {"json": ".json", "safetensors": ".safetensors"}
# More values than this and JSON is not practical (about 10-20 bytes a value, parsed into
# Python floats): the capture is written as safetensors unless --format says otherwise.
JSON_LIMIT = 1_000_000
MAX_RANK = 64            # numpy's limit on an array's dimensions
MAX_BYTES = 2 ** 62      # no shape may describe more bytes than this (numpy's sizes are int64)
MAX_METADATA_DEPTH = 32  # a capture's metadata is a few levels deep; deeper is not a capture


def encode_tensor(array):
    """A numpy array (int32 if it holds integers, float64 if it is float64, else float32) as
    a JSON-ready tensor dict."""
    array = np.asarray(array)
    dtype = _storage_dtype(array)
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
        raise KitError(f"{where}: dtype {_shown_value(dtype)} is not one of {', '.join(DTYPES)}")
    shape = check_shape(obj["shape"], where)
    if not isinstance(data, list):
        raise KitError(f"{where}: data must be a list, not {_json_type(data)}")
    if math.prod(shape) != len(data):
        raise KitError(f"{where}: shape {shape} needs {math.prod(shape)} values, data has {len(data)}")
    if dtype == "int32":
        if not all(type(v) is int and -2**31 <= v < 2**31 for v in data):
            bad = next(v for v in data if not (type(v) is int and -2**31 <= v < 2**31))
            raise KitError(f"{where}: int32 data holds {_shown_value(bad)}, not a 32-bit integer")
        return np.array(data, dtype=np.int32).reshape(shape)
    return _float_array(_numbers(data, where), dtype, where).reshape(shape)


def check_shape(shape, where):
    """`shape` as a list of ints numpy can hold; KitError naming `where` when it is not one."""
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise KitError(f"{where}: shape {_shown_value(shape)} is not a list of integers")
    if len(shape) > MAX_RANK:
        raise KitError(f"{where}: shape has {len(shape)} dimensions, more than {MAX_RANK}")
    if any(d < 0 for d in shape):
        raise KitError(f"{where}: shape {shape} has a negative dimension")
    if math.prod(d for d in shape if d) > MAX_BYTES // 8:
        raise KitError(f"{where}: shape {_shown_value(shape)} is too large for any array")
    return shape


def _numbers(data, where):
    """Flat JSON values as Python floats: numbers, and the four special strings."""
    try:
        return [v if type(v) is float else (float(v) if type(v) is int else SPECIAL_NUMBERS[v]) for v in data]
    except OverflowError:
        raise KitError(f"{where}: data holds an integer too large for a float") from None
    except (KeyError, TypeError):
        bad = next(v for v in data if type(v) not in (float, int) and not (type(v) is str and v in SPECIAL_NUMBERS))
        raise KitError(f"{where}: data holds {_shown_value(bad)}, not a number") from None


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


def _nested_array(value, where):
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
            raise KitError(f"{where(name)} is {_shown_value(metadata[name])}, not a one-line string")
    for name in ("renderer", "gpu_vendor", "userAgent", "platform", "cpu", "created"):
        if metadata.get(name) is not None and not isinstance(metadata[name], str):
            raise KitError(f"{where(name)} is {_json_type(metadata[name])}, not a string")
    for name in ("versions", "flags", "precision_flags", "evaluated_flags", "environment", "timing", "inputs",
                 "model", "input_origin"):
        if name in metadata and not isinstance(metadata[name], dict):
            raise KitError(f"{where(name)} is {_json_type(metadata[name])}, not an object")
    timing = metadata.get("timing")
    if timing:  # a report shows the median and counts the runs
        for name in ("median_ms", "runs_ms"):
            if name not in timing:
                raise KitError(f"{where('timing')} has no {name}")
        for name in ("median_ms", "warmup_ms", "min_ms", "max_ms", "budget_s", "repeat"):
            if name in timing and not _is_number(timing[name]):
                raise KitError(f"{where('timing.' + name)} is {_shown_value(timing[name])}, not a number")
        if not isinstance(timing["runs_ms"], list) or not all(_is_number(v) for v in timing["runs_ms"]):
            raise KitError(f"{where('timing.runs_ms')} is not a list of numbers")
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


def _check_key(key, source, what="entry"):
    """A capture key: <layer>_weights or <layer>_output, printable (it is named in reports)."""
    if not isinstance(key, str) or not key.endswith((WEIGHTS_SUFFIX, OUTPUT_SUFFIX)):
        raise KitError(f"{source}: unexpected {what} {_shown_value(key)} (expected <layer>_weights or "
                       "<layer>_output lists)")
    if not key.isprintable():
        raise KitError(f"{source}: key {_shown_value(key)} holds a control or unprintable character")


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


def _json_type(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _shown_value(value, limit=60):
    """A value for a one-line message: its repr, escaped and cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(path):
    """A file name for a one-line message: control characters escaped."""
    text = str(path)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _brief(error, limit=200):
    """A library's error message, as one short line."""
    text = " ".join(str(error).split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Capture:
    """One runtime's result: metadata plus, per key, a list of arrays (study key order).
    `source`: the file it was read from, if any (named in errors)."""
    metadata: dict
    tensors: dict = field(default_factory=dict)
    source: str = ""

    @property
    def label(self):
        """Who produced it, e.g. 'node/tensorflow' or 'browser/webgl/f16'."""
        parts = [self.metadata.get("runtime", "?"), self.metadata.get("backend", "?"), self.metadata.get("variant")]
        return "/".join(str(p) for p in parts if p)

    @property
    def inputs(self):
        """{input name: array} the model was run on (saved in the metadata); {} if not saved.
        Captures of schema 1 from before named inputs hold one unnamed `input`."""
        if isinstance(self.metadata.get("inputs"), dict):
            return {name: decode_tensor(t, f"metadata.inputs.{name}") for name, t in self.metadata["inputs"].items()}
        if "input" in self.metadata:
            return {None: decode_tensor(self.metadata["input"], "metadata.input")}
        return {}

    @property
    def layer_names(self):
        """The capture points, in order (a layer's name, or <layer>_call<k> for a shared layer)."""
        return [key[: -len(OUTPUT_SUFFIX)] for key in self.tensors if key.endswith(OUTPUT_SUFFIX)]

    def outputs(self, point):
        """A point's outputs; KitError naming the capture when it has none (a capture of
        another model, say), not a KeyError."""
        key = output_key(point)
        if key not in self.tensors:
            where = self.tensors.path if isinstance(self.tensors, SafetensorsTensors) else self.source
            raise KitError(f"{_shown(where) if where else self.label}: holds no {key}; a capture of another model? "
                           "(make it again with the same model)")
        return self.tensors[key]

    def weights(self, point):
        return self.tensors.get(weights_key(point), [])

    def to_json(self):
        document = {"metadata": self.metadata}
        for key, arrays in self.tensors.items():
            document[key] = [encode_tensor(a) for a in arrays]
        return json.dumps(document, allow_nan=False)

    @classmethod
    def from_json(cls, text, source="capture"):
        """Parse and validate a capture; KitError naming `source` when it is not one."""
        try:
            document = json.loads(text)
        except RecursionError:
            raise KitError(f"{source}: not a capture (JSON nested too deep)") from None
        except json.JSONDecodeError as error:
            raise KitError(f"{source}: not valid JSON ({_brief(error)})") from None
        if not isinstance(document, dict):
            raise KitError(f"{source}: not a capture (a JSON {type(document).__name__}); was it written by this kit?")
        if "metadata" not in document:
            return cls._from_study_json(document, source)
        metadata = check_metadata(document["metadata"], source)
        tensors = {}
        for key, value in document.items():
            if key == "metadata":
                continue
            _check_key(key, source)
            if not isinstance(value, list):
                raise KitError(f"{source}: {key} is {_json_type(value)}, not a list of tensors")
            if key.endswith(OUTPUT_SUFFIX) and not value:
                raise KitError(f"{source}: {key} holds no tensors")
            tensors[key] = [decode_tensor(t, f"{source}: {key}[{i}]") for i, t in enumerate(value)]
        if not any(key.endswith(OUTPUT_SUFFIX) for key in tensors):
            raise KitError(f"{source}: holds no layer outputs")
        return cls(metadata, tensors, source)

    @classmethod
    def _from_study_json(cls, document, source):
        """The original study's files: `<layer>_weights`/`<layer>_output` lists of nested lists."""
        tensors = {}
        for key, value in document.items():
            if not key.endswith((WEIGHTS_SUFFIX, OUTPUT_SUFFIX)) or not isinstance(value, list) \
                    or (key.endswith(OUTPUT_SUFFIX) and not value):
                raise KitError(f"{source}: not a capture (no metadata, and {_shown_value(key)} is not a "
                               "<layer>_weights or <layer>_output list of arrays); was it written by this kit or "
                               "the study?")
            _check_key(key, source)
            tensors[key] = [_nested_array(v, f"{source}: {key}[{i}]") for i, v in enumerate(value)]
        if not any(key.endswith(OUTPUT_SUFFIX) for key in tensors):
            raise KitError(f"{source}: holds no layer outputs")
        name = Path(source).stem
        runtime = "python" if name.endswith("python") else ("browser" if "browser" in name else "node")
        return cls({"runtime": runtime, "backend": "study file", "schema": 0}, tensors, source)

    @property
    def values(self):
        """How many values the capture holds (from shapes: nothing is loaded)."""
        if isinstance(self.tensors, SafetensorsTensors):
            return self.tensors.values_count()
        return sum(int(np.size(a)) for arrays in self.tensors.values() for a in arrays)

    def save(self, path):
        """Write as JSON or safetensors, by the file's suffix; the same capture in the other
        format (an earlier run's) is removed, so a folder never holds two answers."""
        path = Path(path)
        if path.suffix == FORMATS["safetensors"]:
            write_safetensors(path, self.metadata, self.tensors)
        else:
            atomic_write_text(path, self.to_json())
        remove_other_formats(path, keep=self.tensors.path if isinstance(self.tensors, SafetensorsTensors) else None)

    @classmethod
    def load(cls, path, made_by=None):
        """Read a capture file (JSON or safetensors, by its first bytes); a missing one names
        the script that makes it. Anything that is not a whole, well-formed capture is one
        KitError naming the file."""
        path = Path(path)
        shown = _shown(path)
        try:
            if not path.is_file():
                if path.exists():
                    raise KitError(f"{shown}: not a file")
                hint = f"; run `python {made_by}` first to make it" if made_by else ""
                raise KitError(f"{shown} not found{hint}")
            with open(path, "rb") as f:
                start = f.read(9)
            if path.suffix == FORMATS["safetensors"] or (len(start) == 9 and start[8:9] == b"{" and start[:1] != b"{"):
                capture = read_safetensors(path)
            else:
                raw = path.read_bytes()
                if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\0" in raw[:4]:
                    raise KitError(f"{shown}: not UTF-8 text (UTF-16?): a JSON capture is UTF-8")
                try:
                    text = raw.decode("utf-8-sig")  # a byte order mark some editors add is not an error
                except UnicodeDecodeError:
                    raise KitError(f"{shown}: neither a JSON nor a safetensors capture (not UTF-8 text)") from None
                del raw
                capture = cls.from_json(text, source=shown)
        except OSError as error:
            raise KitError(f"{shown}: cannot read ({_brief(error.strerror or error)})") from None
        from .paths import PYTHON_CAPTURE
        if path.stem == Path(PYTHON_CAPTURE).stem and capture.metadata.get("runtime") != "python":
            raise KitError(f"{shown}: Python's capture says runtime {_shown_value(capture.metadata.get('runtime'))}, "
                           "not 'python'")
        return capture


def remove_other_formats(path, keep=None):
    """Remove the capture at `path` in the kit's other formats (an earlier run's), but `keep`."""
    for suffix in FORMATS.values():
        sibling = Path(path).with_suffix(suffix)
        if sibling != Path(path) and sibling != keep and sibling.is_file():
            sibling.unlink()


def chosen_format(capture, requested=None):
    """`requested`, else safetensors for a capture of more than JSON_LIMIT values, else JSON."""
    if requested:
        return requested
    return "safetensors" if capture.values > JSON_LIMIT else "json"


def _safetensors_failure(error):
    """True for what the safetensors library raises on a bad file: its own errors, OS errors,
    numpy's, and a Rust panic (pyo3's PanicException, a BaseException)."""
    from safetensors import SafetensorError
    return isinstance(error, (SafetensorError, OSError, ValueError, TypeError, OverflowError, MemoryError)) \
        or type(error).__name__ == "PanicException"


class SafetensorsTensors(Mapping):
    """{key: [arrays]} of a safetensors capture, read from the file at each access: only the
    bytes of the tensors asked for, at the offsets its header gives (neither the header parsed
    again, 1.6 ms for ResNet50's at each access, nor the file kept mapped into memory)."""

    def __init__(self, path, keys, shapes, written_header, locations):
        self.path, self.keys_and_counts, self.shapes = Path(path), dict(keys), shapes
        self.replaced = {}
        self._written_header = written_header  # the capture header's JSON text, as the file holds it
        self._locations = locations  # tensor name -> (numpy dtype, shape, first byte, byte count)

    @property
    def written_metadata(self):
        """The metadata the file's header holds (parsed when asked: copying ResNet50's at every
        load, its input included, took 0.2 s)."""
        return json.loads(self._written_header)["metadata"]

    def __getitem__(self, key):
        if key in self.replaced:
            return self.replaced[key]
        if key not in self.keys_and_counts:
            raise KeyError(key)
        names = [f"{key}/{i}" for i in range(self.keys_and_counts[key])]
        try:
            with open(self.path, "rb") as f:
                return [_read_tensor(f, *self._locations[name]) for name in names]
        except (OSError, ValueError) as error:
            raise KitError(f"{_shown(self.path)}: cannot read {key} ({_brief(error)})") from None

    def __contains__(self, key):
        """Without reading the tensors (Mapping's own `in` would)."""
        return key in self.replaced or key in self.keys_and_counts

    def __setitem__(self, key, arrays):
        self.replaced[key] = arrays
        self.keys_and_counts.setdefault(key, len(arrays))

    def __iter__(self):
        return iter(self.keys_and_counts)

    def __len__(self):
        return len(self.keys_and_counts)

    def values_count(self):
        return sum(math.prod(shape) for shape in self.shapes.values())


def _read_tensor(f, dtype, shape, start, size):
    array = np.empty(shape, dtype=dtype)
    f.seek(start)
    got = f.readinto(array.reshape(-1).view(np.uint8))
    if got != size:
        raise ValueError(f"the file ends {size - got} bytes early (truncated since it was read?)")
    return array


def _locations(path, names):
    """{name: (numpy dtype, shape, first byte, byte count)} from the file's safetensors header
    (already checked by safetensors itself: offsets within the file, no overlaps)."""
    numpy_dtypes = {code: np.dtype(name).newbyteorder("<") for name, code in SAFETENSORS_DTYPES.items()}
    with open(path, "rb") as f:
        header, data_start = read_safetensors_header(f, os.fstat(f.fileno()).st_size)
    return {name: (numpy_dtypes[header[name]["dtype"]], tuple(header[name]["shape"]),
                   data_start + header[name]["data_offsets"][0],
                   header[name]["data_offsets"][1] - header[name]["data_offsets"][0]) for name in names}


def read_safetensors(path):
    """A Capture whose tensors stay in the file until asked for; KitError naming the file
    when it is truncated, corrupted or not a capture."""
    from safetensors import safe_open
    shown = _shown(path)
    try:
        with safe_open(str(path), "np") as f:
            names, metadata = list(f.keys()), f.metadata() or {}
            shapes = {name: list(f.get_slice(name).get_shape()) for name in names}
            dtypes = {name: f.get_slice(name).get_dtype() for name in names}
    except BaseException as error:
        if not _safetensors_failure(error):
            raise
        raise KitError(f"{shown}: not a readable safetensors capture (truncated or corrupted? {_brief(error)})") \
            from None
    if CAPTURE_METADATA_KEY not in metadata:
        raise KitError(f"{shown}: a safetensors file, but not a capture of this kit (no '{CAPTURE_METADATA_KEY}' in "
                       "its metadata)")
    try:
        document = json.loads(metadata[CAPTURE_METADATA_KEY])
    except RecursionError:
        raise KitError(f"{shown}: a safetensors file, but its capture header is JSON nested too deep") from None
    except ValueError as error:
        raise KitError(f"{shown}: a safetensors file, but its capture header is not valid JSON ({_brief(error)})") \
            from None
    if not isinstance(document, dict) or not {"metadata", "keys"} <= document.keys():
        raise KitError(f"{shown}: a safetensors file, but not a capture of this kit (its capture header lacks "
                       "metadata or keys)")
    check_metadata(document["metadata"], shown)
    keys = _key_list(document["keys"], len(names), shown)
    expected = {f"{key}/{i}" for key, count in keys for i in range(count)}
    if expected != set(names):
        missing = sorted(expected - set(names)) or sorted(set(names) - expected)
        raise KitError(f"{shown}: its tensors do not match its key list (first: {_shown_value(missing[0])})")
    for name in names:
        if dtypes[name] not in SAFETENSORS_DTYPES.values():
            raise KitError(f"{shown}: tensor {name} has dtype {_shown_value(dtypes[name])}, not one of F32, F64, I32")
        check_shape(shapes[name], f"{shown}: tensor {name}")
    if not any(key.endswith(OUTPUT_SUFFIX) for key, _ in keys):
        raise KitError(f"{shown}: holds no layer outputs")
    try:
        locations = _locations(path, names)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as error:
        raise KitError(f"{shown}: not a readable safetensors capture ({_brief(error)})") from None
    return Capture(document["metadata"], SafetensorsTensors(path, keys, shapes, metadata[CAPTURE_METADATA_KEY], locations),
                   str(path))


def _key_list(keys, tensor_count, source):
    """The header's [[key, tensor count], ...], checked: capture keys, each once, counts that
    add up to the tensors the file holds (checked before any name is built from them)."""
    if not isinstance(keys, list) or not all(isinstance(k, list) and len(k) == 2 for k in keys):
        raise KitError(f"{source}: its key list is not a list of [key, tensor count] pairs")
    seen = set()
    for key, count in keys:
        _check_key(key, source, "key")
        if key in seen:
            raise KitError(f"{source}: key {key} appears twice in its key list")
        seen.add(key)
        if type(count) is not int or count < 0 or (count == 0 and key.endswith(OUTPUT_SUFFIX)):
            raise KitError(f"{source}: key {key} has tensor count {_shown_value(count)}, not a whole number"
                           + (" of at least 1" if key.endswith(OUTPUT_SUFFIX) else ""))
    if sum(count for _, count in keys) != tensor_count:
        raise KitError(f"{source}: its key list counts {sum(c for _, c in keys)} tensors, the file holds "
                       f"{tensor_count}")
    return [(key, count) for key, count in keys]


def write_safetensors(path, metadata, tensors):
    """Write {key: [arrays]} and metadata as one safetensors file, atomically, one tensor at a
    time (the header first: it only needs shapes and dtypes)."""
    path = Path(path)
    header, layout, offset = {}, [], 0
    for key in tensors:
        arrays = tensors[key]
        layout.append([key, len(arrays)])
        for i, array in enumerate(arrays):
            dtype = _storage_dtype(array)
            size = int(np.size(array)) * np.dtype(dtype).itemsize
            header[f"{key}/{i}"] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(np.shape(array)),
                                    "data_offsets": [offset, offset + size]}
            offset += size
    header["__metadata__"] = {CAPTURE_METADATA_KEY: json.dumps({"metadata": metadata, "keys": layout})}
    encoded = json.dumps(header).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with atomic_file(path) as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for key, _ in layout:
            for array in tensors[key]:
                dtype = _storage_dtype(array)
                f.write(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes())


def _storage_dtype(array):
    dtype = np.asarray(array).dtype
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return "int32"
    return "float64" if dtype == np.float64 else "float32"


def weights_key(point):
    """The capture key of a point's weights: the study's `<layer>_weights`."""
    return f"{point}{WEIGHTS_SUFFIX}"


def output_key(point):
    """The capture key of a point's outputs: the study's `<layer>_output`."""
    return f"{point}{OUTPUT_SUFFIX}"
