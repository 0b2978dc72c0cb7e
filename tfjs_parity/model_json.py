"""A tfjs model.json, read as untrusted input before anything else touches it: its size and
nesting bounded before parsing, its text UTF-8 only, its format told by its content (as
tfjs's loaders tell it), its weight files plain names beside it, its signature's fields
type-checked, one line naming the file and the field when any of it is wrong. Both kinds of
model (and the quantization reader) start from here."""
import json
import os
import re
from pathlib import Path

from . import KitError
from .quantization import manifest_quantization
from .user_files import MAX_CONFIG_BYTES, check_json_depth

GRAPH_FORMAT = "graph-model"
LAYERS_FORMAT = "layers-model"
MAX_WEIGHT_BYTES = 4 * 2 ** 30
MAX_CONTAINERS = 2_000_000  # JSON objects and arrays in a model.json


def read_model_json(path, flag="--model"):
    """The document of a tfjs model.json, checked: size, nesting, its format and weight
    files (plain names in its folder, each as long as the manifest says)."""
    path = Path(path)
    where = f"{flag} {path}"
    if not path.is_file():
        raise KitError(f"{where}: not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise KitError(f"{where}: {path.stat().st_size:,} bytes, more than the {MAX_CONFIG_BYTES:,} a model.json "
                       "may hold")
    text = path.read_bytes()
    if text.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) or (len(text) > 1 and b"\0" in text[:2]):
        raise KitError(f"{where}: not UTF-8 JSON (a byte order mark, or UTF-16); tfjs's converter writes UTF-8: "
                       "save it as UTF-8 without a BOM")
    containers = text.count(b"{") + text.count(b"[")  # before any parse: what parsing it would build
    if containers > MAX_CONTAINERS:
        raise KitError(f"{where}: {containers:,} JSON objects and arrays, more than the {MAX_CONTAINERS:,} a "
                       "model.json may hold (a 900-node graph holds about 20,000)")
    check_json_depth(text, where=where)
    try:
        document = json.loads(text.decode("utf-8"))
    except ValueError:
        raise KitError(f"{where}: not JSON (UTF-8)") from None
    if not isinstance(document, dict) or "modelTopology" not in document:
        raise KitError(f"{where}: not a tfjs model.json (no modelTopology)")
    fmt = document.get("format")
    if fmt not in (GRAPH_FORMAT, LAYERS_FORMAT):
        found = format_by_content(document["modelTopology"])
        if found is None:
            raise KitError(f"{where}: a model.json of format {fmt!r} whose modelTopology is neither a GraphDef (a "
                           "'node' list) nor a Keras model config, so neither a tfjs graph model nor a layers model")
        document["format"] = found
    manifest = document.setdefault("weightsManifest", [])
    if not isinstance(manifest, list):
        raise KitError(f"{where}: its weightsManifest is not a list")
    for group in manifest:
        if isinstance(group, dict):
            group.setdefault("paths", [])
            group.setdefault("weights", [])
    total = 0
    for group in manifest:
        paths = group.get("paths", []) if isinstance(group, dict) else None
        if not isinstance(paths, list) or not isinstance(group.get("weights", []), list):
            raise KitError(f"{where}: its weightsManifest is not a list of {{paths, weights}} groups")
        for name in paths:
            if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (".", "..") \
                    or len(name.encode("utf-8", "surrogatepass")) > 255 or "\0" in name:
                raise KitError(f"{where}: weight file {str(name)[:80]!r} is not a file name in its folder")
            file = path.parent / name
            if not file.is_file():
                raise KitError(f"{where}: its weight file {name} is missing beside it")
            total += file.stat().st_size
        for weight in group.get("weights", []):
            if not isinstance(weight, dict) or not isinstance(weight.get("name"), str):
                raise KitError(f"{where}: its weightsManifest lists a weight without a name ({str(weight)[:80]})")
    check_signature(document.get("signature") or {}, where)
    try:
        manifest_quantization(manifest)
    except KitError as error:
        raise KitError(f"{where}: {error}") from None
    if total > MAX_WEIGHT_BYTES:
        raise KitError(f"{where}: {total:,} bytes of weights, more than the {MAX_WEIGHT_BYTES:,} the kit reads")
    return document


KINDS_OF_JSON = {dict: "an object", list: "a list", str: "a string", int: "a whole number", bool: "true or false"}


def check_signature(signature, where):
    """KitError naming the first field of a model.json's signature whose type is not what the
    converter writes: {inputs, outputs: {key: {name: str, dtype: str, tensorShape: {dim:
    [{size: int or decimal text}], unknownRank: bool}}}}."""
    def field(path, value, types):
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            raise KitError(f"{where}: its signature's {path} is {type(value).__name__} "
                           f"{json.dumps(value)[:60] if isinstance(value, (str, int, float, list, dict)) else ''}, "
                           f"not {' or '.join(KINDS_OF_JSON[t] for t in types)}")
    field("signature", signature, (dict,))
    for part in ("inputs", "outputs"):
        entries = signature.get(part, {})
        field(part, entries, (dict,))
        for key, entry in entries.items():
            at = f"{part}.{str(key)[:40]}"
            field(at, entry, (dict,))
            field(f"{at}.name", entry.get("name"), (str,))
            field(f"{at}.dtype", entry.get("dtype", "DT_FLOAT"), (str,))
            shape = entry.get("tensorShape", {})
            field(f"{at}.tensorShape", shape, (dict,))
            field(f"{at}.tensorShape.unknownRank", shape.get("unknownRank", False), (bool,))
            field(f"{at}.tensorShape.dim", shape.get("dim", []), (list,))
            for k, dim in enumerate(shape.get("dim", [])):
                field(f"{at}.tensorShape.dim[{k}]", dim, (dict,))
                size = dim.get("size", 0)
                field(f"{at}.tensorShape.dim[{k}].size", size, (int, str))
                if isinstance(size, str) and not re.fullmatch(r"-?\d{1,12}", size):
                    raise KitError(f"{where}: its signature's {at}.tensorShape.dim[{k}].size is {size[:30]!r}, not "
                                   "a whole number")


def format_by_content(topology):
    """A model.json's format told by its modelTopology, as tfjs's loaders tell it (they read no
    `format` key, and tfjs 1.x's converter wrote none): a GraphDef has a 'node' list, a Keras
    model a 'model_config' (or is the config itself: 'class_name' and 'config'); else None."""
    if not isinstance(topology, dict):
        return None
    if isinstance(topology.get("node"), list):
        return GRAPH_FORMAT
    config = topology.get("model_config", topology)
    if isinstance(config, dict) and isinstance(config.get("class_name"), str) and isinstance(config.get("config"),
                                                                                              (dict, list)):
        return LAYERS_FORMAT
    return None


def is_quantized(model_json):
    """Whether the (checked) model.json's weights manifest says its weights are quantized."""
    return bool(manifest_quantization(read_model_json(model_json).get("weightsManifest") or []))
