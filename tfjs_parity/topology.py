"""A Keras model's graph, read from its config (tf-keras's format or Keras 3's), and flattened:
nested models (Functional or Sequential inside a model) are replaced by their own layers,
called on the outer tensors, so every inner layer is a capture point of its own.

Both Keras formats describe a functional model as a list of layers, each with its inbound
nodes (one per call), each node naming the tensors it consumes as (layer, node, tensor).
They differ in spelling:

- tf-keras: `inbound_nodes: [[[layer, node, tensor, kwargs], ...], ...]`;
- Keras 3: `inbound_nodes: [{"args": [...], "kwargs": {...}}]` with `__keras_tensor__`
  entries holding `keras_history: [layer, node, tensor]`;
and in how they count a nested model's calls (`_counts_from_one`).
"""
from dataclasses import dataclass, field

from . import KitError

MODEL_CLASSES = ("Functional", "Model", "Sequential")


@dataclass
class Node:
    inputs: list               # [(layer, node, tensor)] in call order
    kwargs: dict = field(default_factory=dict)


@dataclass
class Layer:
    name: str
    class_name: str
    config: dict               # the layer's own config (for a model: its graph's config)
    nodes: list = field(default_factory=list)
    path: tuple = ()           # where it lives in the original model: (inner model, ..., layer name)


@dataclass
class Graph:
    name: str
    layers: list               # Layers in config order
    inputs: list               # [(input layer, 0, 0)]
    outputs: list              # [(layer, node, tensor)]


def is_model(class_name):
    return class_name in MODEL_CLASSES


def parse(model_config, keras3):
    """The Graph of a model config ({"class_name", "config"}) in either format."""
    class_name, config = model_config["class_name"], model_config["config"]
    if class_name == "Sequential":
        return _parse_sequential(config, keras3)
    if not is_model(class_name):
        raise KitError(f"expected a Keras model, found a single {class_name} layer")
    layers = []
    for entry in config["layers"]:
        layer = Layer(entry.get("name", entry["config"].get("name")), entry["class_name"], entry["config"])
        layer.nodes = [_parse_node(node, keras3) for node in entry.get("inbound_nodes", [])]
        layers.append(layer)
    # A nested model built on an Input has a node of its own construction, which the saved
    # config skips: its calls count from 1 there (tf-keras: everywhere; Keras 3: only in
    # output_layers, and only for Functional models; its tensors' keras_history counts from 0).
    offsets = {layer.name: 1 for layer in layers if _counts_from_one(layer, keras3)}
    if not keras3:
        for layer in layers:
            for node in layer.nodes:
                node.inputs = [(name, index - offsets.get(name, 0), tensor) for name, index, tensor in node.inputs]
    outputs = [(name, index - offsets.get(name, 0), tensor) for name, index, tensor in _triples(config["output_layers"])]
    return Graph(config.get("name", "model"), layers, _triples(config["input_layers"]), outputs)


def _counts_from_one(layer, keras3):
    if layer.class_name in ("Functional", "Model"):
        return True
    first = (layer.config.get("layers") or [{}])[0]
    return not keras3 and layer.class_name == "Sequential" and first.get("class_name") == "InputLayer"


def _triples(value):
    """input_layers/output_layers: one [name, node, tensor] (Keras 3, one tensor) or a list of them."""
    if value and isinstance(value[0], str):
        value = [value]
    return [tuple(item[:3]) for item in value]


def _parse_node(node, keras3):
    if not keras3 or isinstance(node, list):
        entries = node
        kwargs = entries[0][3] if entries and len(entries[0]) > 3 else {}
        return Node([tuple(entry[:3]) for entry in entries], dict(kwargs or {}))
    inputs = []

    def collect(value):
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            inputs.append(tuple(value["config"]["keras_history"]))
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
    collect(node.get("args", []))
    kwargs = {}
    for key, value in node.get("kwargs", {}).items():
        if key == "mask":  # Keras (and tfjs) pass a layer's mask on by themselves: not an input
            continue
        before = len(inputs)
        collect(value)
        if len(inputs) != before:
            raise KitError(f"a call passes a tensor as keyword argument {key!r}; the kit captures layers whose "
                           "tensors are positional")
        if value is not None:
            kwargs[key] = value
    return Node(inputs, kwargs)


