"""The safetensors encoding of captures (big captures: raw little-endian tensors, read one key
at a time, so a comparison holds one layer in memory, not the model). docs/captures.md
describes the layout; tfjs_parity/wire.json names its parts."""
import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import KitError
from .capture_json import brief, check_key, check_metadata, check_shape, printable, shown_value, storage_dtype
from .files import atomic_file
from .wire import CAPTURE_METADATA_KEY, OUTPUT_SUFFIX, SAFETENSORS_DTYPES, read_safetensors_header

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
            raise KitError(f"{printable(self.path)}: cannot read {key} ({brief(error)})") from None

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


def read_capture(path):
    """(metadata, tensors) of a safetensors capture, its tensors staying in the file until asked
    for (SafetensorsTensors); KitError naming the file when it is truncated, corrupted or not
    a capture."""
    from safetensors import safe_open
    shown = printable(path)
    try:
        with safe_open(str(path), "np") as f:
            names, metadata = list(f.keys()), f.metadata() or {}
            shapes = {name: list(f.get_slice(name).get_shape()) for name in names}
            dtypes = {name: f.get_slice(name).get_dtype() for name in names}
    except BaseException as error:
        if not _safetensors_failure(error):
            raise
        raise KitError(f"{shown}: not a readable safetensors capture (truncated or corrupted? {brief(error)})") \
            from None
    if CAPTURE_METADATA_KEY not in metadata:
        raise KitError(f"{shown}: a safetensors file, but not a capture of this kit (no '{CAPTURE_METADATA_KEY}' in "
                       "its metadata)")
    try:
        document = json.loads(metadata[CAPTURE_METADATA_KEY])
    except RecursionError:
        raise KitError(f"{shown}: a safetensors file, but its capture header is JSON nested too deep") from None
    except ValueError as error:
        raise KitError(f"{shown}: a safetensors file, but its capture header is not valid JSON ({brief(error)})") \
            from None
    if not isinstance(document, dict) or not {"metadata", "keys"} <= document.keys():
        raise KitError(f"{shown}: a safetensors file, but not a capture of this kit (its capture header lacks "
                       "metadata or keys)")
    check_metadata(document["metadata"], shown)
    keys = _key_list(document["keys"], len(names), shown)
    expected = {f"{key}/{i}" for key, count in keys for i in range(count)}
    if expected != set(names):
        missing = sorted(expected - set(names)) or sorted(set(names) - expected)
        raise KitError(f"{shown}: its tensors do not match its key list (first: {shown_value(missing[0])})")
    for name in names:
        if dtypes[name] not in SAFETENSORS_DTYPES.values():
            raise KitError(f"{shown}: tensor {name} has dtype {shown_value(dtypes[name])}, not one of F32, F64, I32")
        check_shape(shapes[name], f"{shown}: tensor {name}")
    if not any(key.endswith(OUTPUT_SUFFIX) for key, _ in keys):
        raise KitError(f"{shown}: holds no layer outputs")
    try:
        locations = _locations(path, names)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as error:
        raise KitError(f"{shown}: not a readable safetensors capture ({brief(error)})") from None
    return document["metadata"], SafetensorsTensors(path, keys, shapes, metadata[CAPTURE_METADATA_KEY], locations)


def _key_list(keys, tensor_count, source):
    """The header's [[key, tensor count], ...], checked: capture keys, each once, counts that
    add up to the tensors the file holds (checked before any name is built from them)."""
    if not isinstance(keys, list) or not all(isinstance(k, list) and len(k) == 2 for k in keys):
        raise KitError(f"{source}: its key list is not a list of [key, tensor count] pairs")
    seen = set()
    for key, count in keys:
        check_key(key, source, "key")
        if key in seen:
            raise KitError(f"{source}: key {key} appears twice in its key list")
        seen.add(key)
        if type(count) is not int or count < 0 or (count == 0 and key.endswith(OUTPUT_SUFFIX)):
            raise KitError(f"{source}: key {key} has tensor count {shown_value(count)}, not a whole number"
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
            dtype = storage_dtype(array)
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
                dtype = storage_dtype(array)
                f.write(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes())
