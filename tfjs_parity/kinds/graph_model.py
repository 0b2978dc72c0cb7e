"""The graph-model kind: a GraphDef of TensorFlow ops that tfjs runs with tf.loadGraphModel
and model.execute (what tensorflowjs_converter writes for a SavedModel, and for a Keras
model with --output_format=tfjs_graph_model). Its JS half is graph_model.js beside this file.

Ways in: a Keras model converted as a graph (`--as graph`), a SavedModel that is not a
Keras model (a signature of a tf.Module or a v1 graph), or the converted model.json itself.
Whichever, Python runs what tfjs runs: the converted model.json read back (graph_exec.py).

A capture point is one node producing float tensors, named by the node; plumbing (Const,
Identity, Placeholder, NoOp) is left out, and a node's weights are the float constants it
reads, captured at the first node reading them. Its sources name a model input, another
point's output, a constant, or a tensor the graph computes itself from those (a shape).

Beside it: graph_convert.py (the converter, and how far it moved the model), graph_backends.py
(what tfjs's backends can run, told before anything runs), graph_reference.py (the local exact
answer) and graph_exec.py (the GraphDef in a TensorFlow session, in float32 and float64).
"""
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import KitError
from .. import plan as plan_module
from ..capture_json import encode_tensor
from ..commit import model_id
from ..files import atomic_write_text, write_error
from ..model import held_stderr
from ..model_json import GRAPH_FORMAT, read_model_json
from ..paths import INPUT_FILE
from . import graph_exec
from .graph_exec import CONTROL_FLOW, Session, data_inputs, split_tensor
from .graph_reference import LocalReference

NAME = "graph"
FORMAT = GRAPH_FORMAT
PLUMBING = frozenset({"Const", "Identity", "Snapshot", "StopGradient", "Placeholder", "PlaceholderWithDefault",
                      "NoOp"})
PASS_THROUGH = frozenset({"Identity", "Snapshot", "StopGradient"})
# A graph input's dtype -> (what tfjs feeds it, the declared dtype when that is another): tfjs's
# converter feeds integers as int32 and float16 and float64 as float32 (its parseDtypeParam).
DTYPES = {"DT_FLOAT": ("float32", ""), "DT_HALF": ("float32", "float16"), "DT_DOUBLE": ("float32", "float64"),
          "DT_INT32": ("int32", ""), "DT_INT64": ("int32", "int64"), "DT_INT16": ("int32", "int16"),
          "DT_INT8": ("int32", "int8"), "DT_UINT8": ("int32", "uint8"), "DT_UINT16": ("int32", "uint16"),
          "DT_BOOL": ("bool", "")}


@dataclass
class GraphModel:
    """A converted tfjs graph model, read back: the GraphDef with its constants' values."""
    folder: Path
    graph_def: object
    signature: dict
    constants: dict                 # Const node name -> its value (as the weight files hold it, dequantized)
    quantized: dict = field(default_factory=dict)  # weight name -> its quantization (quantization.py)
    normalized: list = field(default_factory=list)  # what graph_exec.normalize filled in or dropped
    nodes: dict = field(default_factory=dict)

    def __post_init__(self):
        self.nodes = {node.name: node for node in self.graph_def.node}


# --- conversion ----------------------------------------------------------------------------

def read_graph_model(folder, shown=None):
    """The GraphModel converted in `folder` (model.json and its weight files); `shown`: the
    path errors name (the user's model.json, not the folder step 1 stages a copy in)."""
    import tensorflow as tf
    from google.protobuf.json_format import ParseDict, ParseError
    from tensorflow.core.framework import graph_pb2
    from ..quantization import decoded_weights, manifest_quantization
    folder = Path(folder)
    where = f"--model {shown}" if shown else folder / "model.json"
    try:
        document = read_model_json(folder / "model.json", flag="the converted model")
    except KitError as error:
        if shown:
            raise KitError(str(error).replace(f"the converted model {folder / 'model.json'}", where)) from None
        raise
    if document.get("format") != FORMAT:
        raise KitError(f"{where}: a {document.get('format')}, not a graph model")
    try:
        graph_def = ParseDict(document["modelTopology"], graph_pb2.GraphDef())
    except (ParseError, TypeError, ValueError) as error:
        raise KitError(f"{where}: its modelTopology is not a GraphDef ({' '.join(str(error).split())[:200]})") \
            from None
    normalized = graph_exec.normalize(graph_def)
    if graph_def.library.function:
        raise KitError(f"{where}: the graph holds functions (control flow: If/While as functions); the kit "
                       "captures graphs without them (convert without --control_flow_v2)")
    manifest = document.get("weightsManifest", [])
    try:
        groups = decoded_weights(folder, manifest)
    except Exception as error:  # the decoder raises many kinds for weights that do not fit their files
        raise KitError(f"{where}: its weights do not decode ({' '.join(str(error).split())[:200]})") from None
    constants = {entry["name"]: entry["data"] for group in groups for entry in group}
    for node in graph_def.node:
        if node.op == "Const" and node.name in constants:  # in the node's own dtype: the converter
            dtype = tf.as_dtype(node.attr["dtype"].type)    # writes int64 weights as int32
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(constants[node.name]),
                                                                    dtype=dtype))
    signature = document.get("signature") or {}
    return GraphModel(folder, graph_def, signature, {name: value for name, value in constants.items()
                                                     if isinstance(value, np.ndarray)},
                      manifest_quantization(manifest), normalized)


