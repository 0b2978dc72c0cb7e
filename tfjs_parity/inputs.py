"""The inputs every runtime sees: the study's vector of ones, a user's file, or a seeded
random input that fits each of the model's inputs. Made once, by step 1, and saved beside
the converted model (input.json) and in every capture's metadata."""
import zipfile
from pathlib import Path

import numpy as np

from . import KitError
from .plan import Input
from .user_files import check_declared_array, npy_header

# An input's bytes, at most: every runtime captures every layer's output for it, so a bigger
# one is far beyond what a capture holds; also the bound on what an --input file may unpack to.
MAX_INPUT_BYTES = 256 * 2 ** 20
FLOAT_RANGE = (-1.0, 1.0)   # random float inputs: uniform, like normalised data
INTEGER_RANGE = 10          # random integer inputs that feed no Embedding: 0..9
# random inputs of a narrower declared type (a graph model's: tfjs feeds them as int32): its whole
# range, an image's 0..255 for uint8; [low, high)
DECLARED_RANGE = {"uint8": (0, 256), "int8": (-128, 128), "int16": (-2 ** 15, 2 ** 15), "uint16": (0, 2 ** 16)}


def specs(graph):
    """[plan.Input] of a flat topology.Graph, in the model's input order."""
    by_name = {layer.name: layer for layer in graph.layers}
    result = []
    for name, _, _ in graph.inputs:
        config = by_name[name].config
        shape = config.get("batch_input_shape") or config.get("batch_shape")
        dtype = config.get("dtype", "float32")
        dtype = dtype if isinstance(dtype, str) else dtype.get("config", {}).get("name", "float32")
        result.append(Input(name, list(shape), "int32" if "int" in dtype else "float32"))
    return result


def study_inputs(specs):
    """The study's input: a batch of one vector of ones, float32."""
    spec = specs[0]
    return {spec.name: np.ones([1] + spec.shape[1:], dtype=np.float32)}


def random_inputs(specs, graph, seed, integer_high=None, count=None):
    """A batch of `count` (default one) for each input (or the batch the input is fixed to), from `seed`: floats
    uniform in FLOAT_RANGE, integers within the smallest vocabulary of the Embeddings they
    feed (else below `integer_high`, else 0..INTEGER_RANGE-1). `graph`: the flat topology,
    or None (a graph model)."""
    rng = np.random.default_rng(seed)
    result = {}
    for spec in specs:
        if spec.shape is None:
            raise KitError(f"input {spec.name!r}: the model does not say its shape (not even its rank); give it with "
                           f"--input-shape {spec.name}=1,... or give an input with --input")
        if count and spec.shape and spec.shape[0] is not None and spec.shape[0] != count:
            raise KitError(f"--input-count {count}: input {spec.name!r} takes a batch of exactly {spec.shape[0]}")
        if count and count > 1 and not spec.shape:
            raise KitError(f"--input-count {count}: input {spec.name!r} is a scalar, which holds one input")
        shape = [(count or 1) if spec.shape[0] is None else spec.shape[0]] + spec.shape[1:] if spec.shape else []
        if any(d is None for d in shape):
            raise KitError(f"input {spec.name!r} has shape {_shape(spec.shape)} with a free dimension besides the "
                           f"batch: give the shape you use with --input-shape {spec.name}=..., or an input with "
                           "--input")
        if int(np.prod(shape, dtype=np.float64)) * 4 > MAX_INPUT_BYTES:
            raise KitError(f"input {spec.name!r} of shape {shape} is {int(np.prod(shape, dtype=np.float64)) * 4:,} "
                           f"bytes, more than the {MAX_INPUT_BYTES:,} an input may be (every runtime captures every "
                           f"layer's output for it): give a smaller one with --input or --input-shape")
        if spec.declared in DECLARED_RANGE:
            result[spec.name] = rng.integers(*DECLARED_RANGE[spec.declared], size=shape).astype(np.int32)
        elif spec.dtype == "int32":
            high = min(_vocabularies(graph, spec.name), default=min(integer_high or INTEGER_RANGE, INTEGER_RANGE))
            result[spec.name] = rng.integers(0, high, size=shape).astype(np.int32)
        elif spec.dtype == "bool":
            result[spec.name] = rng.integers(0, 2, size=shape).astype(np.int32)  # fed as bool: 0 and 1
        else:
            values = rng.uniform(*FLOAT_RANGE, size=shape)
            # a float16 input holds float16 values: TensorFlow feeds those, tfjs the same as float32
            result[spec.name] = (values.astype(np.float16) if spec.declared == "float16" else values).astype(np.float32)
    return result


def _vocabularies(graph, input_name):
    """input_dim of every Embedding that consumes the input `input_name` directly."""
    for layer in graph.layers if graph is not None else ():
        if layer.class_name == "Embedding" and any(node.inputs and node.inputs[0][0] == input_name
                                                   for node in layer.nodes):
            yield int(layer.config["input_dim"])


