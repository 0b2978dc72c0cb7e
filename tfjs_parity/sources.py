"""Where a model comes from: the model source registry (issue 31), beside the kinds.

A source is told from what --model names, before anything loads; it says which kinds of tfjs
model it converts into (the first is the default) and what step 1 does with it. The kinds
(kinds/) say how a tfjs model of theirs is planned, run and judged; a source says how to get
one. A new source (ONNX, say) is one entry here and its loader in the kind's conversion
(pipeline/create.py)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    name: str
    kinds: tuple      # the kinds of tfjs model it converts into, the default first
    what: str         # for messages: what --model names


SOURCES = {source.name: source for source in (
    Source("study", ("layers", "graph"), "the study's model"),
    Source("keras", ("layers", "graph"), "a Keras model (.keras, .h5, or a Keras SavedModel)"),
    Source("saved_model", ("graph",), "a SavedModel that is not a Keras model"),
    Source("layers_json", ("layers", "graph"), "a converted tfjs layers model.json"),
    Source("graph_json", ("graph",), "a converted tfjs graph model.json"),
)}


def detect(path):
    """The Source of what --model names (None: the study's model); a model.json is read (and
    checked: model_json.read_model_json) to tell a graph model from a layers model."""
    if path is None:
        return SOURCES["study"]
    if path.is_dir() and (path / "saved_model.pb").is_file() and not (path / "keras_metadata.pb").is_file():
        return SOURCES["saved_model"]
    if path.suffix == ".json":
        from .model_json import GRAPH_FORMAT, read_model_json
        return SOURCES["graph_json" if read_model_json(path)["format"] == GRAPH_FORMAT else "layers_json"]
    return SOURCES["keras"]


def is_converted(source):
    """A model.json someone converted: run as it is (its weights, quantized or not, are the
    model)."""
    return source.name in ("graph_json", "layers_json")