def specs(graph, shapes=None):
    """[plan.Input] of the graph's inputs: its signature's, else its Placeholders. `shapes`:
    --input-shape's {name: [dims]}, for inputs whose shape the model does not say (or to fix
    its free dimensions); an input of unknown shape without one has shape None."""
    from ..plan import Input
    entries = list((graph.signature.get("inputs") or {}).values())
    if not entries:
        entries = [{"name": node.name + ":0", "dtype": _attr_dtype(node), "tensorShape": node.attr["shape"]
                    and _shape_dict(node)} for node in graph.graph_def.node if node.op == "Placeholder"]
    result = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise KitError("the model's signature lists an input without a tensor name; convert the model again")
        name = split_tensor(entry["name"])[0]
        dtype = entry.get("dtype", "DT_FLOAT")
        if dtype not in DTYPES:
            raise KitError(f"the model's input {name!r} is {str(dtype).removeprefix('DT_').lower()[:20]}, which the "
                           "kit cannot feed (it feeds every number type tfjs does: float16/32/64, int8/16/32/64, "
                           "uint8/16 and bool)")
        shape = entry.get("tensorShape") or {}
        dims = None if shape.get("unknownRank") else \
            [None if int(d.get("size", 0)) < 0 else int(d.get("size", 0)) for d in shape.get("dim", [])]
        if shapes and name in shapes:
            given = shapes[name]
            if dims is not None and (len(given) != len(dims) or any(d is not None and d != g
                                                                    for d, g in zip(dims, given))):
                raise KitError(f"--input-shape {name}={','.join(map(str, given))}: the model's input {name!r} has "
                               f"shape {['?' if d is None else d for d in dims]}")
            dims = list(given)
        result.append(Input(name, dims, *DTYPES[dtype]))
    unknown = set(shapes or ()) - {spec.name for spec in result}
    if unknown:
        raise KitError(f"--input-shape {sorted(unknown)[0]}=...: the model has no input of that name; its inputs are "
                       f"{', '.join(spec.name for spec in result)}")
    if not result:
        raise KitError("the graph has no inputs")
    return result


def _attr_dtype(node):
    from tensorflow.core.framework import types_pb2
    return types_pb2.DataType.Name(node.attr["dtype"].type)


def _shape_dict(node):
    from google.protobuf.json_format import MessageToDict
    return MessageToDict(node.attr["shape"].shape)


def output_tensors(graph):
    """The graph's output tensors ('node:k'), in its signature's order."""
    entries = list((graph.signature.get("outputs") or {}).values())
    if entries:
        return [graph_exec.tensor_name(e["name"]) for e in entries]
    used = {split_tensor(i)[0] for node in graph.graph_def.node for i in node.input}
    return [f"{node.name}:0" for node in graph.graph_def.node if node.name not in used and node.op not in PLUMBING]


# --- the plan --------------------------------------------------------------------------------

# What tfjs 4.22's fused kernels apply after a _FusedConv2D, _FusedMatMul or
# FusedDepthwiseConv2dNative (tfjs-converter's convolution and matrix executors, fused_util).
def _resolve(graph, tensor):
    """The tensor `tensor` really is, through Identity-like plumbing: (node, index)."""
    node, index = split_tensor(tensor)
    seen = set()
    while node in graph.nodes and graph.nodes[node].op in PASS_THROUGH and node not in seen:
        seen.add(node)
        node, index = split_tensor(data_inputs(graph.nodes[node])[0])
    return node, index


