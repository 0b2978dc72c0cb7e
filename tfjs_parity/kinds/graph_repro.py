"""A graph model's node as a reproducer (repro.py writes it): a tfjs graph model.json holding
the node alone, as the converter wrote it, with the constants and shape arithmetic it reads
(their values as weights) and a Placeholder for each tensor another point computed, fed what
this runtime fed it. TensorFlow Python runs the same small graph for its own answer."""
import base64

import numpy as np

from .. import KitError
from ..model_json import read_model_json
from .graph_exec import Session, for_tensorflow, local_graph, split_tensor

# a placeholder's dtype, from the array a runtime fed it
_DTYPES = {"float32": ("DT_FLOAT", 1), "int32": ("DT_INT32", 3), "bool": ("DT_BOOL", 10)}
# a Const's TensorFlow dtype -> the tfjs weight it is stored as (the converter writes int64 as
# int32, float16 and float64 as float32, and keeps the node's own dtype)
_WEIGHT_DTYPES = {1: "float32", 2: "float32", 19: "float32", 3: "int32", 9: "int32", 10: "bool"}


def _kind(array):
    array = np.asarray(array)
    return "bool" if array.dtype == bool else "int32" if np.issubdtype(array.dtype, np.integer) else "float32"


def node_graph(local, point, capture):
    """({modelTopology, weightSpecs, weightData}, [placeholder names], [the arrays fed, as the
    runtime held them], [output tensor names], the float32 GraphDef) of `point` alone."""
    from google.protobuf.json_format import MessageToDict
    graph, plan = local.graph, local.plan
    captured = {p.layer: p.outputs for p in plan.points}
    inputs = {spec.name for spec in plan.inputs}
    graph_def, fed = local_graph(graph.graph_def, graph.nodes, point.layer, captured, inputs)
    feeds, arrays = [], []
    by_placeholder = {split_tensor(placeholder)[0]: tensor for tensor, placeholder in fed.items()}
    for node in graph_def.node:
        if node.op != "Placeholder":
            continue
        if node.name in by_placeholder:  # another point's output (a float), as this runtime computed it
            source, index = split_tensor(by_placeholder[node.name])
            array = np.asarray(capture.outputs(source)[index])
            node.attr["dtype"].type = _DTYPES[_kind(array)][1]
        elif node.name in capture.inputs:  # a model input, as this runtime was fed it (its declared dtype kept)
            array = np.asarray(capture.inputs[node.name])
        else:
            raise KitError(f"node {point.layer!r} reads {node.name!r}, which no capture holds")
        node.attr["shape"].shape.Clear()
        for size in array.shape:
            node.attr["shape"].shape.dim.add().size = size
        feeds.append(node.name)
        arrays.append(array)
    original = {node.get("name"): node for node in
                read_model_json(graph.folder / "model.json", flag="the converted model")["modelTopology"]["node"]}
    nodes, specs, data = [], [], []
    for node in graph_def.node:
        as_json = MessageToDict(node)
        if node.op == "Const":
            value = graph.constants.get(node.name)
            if value is None:  # a constant the model held inline
                import tensorflow as tf
                value = tf.make_ndarray(node.attr["value"].tensor)
            dtype = _WEIGHT_DTYPES.get(node.attr["dtype"].type)
            if dtype is None:
                raise KitError(f"node {point.layer!r} reads constant {node.name!r} of a dtype tfjs weights cannot hold")
            value = np.asarray(value).astype({"float32": np.float32, "int32": np.int32, "bool": np.uint8}[dtype])
            specs.append({"name": node.name, "shape": list(value.shape), "dtype": dtype})
            data.append(value.tobytes())
            # as the converter writes a Const: its dtype and shape, the values in the weights
            if node.name in original:
                as_json = original[node.name]
            else:
                tensor = as_json.get("attr", {}).get("value", {}).get("tensor", {})
                for key in [k for k in tensor if k not in ("dtype", "tensorShape")]:
                    del tensor[key]
        elif node.op != "Placeholder" and node.name in original:
            as_json = dict(original[node.name], input=list(node.input))  # as converted, rewired
        nodes.append(as_json)
    topology = {"node": nodes, "versions": MessageToDict(graph_def.versions)}
    outputs = [f"{point.layer}:{k}" for k in range(point.outputs)]
    model = {"modelTopology": topology, "weightSpecs": specs,
             "weightData": base64.b64encode(b"".join(data)).decode("ascii")}
    return model, feeds, arrays, outputs, graph_def


def tensorflow_answer(graph_def, feeds, arrays, outputs):
    """TensorFlow Python's float32 answer of the small graph on the same inputs (its tfjs-only
    ops, a fused depthwise convolution or a Prelu, as TensorFlow runs them: for_tensorflow)."""
    session = Session(for_tensorflow(graph_def), "the node's reproducer graph")
    given = {}
    for name, array in zip(feeds, arrays):  # each as its placeholder is declared (an int64 input: int64)
        given[f"{name}:0"] = np.asarray(array).astype(session.dtype(f"{name}:0").as_numpy_dtype)
    return [np.asarray(a) for a in session.run(given, outputs)]
