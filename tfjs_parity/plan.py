"""The probe plan: what to capture, written once by Python beside the converted model and
executed by every runtime (the Python runner, the float64 reference, Node and the page), so
"which tensors make a capture" is decided in one place.

A capture point is a named tensor of the model's graph (or a few: a call returning several):
in a layers model (the kind of model: kinds/), one call of one layer, named after the layer,
or `<layer>_call<k>` for the k-th call of a layer used more than once (a shared layer). Each
point records the tensors that feed it (a model input by name, or another point's output),
how many tensors it returns, and whether it carries the weights (a layer's first call).
"""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import KitError
from .files import atomic_write_text
from .wire import PLAN_FILE  # noqa: F401 (plan.PLAN_FILE: the name every side reads)

PLAN_SCHEMA = 1


@dataclass
class Input:
    name: str
    shape: list      # with the batch dimension as null; None: the model does not say (its rank either)
    dtype: str       # what every runtime feeds: float32, int32 or bool (tfjs's dtypes)
    declared: str = ""  # the model's own dtype when tfjs feeds another (uint8, int8, int16, float16: fed as
                        # int32 or float32, as tfjs's converter feeds them), else ""


@dataclass
class Point:
    name: str        # the capture's key prefix
    layer: str       # the layer's name in the converted (flat) model
    class_name: str
    node: int        # which call of the layer
    sources: list    # what feeds it, in call order: [{"input": name}] or [{"point": name, "index": i}]
    outputs: int     # how many tensors the call returns
    weights: bool    # True for the layer's first call: its weights are captured there
    path: list = field(default_factory=list)  # where the layer lives in the user's model (nested models)
    kwargs: dict = field(default_factory=dict)  # the call's non-tensor keyword arguments
    constants: list = field(default_factory=list)  # graph models: the constants (weights) captured here
    group: str = ""  # graph models: what the node came from (its name scope: a Keras layer), for reports


@dataclass
class Plan:
    inputs: list
    points: list
    source: dict = field(default_factory=dict)  # the model the user gave: its format and file
    model_id: str = ""  # a hash of the converted model and inputs; every capture of it records it
    kind: str = "layers"  # the kind of model (kinds/): how every runtime loads it and executes the plan
    quantization: dict = field(default_factory=dict)  # a quantized model's record (quantization.plan_section)

    def sinks(self):
        """The points no other point reads (the model's outputs, and any dead end)."""
        read = {source.get("point") for point in self.points for source in point.sources}
        return [point.name for point in self.points if point.name not in read]

    def outputs(self):
        """The model's outputs, as points: what step 1 recorded, else (a plan from before it
        did) the sinks."""
        return list(self.source.get("outputs") or self.sinks())

    def check_capture(self, capture):
        """KitError naming the capture's file unless it holds what this plan captures: every
        point's outputs (as many as the call returns) and the model's inputs by name, shaped
        as the model takes them."""
        where = capture.source or capture.label
        for point in self.points:
            key = f"{point.name}_output"
            if key not in capture.tensors:
                raise KitError(f"{where}: no {key}; it is not a capture of this model (rerun the step that made it)")
            if len(capture.tensors[key]) != point.outputs:
                raise KitError(f"{where}: {key} holds {len(capture.tensors[key])} tensors, the model's layer "
                               f"returns {point.outputs}")
        inputs = capture.inputs
        if list(inputs) == [None] and len(self.inputs) == 1:  # a capture from before named inputs
            inputs = {self.inputs[0].name: inputs[None]}
        for spec in self.inputs:
            if spec.name not in inputs:
                raise KitError(f"{where}: its metadata holds no input {spec.name!r}")
            shape = list(inputs[spec.name].shape)
            if spec.shape is not None and (len(shape) != len(spec.shape) or
                                           any(s is not None and s != d for s, d in zip(spec.shape, shape))):
                raise KitError(f"{where}: input {spec.name!r} has shape {shape}, the model takes {spec.shape}")

    def point(self, name):
        return next(p for p in self.points if p.name == name)

    def to_json(self):
        document = {"schema": PLAN_SCHEMA, "kind": self.kind, "model_id": self.model_id, "source": self.source,
                    "inputs": [asdict(i) for i in self.inputs], "points": [asdict(p) for p in self.points]}
        if self.quantization:
            document["quantization"] = self.quantization
        return json.dumps(document, indent=1)

    def save(self, path):
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path):
        path = Path(path)
        if not path.is_file():
            raise KitError(f"{path} not found; run `python create_keras_model.py` to convert the model again")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            return cls([Input(**i) for i in document["inputs"]], [Point(**p) for p in document["points"]],
                       document.get("source", {}), str(document.get("model_id", "")), str(document.get("kind", "layers")),
                       dict(document.get("quantization") or {}))
        except (ValueError, KeyError, TypeError) as error:
            raise KitError(f"{path}: not a probe plan ({error}); run `python create_keras_model.py` again") from None


def point_names(graph):
    """{(layer, node): point name} for every call in a flat topology.Graph."""
    names = {}
    for layer in graph.layers:
        for k in range(len(layer.nodes)):
            names[(layer.name, k)] = layer.name if len(layer.nodes) == 1 else f"{layer.name}_call{k}"
    taken = {layer.name for layer in graph.layers}
    for (layer, k), name in names.items():
        if name != layer and name in taken:
            raise KitError(f"layer {layer!r} is called {k + 1}+ times and a layer is named {name!r}: "
                           "the capture points would clash; rename that layer")
    return names


def build(graph, output_counts, inputs, source):
    """The Plan of a flat graph. `output_counts`: {(layer, node): tensors that call returns}."""
    if not any(layer.nodes for layer in graph.layers):
        raise KitError("the model has no layers besides its inputs: nothing to capture")
    input_names = {name for name, _, _ in graph.inputs}
    names = point_names(graph)
    points = []
    for layer in graph.layers:
        for k, node in enumerate(layer.nodes):
            sources = [{"input": name} if name in input_names else {"point": names[(name, index)], "index": tensor}
                       for name, index, tensor in node.inputs]
            points.append(Point(names[(layer.name, k)], layer.name, layer.class_name, k, sources,
                                output_counts[(layer.name, k)], k == 0, list(layer.path), node.kwargs))
    return Plan(inputs, _topological(points), source)


def _topological(points):
    """Points ordered so that each comes after those feeding it, otherwise as given."""
    done, ordered, pending = set(), [], list(points)
    while pending:
        ready = next((i for i, p in enumerate(pending)
                      if all("input" in s or s["point"] in done for s in p.sources)), None)
        if ready is None:
            raise KitError(f"the model's graph has a cycle at layer {pending[0].layer!r}")
        point = pending.pop(ready)
        done.add(point.name)
        ordered.append(point)
    return ordered