def _topological(graph):
    order, done, visiting = [], set(), set()
    for start in graph.graph_def.node:
        stack = [(start.name, False)]
        while stack:
            name, expanded = stack.pop()
            if name in done or name not in graph.nodes:
                continue
            if expanded:
                done.add(name)
                order.append(graph.nodes[name])
                continue
            if name in visiting:
                raise KitError(f"the graph has a cycle at node {name!r} (control flow v1?); the kit cannot order it")
            visiting.add(name)
            stack.append((name, True))
            for source in graph.nodes[name].input:
                source_node = split_tensor(source.lstrip("^"))[0]
                if source_node in graph.nodes and graph.nodes[source_node].op == "NextIteration":
                    continue  # a loop's back edge: the next iteration's value, not an order
                if source_node not in done:
                    stack.append((source_node, False))
    return order


FUNCTIONAL_FLOW = frozenset({"If", "StatelessIf", "While", "StatelessWhile"})


def inside_control_flow(graph):
    """The nodes inside a loop or a conditional branch (control flow v1, what the converter
    writes): those a loop's Enter or a conditional's Switch reaches before its Exit or Merge.
    They have no single value per execution (a loop body runs many times; an untaken branch
    none), so they are not captured; the Merge and Exit after them are."""
    consumers = {}
    for node in graph.graph_def.node:
        for source in node.input:
            consumers.setdefault(split_tensor(source.lstrip("^"))[0], []).append(node.name)
    def reach(starts, ends):
        found, stack = set(), list(starts)
        while stack:
            name = stack.pop()
            if name in found:
                continue
            found.add(name)
            stack.extend(c for c in consumers.get(name, ()) if graph.nodes[c].op not in ends)
        return found
    # a loop's frame: from its Enter to its Exit (conditionals inside it included)
    loops = reach([n.name for n in graph.graph_def.node if n.op == "Enter"], {"Exit"})
    # a conditional's branches: from its Switch to its Merge
    branches = reach([n.name for n in graph.graph_def.node if n.op == "Switch" and n.name not in loops],
                     {"Merge", "Exit"})
    return loops | branches


def make_plan(graph, specs_, described, session=None, keep_plumbing=False):
    """The probe plan of a GraphModel: a point per node producing float tensors, outside
    loops and conditional branches (those inside are counted in the plan's source);
    `keep_plumbing`: the Identity-like nodes too (constants and inputs are captured anyway,
    as weights and inputs)."""
    import tensorflow as tf
    functional = next((node for node in graph.graph_def.node if node.op in FUNCTIONAL_FLOW), None)
    if functional is not None:
        raise KitError(f"node {functional.name!r} is control flow as a function ({functional.op}); convert without "
                       "--control_flow_v2")
    inside = inside_control_flow(graph).union(*graph_exec.flow_nodes(graph.graph_def))  # a TensorArray's flow
    session = session or tensorflow_session(graph)
    referenced = {}
    for node in graph.graph_def.node:
        for source in data_inputs(node):
            name, index = split_tensor(source)
            referenced[name] = max(referenced.get(name, 0), index)
    for tensor in output_tensors(graph):
        name, index = _resolve(graph, tensor)
        referenced[name] = max(referenced.get(name, 0), index)
    inputs = {spec.name for spec in specs_}
    points, captured_constants, point_outputs = [], set(), {}
    for node in _topological(graph):
        plumbing = node.op in PLUMBING and not (keep_plumbing and node.op in PASS_THROUGH)
        if plumbing or node.name in inside or not session.has(node.name):
            continue
        outputs = session.outputs_of(node.name)
        count = 0
        for tensor in outputs[:referenced.get(node.name, 0) + 1]:
            if tensor.dtype != tf.float32:
                break
            count += 1
        if count == 0:
            continue
        sources, constants = [], []
        for source in data_inputs(node):
            name, index = _resolve(graph, source)
            op = graph.nodes[name].op if name in graph.nodes else None
            if name in inputs:
                sources.append({"input": name})
            elif op == "Const" and name in graph.constants and graph.constants[name].dtype == np.float32:
                sources.append({"constant": name})
                if name not in captured_constants:
                    captured_constants.add(name)
                    constants.append(name)
            elif index < point_outputs.get(name, 0):
                sources.append({"point": name, "index": index})
            else:
                sources.append({"tensor": f"{name}:{index}"})
        point_outputs[node.name] = count
        points.append(plan_module.Point(node.name, node.name, node.op, 0, sources, count, bool(constants),
                                        constants=constants, group=node.name.rpartition("/")[0] or node.name,
                                        kwargs={"fused_ops": graph_exec.fused_ops(node)} if "fused_ops" in node.attr
                                        else {}))
    if not points:
        raise KitError("the graph computes no float tensor: nothing to capture")
    resolved = (_resolve(graph, tensor) for tensor in output_tensors(graph))  # the model's outputs (Plan.outputs)
    described = dict(described, outputs=list(dict.fromkeys(name for name, index in resolved
                                                           if index < point_outputs.get(name, 0))))
    if graph.normalized:
        described = dict(described, normalized={
            "changes": graph.normalized,
            "why": "what TensorFlow requires of each node today, as older converters did not write it (tfjs reads "
                   "none of it): the graph TensorFlow runs, the same computation"})
    if inside:
        computing = sorted(n for n in inside if graph.nodes[n].op not in CONTROL_FLOW | PLUMBING)
        described = dict(described, control_flow={
            "not_captured": len(computing), "nodes": computing,
            "why": "inside a loop or a conditional branch: no single value per execution (the Merge and Exit "
                   "after them are captured)"})
    return plan_module.Plan(specs_, points, described, kind=NAME)


