"""The capture format: what every runtime saves, in one JSON schema on every side.

A capture is a JSON object. Its `metadata` entry says who produced it; every other entry
keeps the original study's keys and holds a list of tensors:

    {"metadata": {"schema": 1, "runtime": "node", "backend": "tensorflow", ...},
     "dense_0_weights": [<kernel>, <bias>],
     "dense_0_output": [<output>], ...}

A tensor is {"dtype": "float32", "shape": [...], "data": [...]} with `data` flat, in C
order. Numbers are written as the shortest decimal that reads back to the same float, so
float32 values round-trip bit for bit. JSON has no NaN, infinities or negative zero, so
those four are written as the strings "NaN", "Infinity", "-Infinity" and "-0"
(inference_common.js does the same on the JS side).
"""
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import KitError

SCHEMA = 1
DTYPES = ("float32", "float64", "int32")  # int32: integer model inputs (token ids), as tfjs holds them
WEIGHTS_SUFFIX = "_weights"
OUTPUT_SUFFIX = "_output"
_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf, "-0": -0.0}


def encode_tensor(array):
    """A numpy array (int32 if it holds integers, float64 if it is float64, else float32) as
    a JSON-ready tensor dict."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return {"dtype": "int32", "shape": list(array.shape), "data": array.astype(np.int32).ravel().tolist()}
    dtype = "float64" if array.dtype == np.float64 else "float32"
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
        except json.JSONDecodeError as error:
            raise KitError(f"{source}: not valid JSON ({error})") from None
        if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
            raise KitError(f"{source}: not a capture (no metadata entry); was it written by this kit?")
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

    def save(self, path):
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path, made_by=None):
        """Read a capture file; a missing one names the script that makes it."""
        path = Path(path)
        if not path.is_file():
            hint = f"; run `python {made_by}` first to make it" if made_by else ""
            raise KitError(f"{path} not found{hint}")
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))


def weights_key(point):
    """The capture key of a point's weights: the study's `<layer>_weights`."""
    return f"{point}{WEIGHTS_SUFFIX}"


def output_key(point):
    """The capture key of a point's outputs: the study's `<layer>_output`."""
    return f"{point}{OUTPUT_SUFFIX}"


def atomic_write_text(path, text):
    """Write text to path through a temporary file in the same folder, then rename: a reader
    never sees half a file, and a failure leaves the old file (or none) in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