def load_inputs(path, specs, graph):
    """{name: array} from a .npy (one input) or .npz (one array per input name), checked
    against the model's inputs (token ids against the vocabulary of the Embedding they
    feed): KitError naming what was expected when it does not fit."""
    path = Path(path)
    expected = ", ".join(f"{s.name} {_shape(s.shape)} {s.dtype}" for s in specs)
    names = check_input_file(path)
    if names is not None and not (len(specs) == 1 and len(names) == 1) and \
            (any(s.name not in names for s in specs) or len(names) != len(specs)):
        raise KitError(f"--input {path}: holds {', '.join(names) or 'nothing'}; the model's inputs are {expected}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            if len(specs) != 1:
                raise KitError(f"--input {path}: one array, but the model has {len(specs)} inputs ({expected}); "
                               "give a .npz with one array per input name")
            arrays, names = {specs[0].name: loaded}, [specs[0].name]
        else:  # its names were checked against the model's inputs above
            with loaded:
                arrays = ({specs[0].name: loaded[names[0]]} if len(specs) == 1 and len(names) == 1
                          else {spec.name: loaded[spec.name] for spec in specs})
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # numpy's ways of saying "not an array file"
        raise KitError(f"--input {path}: not a .npy or .npz file of plain arrays ({error})") from None
    checked = {spec.name: _checked(arrays[spec.name], spec, path) for spec in specs}
    for spec in specs:
        high = min(_vocabularies(graph, spec.name), default=None)
        values = checked[spec.name]
        if high is not None and values.size and (values.min() < 0 or values.max() >= high):
            bad = values.min() if values.min() < 0 else values.max()
            raise KitError(f"--input {path}: input {spec.name!r} holds token id {bad}, outside the vocabulary "
                           f"(0 to {high - 1}) of the Embedding it feeds")
    return checked


def check_input_file(path):
    """What an --input file declares, checked before a byte of its arrays is read (step 1
    calls this before TensorFlow starts): each array's shape against the bytes its file holds
    and MAX_INPUT_BYTES in all (a few bytes of header may declare terabytes; a compressed
    member may unpack to gigabytes), no pickles. Returns a .npz's array names, None for a .npy."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"--input {path}: not found")
    declared = []
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
                for info in members:
                    if not info.filename.endswith(".npy"):
                        raise KitError(f"--input {path}: member {info.filename} is not an array (.npy); an .npz "
                                       "holds one array per input name")
                    where = f"--input {path}: member {info.filename[:-len('.npy')]}"
                    with archive.open(info) as member:
                        shape, dtype = npy_header(member, where)
                        holds = info.file_size - member.tell()
                    declared.append(check_declared_array(shape, dtype, holds, MAX_INPUT_BYTES, where))
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
            raise KitError(f"--input {path}: not a readable .npz file ({error})") from None
        names = [info.filename[:-len(".npy")] for info in members]
    else:
        with open(path, "rb") as f:
            shape, dtype = npy_header(f, f"--input {path}")
            holds = path.stat().st_size - f.tell()
        declared.append(check_declared_array(shape, dtype, holds, MAX_INPUT_BYTES, f"--input {path}"))
        names = None
    if sum(declared) > MAX_INPUT_BYTES:
        raise KitError(f"--input {path}: its arrays are {sum(declared):,} bytes in all, more than the "
                       f"{MAX_INPUT_BYTES:,} an input may be (every runtime captures every layer's output for it)")
    return names


def _checked(array, spec, path):
    where = f"--input {path}: input {spec.name!r}"
    expected = f"expected shape {_shape(spec.shape)} {spec.declared or spec.dtype}"
    if spec.shape is not None and (array.ndim != len(spec.shape) or
                                   any(want is not None and got != want
                                       for got, want in zip(array.shape[1:], spec.shape[1:]))):
        raise KitError(f"{where} has shape {list(array.shape)}, {expected}")
    if array.ndim and array.shape[0] < 1:
        raise KitError(f"{where} has an empty batch, {expected}")
    if spec.dtype == "bool":
        if not (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer)) or \
                (array.size and (array.min() < 0 or array.max() > 1)):
            raise KitError(f"{where} is {array.dtype}, {expected} (booleans, or integers 0 and 1)")
        return array.astype(np.int32)
    if spec.dtype == "int32":
        if not np.issubdtype(array.dtype, np.integer):
            raise KitError(f"{where} is {array.dtype}, {expected}" + ("" if spec.declared else
                                                                     " (token ids, for an Embedding)"))
        low, high = DECLARED_RANGE.get(spec.declared, (-2 ** 31, 2 ** 31))
        if array.size and (array.min() < low or array.max() >= high):
            raise KitError(f"{where} holds values beyond {spec.declared or 'int32'} ({low} to {high - 1})")
        return array.astype(np.int32)
    if not np.issubdtype(array.dtype, np.floating):
        raise KitError(f"{where} is {array.dtype}, {expected}")
    with np.errstate(over="ignore"):
        as_float32 = array.astype(np.float32)  # what Keras feeds a float32 model; every runtime sees these values
        if spec.declared == "float16":  # what TensorFlow feeds a float16 input: tfjs is fed the same values
            as_float32 = as_float32.astype(np.float16).astype(np.float32)
    overflowed = int(np.sum(np.isinf(as_float32) & np.isfinite(array)))
    if overflowed:
        raise KitError(f"{where} holds {overflowed} value(s) beyond float32's range (|x| > 3.4e38), which would "
                       "become infinite: every runtime computes in float32")
    return as_float32


def _shape(shape):
    if shape is None:
        return "(any)"
    return "(" + ", ".join("batch" if i == 0 else ("any" if d is None else str(d)) for i, d in enumerate(shape)) + ")"
