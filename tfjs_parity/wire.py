"""The wire contract, defined once in wire.json beside this file and read by every side:
Python here, Node (`require`), the page (the server hands it /tfjs_parity/wire.json). docs/captures.md
explains the format; this module gives Python its names and the one safetensors header
parser."""
import json
import struct
from pathlib import Path

WIRE_FILE = Path(__file__).with_name("wire.json")
WIRE = json.loads(WIRE_FILE.read_text(encoding="utf-8"))

SCHEMA = WIRE["schema"]
SAFETENSORS_DTYPES = WIRE["dtypes"]           # {"float32": "F32", ...}
DTYPES = tuple(SAFETENSORS_DTYPES)            # int32: integer model inputs (token ids), as tfjs holds them
WEIGHTS_SUFFIX = WIRE["key_suffixes"]["weights"]
OUTPUT_SUFFIX = WIRE["key_suffixes"]["output"]
SPECIAL_NUMBERS = dict(zip(WIRE["special_numbers"], (float("nan"), float("inf"), float("-inf"), -0.0)))
CONVERTED_DIR = WIRE["files"]["converted_dir"]
MODEL_FILE = WIRE["files"]["model"]
PLAN_FILE = WIRE["files"]["plan"]
INPUT_FILE = WIRE["files"]["inputs"]
CAPTURE_METADATA_KEY = WIRE["safetensors"]["metadata_key"]
UPLOAD_STEPS = tuple(WIRE["upload"]["steps"])
NODE_BACKENDS = tuple(WIRE["backends"]["node"])        # what inference_in_node.js runs, in report order
BROWSER_BACKENDS = tuple(WIRE["backends"]["browser"])  # what the page runs, in report order
# timed predictions at most, seconds of timing at most, captures made to check the bits repeat:
# every runtime's default (the scripts' flags, Node's, the page's)
DEFAULTS = WIRE["defaults"]
FLAG_PREFIXES = WIRE["flag_prefixes"]               # {backend: the prefix of its own tfjs flags}
_LENGTH_BYTES = WIRE["safetensors"]["length_bytes"]


def parse_safetensors_header(prefix):
    """(header dict, header length) from the first bytes of a safetensors file: the 8-byte
    little-endian length, then that many bytes of JSON. ValueError when `prefix` is not that
    (too short, a length that does not fit, JSON that is not an object)."""
    if len(prefix) < _LENGTH_BYTES:
        raise ValueError(f"a safetensors header starts with its {_LENGTH_BYTES}-byte length")
    (length,) = struct.unpack("<Q", prefix[:_LENGTH_BYTES])
    if length > len(prefix) - _LENGTH_BYTES:
        raise ValueError("the header length is more than the bytes there are")
    try:
        header = json.loads(prefix[_LENGTH_BYTES:_LENGTH_BYTES + length])
    except RecursionError:
        raise ValueError("the header is JSON nested too deep") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header, length


def read_safetensors_header(file, max_length):
    """(header dict, offset of the first data byte) of an open binary safetensors file;
    ValueError when it is not one or its header is longer than `max_length`."""
    head = file.read(_LENGTH_BYTES)
    if len(head) < _LENGTH_BYTES:
        raise ValueError("the file is shorter than a safetensors header")
    (length,) = struct.unpack("<Q", head)
    if length > max_length:
        raise ValueError(f"a header of {length} bytes is more than {max_length}")
    header, _ = parse_safetensors_header(head + file.read(length))
    return header, _LENGTH_BYTES + length


def data_end(header):
    """Where the tensors of a parsed header end (bytes after the header); ValueError when an
    entry has no whole-number offsets."""
    try:
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (KeyError, TypeError, IndexError):
        raise ValueError("an entry has no data_offsets") from None
    if not all(isinstance(end, int) and end >= 0 for end in ends):  # as before: a bool is an int here
        raise ValueError("offsets must be whole numbers")
    return max(ends, default=0)