def _parse_sequential(config, keras3):
    """A Sequential model as the chain of calls it is."""
    entries = list(config["layers"])
    if not entries or entries[0]["class_name"] != "InputLayer":
        first = entries[0]["config"] if entries else {}
        shape = (config.get("build_input_shape") or first.get("batch_input_shape") or first.get("batch_shape"))
        if shape is None:
            raise KitError(f"Sequential model {config.get('name')!r} was never built: its input shape is unknown; "
                           "build it (call it once or give it an Input) before saving")
        input_config = ({"batch_shape": list(shape), "dtype": first.get("dtype", "float32")} if keras3
                        else {"batch_input_shape": list(shape), "dtype": "float32"})
        input_config["name"] = f"{config.get('name', 'sequential')}_input"
        entries.insert(0, {"class_name": "InputLayer", "config": input_config})
    layers, previous = [], None
    for entry in entries:
        layer = Layer(entry["config"]["name"], entry["class_name"], entry["config"])
        if previous is not None:
            layer.nodes = [Node([(previous, 0, 0)])]
        layers.append(layer)
        previous = layer.name
    return Graph(config.get("name", "sequential"), layers, [(layers[0].name, 0, 0)], [(previous, 0, 0)])


def flatten(graph, keras3):
    """A Graph with no nested models: each inner layer becomes a layer of the outer graph
    (renamed `<model>_<layer>` only if its name is taken), one node per call of its model."""
    flat, names = {}, set()   # path -> Layer; flat names in use
    reserved = {layer.name for layer in graph.layers if not is_model(layer.class_name)}

    def flat_layer(layer, path):
        if path not in flat:
            name = layer.name
            if name in names or (len(path) > 1 and name in reserved):
                name = "_".join(path)
                while name in names or name in reserved:
                    name += "_"
            names.add(name)
            flat[path] = Layer(name, layer.class_name, layer.config, path=path)
        return flat[path]

    def expand(graph, sources, prefix):
        """Add `graph`'s layers called on `sources` (flat refs for its inputs); return its outputs as flat refs."""
        resolved = {}  # (layer, node) -> flat layer name and node, or a nested model's outputs
        for (name, _, _), source in zip(graph.inputs, sources):
            resolved[(name, 0)] = ("ref", source)
        pending = [(layer, k, node) for layer in graph.layers for k, node in enumerate(layer.nodes)]
        while pending:  # in dependency order: configs list layers in creation order, not always call order
            waiting = []
            for layer, k, node in pending:
                if any((name, index) not in resolved for name, index, _ in node.inputs):
                    waiting.append((layer, k, node))
                    continue
                inputs = [_resolve(resolved[(name, index)], tensor) for name, index, tensor in node.inputs]
                if is_model(layer.class_name):
                    inner = parse({"class_name": layer.class_name, "config": layer.config}, keras3)
                    resolved[(layer.name, k)] = ("outputs", expand(inner, inputs, prefix + (layer.name,)))
                else:
                    target = flat_layer(layer, prefix + (layer.name,))
                    target.nodes.append(Node(inputs, node.kwargs))
                    resolved[(layer.name, k)] = ("node", target.name, len(target.nodes) - 1)
            if len(waiting) == len(pending):
                layer = waiting[0][0]
                raise KitError(f"layer {layer.name!r} consumes a tensor that no layer of model {graph.name!r} makes")
            pending = waiting
        return [_resolve(resolved[(name, index)], tensor) for name, index, tensor in graph.outputs]

    inputs = []
    for name, _, _ in graph.inputs:
        layer = next(layer for layer in graph.layers if layer.name == name)
        inputs.append(flat_layer(layer, (name,)).name)
    outputs = expand(graph, [(name, 0, 0) for name in inputs], ())
    return Graph(graph.name, list(flat.values()), [(name, 0, 0) for name in inputs], outputs)


def _resolve(entry, tensor):
    kind = entry[0]
    if kind == "ref":
        return entry[1] if tensor == 0 else (entry[1][0], entry[1][1], tensor)
    if kind == "outputs":
        return entry[1][tensor]
    return (entry[1], entry[2], tensor)


def to_tf_keras_config(graph, layer_config):
    """The flat graph as a tf-keras functional model config; `layer_config(layer)` gives each
    layer's tf-keras config (translated from Keras 3 when it came from there)."""
    layers = []
    for layer in graph.layers:
        config = dict(layer_config(layer), name=layer.name)
        nodes = [[[name, index, tensor, node.kwargs] for name, index, tensor in node.inputs] for node in layer.nodes]
        layers.append({"class_name": layer.class_name, "config": config, "name": layer.name, "inbound_nodes": nodes})
    return {"class_name": "Functional",
            "config": {"name": graph.name, "trainable": False, "layers": layers,
                       "input_layers": [list(ref) for ref in graph.inputs],
                       "output_layers": [list(ref) for ref in graph.outputs]}}