def record_quantization(graph, plan, qmap):
    """Record in `plan` the quantization of `graph`'s weights (quantization.plan_section;
    `qmap`: --quantize's, None for a model given quantized): each point's constants by name,
    and the model's outputs as points."""
    from ..quantization import plan_section
    outputs, counts = [], {p.name: p.outputs for p in plan.points}
    for tensor in output_tensors(graph):
        name, index = _resolve(graph, tensor)
        if index < counts.get(name, 0):
            outputs.append({"point": name, "index": index, "softmax": graph.nodes[name].op == "Softmax"})
    plan.quantization = plan_section(qmap, graph.quantized, {p.name: list(p.constants) for p in plan.points},
                                     outputs)


def stage_plan(plan, inputs, model_dir):
    """Write the inputs and the plan (with the model's id) beside the converted graph model."""
    try:
        atomic_write_text(model_dir / INPUT_FILE, json.dumps({name: encode_tensor(a) for name, a in inputs.items()}))
        plan.model_id = model_id(model_dir)
        plan.save(model_dir / plan_module.PLAN_FILE)
    except OSError as error:
        raise write_error(model_dir, error) from None


# --- Python's execution of the plan ------------------------------------------------------------

class GraphProbe:
    """The converted graph in a TensorFlow session: float32 as TensorFlow runs it, or float64
    (every fused op unfused) for the exact answer. The runner interface of python_runner."""

    def __init__(self, graph, plan, float64=False, session=None):
        import tensorflow as tf
        self.graph, self.plan, self.float64 = graph, plan, float64
        rewrite = graph_exec.for_float64 if float64 else graph_exec.for_tensorflow
        self.session = session or Session(rewrite(graph.graph_def))
        self.fetches = [f"{p.layer}:{k}" for p in plan.points for k in range(p.outputs)]
        self.outputs = output_tensors(graph)
        self.versions = {"tensorflow": tf.__version__}

    def _feeds(self, feed):
        dtype = np.float64 if self.float64 else np.float32
        return {name: (a if np.issubdtype(a.dtype, np.integer) else np.asarray(a, dtype))
                for name, a in feed.items()}

    def shipped(self, feed):
        return self.session.run(self._feeds(feed), self.outputs)

    def predict(self, feed):
        return self.session.run(self._feeds(feed), self.fetches)

    def weights(self, point):
        return [self.graph.constants[name] for name in point.constants]


def python_probe(graph, plan, session=None):
    """`session`: the float32 one make_plan read the dtypes from (tensorflow_session), reused."""
    return GraphProbe(graph, plan, session=session)


def tensorflow_session(graph):
    """The converted graph as TensorFlow runs it in float32 (graph_exec.for_tensorflow)."""
    return Session(graph_exec.for_tensorflow(graph.graph_def))


def float64_probe(graph, plan):
    return GraphProbe(graph, plan, float64=True)


# --- the conversion itself ---------------------------------------------------------------------


def local_reference(converted_dir, plan, reference):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # as model.load_keras would have it, if Keras comes later
    with held_stderr():  # TensorFlow's native start-up logs, shown only if something fails
        import tensorflow  # noqa: F401
        return LocalReference(read_graph_model(converted_dir), plan, reference)
