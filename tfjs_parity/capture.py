"""The capture: what every runtime saves, as JSON or as safetensors, on every side (metadata
plus, per key, a list of tensors; docs/captures.md describes both encodings, wire.json names
their parts). Capture is the object the rest of the kit holds; capture_json.py and
capture_safetensors.py are the two codecs.

Whatever a file holds, reading it ends in a Capture or in one KitError naming the file:
every tensor's dtype, shape and values, the key list and the metadata fields the kit reads
(capture_json.check_metadata) are checked when the file is loaded, not when a report first
uses them."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import KitError
from .capture_json import brief, capture_document, decode_tensor, parse_capture, printable, shown_value
from .capture_safetensors import SafetensorsTensors, read_capture, write_safetensors
from .files import atomic_write_text
from .wire import OUTPUT_SUFFIX, WEIGHTS_SUFFIX

FORMATS = {"json": ".json", "safetensors": ".safetensors"}
# More values than this and JSON is not practical (about 10-20 bytes a value, parsed into
# Python floats): the capture is written as safetensors unless --format says otherwise.
JSON_LIMIT = 1_000_000


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
            raise KitError(f"{printable(where) if where else self.label}: holds no {key}; a capture of another model? "
                           "(make it again with the same model)")
        return self.tensors[key]

    def weights(self, point):
        return self.tensors.get(weights_key(point), [])

    def to_json(self):
        return capture_document(self.metadata, self.tensors)

    @classmethod
    def from_json(cls, text, source="capture"):
        """Parse and validate a JSON capture; KitError naming `source` when it is not one."""
        return cls(*parse_capture(text, source), source)

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
        shown = printable(path)
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
            raise KitError(f"{shown}: cannot read ({brief(error.strerror or error)})") from None
        from .paths import PYTHON_CAPTURE
        if path.stem == Path(PYTHON_CAPTURE).stem and capture.metadata.get("runtime") != "python":
            raise KitError(f"{shown}: Python's capture says runtime {shown_value(capture.metadata.get('runtime'))}, "
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


def weights_key(point):
    """The capture key of a point's weights: the study's `<layer>_weights`."""
    return f"{point}{WEIGHTS_SUFFIX}"


def output_key(point):
    """The capture key of a point's outputs: the study's `<layer>_output`."""
    return f"{point}{OUTPUT_SUFFIX}"


def read_safetensors(path):
    """A Capture of a safetensors file, its tensors read only when asked for (capture_safetensors)."""
    return Capture(*read_capture(path), str(path))
