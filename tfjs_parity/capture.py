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
"""
import copy
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import KitError
from .files import atomic_file, atomic_write_text

SCHEMA = 1
DTYPES = ("float32", "float64", "int32")  # int32: integer model inputs (token ids), as tfjs holds them
FORMATS = {"json": ".json", "safetensors": ".safetensors"}
# More values than this and JSON is not practical (about 10-20 bytes a value, parsed into
# Python floats): the capture is written as safetensors unless --format says otherwise.
JSON_LIMIT = 1_000_000
SAFETENSORS_DTYPES = {"float32": "F32", "float64": "F64", "int32": "I32"}
WEIGHTS_SUFFIX = "_weights"
OUTPUT_SUFFIX = "_output"
_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf, "-0": -0.0}


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
    if obj["dtype"] not in DTYPES:
        raise KitError(f"{where}: dtype {obj['dtype']!r} is not one of {', '.join(DTYPES)}")
    shape, data = obj["shape"], obj["data"]
    if not isinstance(shape, list) or not isinstance(data, list):
        raise KitError(f"{where}: shape and data must be lists")
    if math.prod(shape) != len(data):
        raise KitError(f"{where}: shape {shape} needs {math.prod(shape)} values, data has {len(data)}")
    if obj["dtype"] == "int32":
        if not all(isinstance(v, int) and not isinstance(v, bool) and -2**31 <= v < 2**31 for v in data):
            raise KitError(f"{where}: int32 data holds something that is not a 32-bit integer")
        return np.array(data, dtype=np.int32).reshape(shape)
    try:
        values = [_SPECIAL[v] if isinstance(v, str) else float(v) for v in data]
    except (KeyError, TypeError, ValueError):
        raise KitError(f"{where}: data holds something that is not a number") from None
    return np.array(values, dtype=np.float64).astype(obj["dtype"]).reshape(shape)


@dataclass
class Capture:
    """One runtime's result: metadata plus, per key, a list of arrays (study key order)."""
    metadata: dict
    tensors: dict = field(default_factory=dict)

    @property
    def label(self):
        """Who produced it, e.g. 'node/tensorflow' or 'browser/webgl/f16'."""
        parts = [self.metadata.get("runtime", "?"), self.metadata.get("backend", "?"), self.metadata.get("variant")]
        return "/".join(p for p in parts if p)

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
        return self.tensors[output_key(point)]

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
        except (json.JSONDecodeError, RecursionError) as error:
            raise KitError(f"{source}: not valid JSON ({str(error)[:200]})") from None
        if not isinstance(document, dict):
            raise KitError(f"{source}: not a capture (a JSON {type(document).__name__}); was it written by this kit?")
        if "metadata" not in document:
            return cls._from_study_json(document, source)
        if not isinstance(document.get("metadata"), dict):
            raise KitError(f"{source}: not a capture (its metadata is not an object); was it written by this kit?")
        tensors = {}
        for key, value in document.items():
            if key == "metadata":
                continue
            if not key.endswith((WEIGHTS_SUFFIX, OUTPUT_SUFFIX)) or not isinstance(value, list):
                raise KitError(f"{source}: unexpected entry {key!r} (expected <layer>_weights or <layer>_output lists)")
            tensors[key] = [decode_tensor(t, f"{source}: {key}[{i}]") for i, t in enumerate(value)]
        if not any(key.endswith(OUTPUT_SUFFIX) for key in tensors):
            raise KitError(f"{source}: holds no layer outputs")
        return cls(document["metadata"], tensors)

    @classmethod
    def _from_study_json(cls, document, source):
        """The original study's files: `<layer>_weights`/`<layer>_output` lists of nested lists."""
        tensors = {}
        for key, value in document.items():
            if not key.endswith((WEIGHTS_SUFFIX, OUTPUT_SUFFIX)) or not isinstance(value, list) \
                    or (key.endswith(OUTPUT_SUFFIX) and not value):
                raise KitError(f"{source}: not a capture (no metadata, and {key!r} is not a <layer>_weights or "
                               "<layer>_output list of arrays); was it written by this kit or the study?")
            try:
                tensors[key] = [np.array(v, dtype=np.float64).astype(np.float32) for v in value]
            except (ValueError, TypeError):
                raise KitError(f"{source}: {key} holds something that is not an array of numbers") from None
        if not any(key.endswith(OUTPUT_SUFFIX) for key in tensors):
            raise KitError(f"{source}: holds no layer outputs")
        name = Path(source).stem
        runtime = "python" if name.endswith("python") else ("browser" if "browser" in name else "node")
        return cls({"runtime": runtime, "backend": "study file", "schema": 0}, tensors)

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
        the script that makes it."""
        path = Path(path)
        if not path.is_file():
            hint = f"; run `python {made_by}` first to make it" if made_by else ""
            raise KitError(f"{path} not found{hint}")
        with open(path, "rb") as f:
            start = f.read(9)
        if path.suffix == FORMATS["safetensors"] or (len(start) == 9 and start[8:9] == b"{" and start[:1] != b"{"):
            return read_safetensors(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise KitError(f"{path}: neither a JSON nor a safetensors capture") from None
        return cls.from_json(text, source=str(path))


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


class SafetensorsTensors(Mapping):
    """{key: [arrays]} of a safetensors capture, read from the file at each access."""

    def __init__(self, path, keys, shapes, written_metadata=None):
        self.path, self.keys_and_counts, self.shapes = Path(path), dict(keys), shapes
        self.replaced = {}
        self.written_metadata = copy.deepcopy(written_metadata)  # what the file's header says

    def __getitem__(self, key):
        if key in self.replaced:
            return self.replaced[key]
        if key not in self.keys_and_counts:
            raise KeyError(key)
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(self.path), "np") as f:
                return [f.get_tensor(f"{key}/{i}") for i in range(self.keys_and_counts[key])]
        except (SafetensorError, OSError) as error:
            raise KitError(f"{self.path}: cannot read {key} ({error})") from None

    def __setitem__(self, key, arrays):
        self.replaced[key] = arrays
        self.keys_and_counts.setdefault(key, len(arrays))

    def __iter__(self):
        return iter(self.keys_and_counts)

    def __len__(self):
        return len(self.keys_and_counts)

    def values_count(self):
        return sum(math.prod(shape) for shape in self.shapes.values())


def read_safetensors(path):
    """A Capture whose tensors stay in the file until asked for; KitError naming the file
    when it is truncated, corrupted or not a capture."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), "np") as f:
            names, metadata = list(f.keys()), f.metadata() or {}
            shapes = {name: list(f.get_slice(name).get_shape()) for name in names}
            dtypes = {name: f.get_slice(name).get_dtype() for name in names}
    except (SafetensorError, OSError, ValueError) as error:
        raise KitError(f"{path}: not a readable safetensors capture (truncated or corrupted? {error})") from None
    try:
        document = json.loads(metadata["capture"])
        keys = [(str(key), int(count)) for key, count in document["keys"]]
        if not isinstance(document["metadata"], dict):
            raise TypeError("metadata is not an object")
    except (KeyError, ValueError, TypeError) as error:
        raise KitError(f"{path}: a safetensors file, but not a capture of this kit ({error})") from None
    expected = {f"{key}/{i}" for key, count in keys for i in range(count)}
    if expected != set(names):
        missing = sorted(expected - set(names)) or sorted(set(names) - expected)
        raise KitError(f"{path}: its tensors do not match its key list (first: {missing[0]})")
    bad = [n for n in names if dtypes[n] not in SAFETENSORS_DTYPES.values()]
    if bad:
        raise KitError(f"{path}: tensor {bad[0]} has dtype {dtypes[bad[0]]}, not one of F32, F64, I32")
    if not any(key.endswith(OUTPUT_SUFFIX) for key, _ in keys):
        raise KitError(f"{path}: holds no layer outputs")
    return Capture(document["metadata"], SafetensorsTensors(path, keys, shapes, document["metadata"]))


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
    header["__metadata__"] = {"capture": json.dumps({"metadata": metadata, "keys": layout})}
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
