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
"""
import collections
import json
import os
import shutil
import threading
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
from .graph_exec import Session, data_inputs, split_tensor

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

def convert_keras(model, keras, model_dir):
    """A Keras model (tf-keras or Keras 3) converted to a tfjs graph model in `model_dir`."""
    import tempfile
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as v2
    with held_stderr():
        try:
            if keras.__name__.startswith("tf_keras"):
                v2.convert_keras_model_to_graph_model(model, str(model_dir))
                return
            with tempfile.TemporaryDirectory() as exported:  # Keras 3: its own SavedModel export
                model.export(exported, verbose=False)
                v2.convert_tf_saved_model(exported, str(model_dir), signature_def="serving_default")
        except ValueError as error:
            raise _conversion_error(error) from None


def convert_saved_model(path, signature, model_dir):
    """A SavedModel's `signature` converted to a tfjs graph model in `model_dir`; KitError
    naming the signatures there are when it has no such one."""
    import tensorflow as tf
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as v2
    with held_stderr():
        try:
            loaded = tf.saved_model.load(str(path))
            names = sorted(loaded.signatures.keys())
        except Exception as error:  # TensorFlow raises many kinds for a folder that is not a SavedModel
            raise KitError(f"--model {path}: cannot load it as a SavedModel ({' '.join(str(error).split())[:300]})") \
                from None
        if signature not in names:
            raise KitError(f"--model {path}: no signature {signature!r}; it has "
                           f"{', '.join(names) if names else 'none (save it with signatures=...)'}: choose one "
                           "with --signature")
        concrete = loaded.signatures[signature]
        for name, spec in concrete.structured_input_signature[1].items():
            if spec.dtype not in (tf.float32, tf.int32, tf.int64):
                raise KitError(f"--model {path}: signature {signature!r} takes input {name!r} of type "
                               f"{spec.dtype.name}; the kit feeds float32 and integer inputs only")
        try:
            v2.convert_tf_saved_model(str(path), str(model_dir), signature_def=signature)
        except ValueError as error:
            raise _conversion_error(error, concrete.graph.as_graph_def()) from None
    return concrete


def _conversion_error(error, graph_def=None):
    """One line for the converter's ValueError: for ops tfjs lacks, the first node using one
    (found in `graph_def`, the function that was converted, when given)."""
    text = " ".join(str(error).split())
    if "Unsupported Ops" not in text:
        return KitError(f"the tfjs converter fails on the model ({text[:300]})")
    ops = [op.strip() for op in text.split("optimization", 1)[-1].split(",") if op.strip()]
    nodes = [] if graph_def is None else \
        list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    node = next((n for n in nodes if n.op in ops), None)
    where = f"node {node.name!r} is op {node.op}" if node else f"op(s) {', '.join(ops)[:200]}"
    return KitError(f"the model cannot run in tfjs: {where}, which tfjs 4.22 has no kernel for (the converter's "
                    "op check)")


def copy_converted(model_json, model_dir):
    """A bare model.json and its weight files (checked: read_graph_model) copied into `model_dir`."""
    model_json = Path(model_json)
    document = read_model_json(model_json)
    model_dir.mkdir()
    try:
        shutil.copyfile(model_json, model_dir / "model.json")
        for group in document["weightsManifest"]:
            for name in group["paths"]:
                shutil.copyfile(model_json.parent / name, model_dir / name)
    except OSError as error:
        raise write_error(model_dir, error) from None


# --- reading a converted model back ----------------------------------------------------------

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
TFJS_FUSED = frozenset({"BiasAdd", "NoOp", "Relu", "Relu6", "Elu", "LeakyRelu", "Prelu", "Sigmoid"})


def check_tfjs_can_run(graph):
    """KitError naming the first node whose op tfjs 4.22 has no kernel for (the converter's
    own op list), or that fuses what tfjs's fused kernels do not apply."""
    from tensorflowjs.converters.tf_saved_model_conversion_v2 import validate
    unsupported = validate(graph.graph_def, False, False)
    for node in graph.graph_def.node:
        if node.op in unsupported:
            raise KitError(f"node {node.name!r}: tfjs 4.22 has no kernel for op {node.op}, so the model cannot run "
                           "in tfjs")
        lacking = [op for op in graph_exec.fused_ops(node) if op not in TFJS_FUSED]
        if lacking:
            hint = (" (TensorFlow's oneDNN fusions, which the converter applies when TensorFlow runs with them: "
                    "convert again with TF_ENABLE_ONEDNN_OPTS=0)" if lacking[0].startswith("_") else "")
            raise KitError(f"node {node.name!r} ({node.op}) fuses {lacking[0]}, which tfjs 4.22's fused kernels do "
                           f"not apply, so the model fails in tfjs{hint}")


# tfjs 4.22 kernels known to fail on what a graph holds, by backend (each measured: tests
# test_shipped_models.py and test_graph_models.py run them and see the failure named).


FLOAT_TYPES = (1, 2, 19)  # DT_FLOAT, DT_DOUBLE, DT_HALF
DT_BOOL = 10


def foreseen(graph):
    """{"fail": {backend: ["node 'X' (Op): why it fails there", ...]}, "wrong": {...}}: what step
    1 can tell before anything runs, the nodes a backend will fail at, and those it will compute
    wrongly (a tfjs bug with a reproducer in tests/repro/). The runs still run (a newer tfjs may
    be right) and the verdicts say what they did."""
    import tensorflow as tf
    found = {}

    def value(tensor):
        node = graph.nodes.get(split_tensor(tensor)[0])
        return tf.make_ndarray(node.attr["value"].tensor) if node is not None and node.op == "Const" else None
    for node in graph.graph_def.node:
        inputs = data_inputs(node)
        fused = graph_exec.fused_ops(node)
        why = []
        if node.op in ("_FusedConv2D", "_FusedMatMul", "FusedDepthwiseConv2dNative") and fused and \
                fused[0] in ("BiasAdd", "Add") and len(inputs) > 2:
            bias = value(inputs[2])
            if bias is not None and bias.ndim != 1:
                kernel = {"_FusedConv2D": "FusedConv2D", "_FusedMatMul": "FusedMatMul"}.get(node.op, "FusedDepthwiseConv2D")
                why.append((("wasm",), f"its fused bias has rank {bias.ndim}, and tfjs 4.22's wasm takes rank 1 only "
                                       f"('{kernel} only supports rank-1 bias but got rank {bias.ndim}')"))
        if (node.op.startswith("BatchMatMul") or node.op == "MatMul") and node.attr["T"].type == 3:  # DT_INT32
            why.append((("wasm",), f"an int32 {node.op}, which tfjs 4.22's wasm refuses ('BatchMatMul for non "
                                   "non-float32 tensors not yet supported')"))
        if node.op in ("Cumsum", "Cumprod") and len(inputs) > 1:
            axis = value(inputs[1])
            if axis is not None and axis.size == 1 and int(axis) < 0:
                why.append((("cpu", "wasm", "webgl"), f"a negative axis ({int(axis)}), which tfjs 4.22's {node.op} "
                            "does not wrap (an output of no shape; WebGL's shader does not compile); tfjs-node's "
                            "tensorflow backend is right"))
        if node.op == "Cast" and node.attr["SrcT"].type in FLOAT_TYPES and node.attr["DstT"].type == DT_BOOL:
            why.append((("wasm",), "a float-to-bool Cast, which tfjs 4.22's wasm computes by truncating each value "
                                   "to an integer modulo 256 (0.5 and 256 become false) where TensorFlow gives x != 0 "
                                   "(tests/repro/wasm_cast_float_to_bool.js); the nodes that read it are judged", "wrong"))
        for backends, text, *verb in why:
            for backend in backends:
                found.setdefault(verb[0] if verb else "fail", {}).setdefault(backend, []).append(
                    f"node {node.name!r} ({node.op}): {text}")
    return found


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


CONTROL_FLOW = frozenset({"Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond"})
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

def conversion_check(graph, probe, feed, original):
    """How far the converter's optimizations (grappler's fusions, folded batch norms) moved the
    model's outputs: the original model's own float32 outputs in TF Python (`original`: a
    SavedModel signature's {output key: array}, or a Keras model's [arrays] in its order)
    against the converted graph's on the same inputs. Judged against the ceiling a node
    without an error model gets (numerics.CEILING of the outputs' magnitude): reordered float32
    arithmetic stays far below it; a conversion that computes something else does not."""
    from ..numerics import CEILING
    keys = list((graph.signature.get("outputs") or {}))
    converted = dict(zip(keys, probe.shipped(feed)))
    if isinstance(original, dict):
        pairs = [(key, original[key], converted[key]) for key in keys if key in original]
    else:  # a Keras model's outputs are Identity, Identity_1, ... (Keras 3's output_0, output_1, ...)
        def index(key):  # in the model.json in no particular order: by their number
            name = split_tensor(key)[0]
            number = name.rpartition("_")[2]
            return int(number) if "_" in name and number.isdigit() else 0
        pairs = [(key, a, converted[key]) for key, a in zip(sorted(keys, key=index), original)]
    if not pairs or len(pairs) != len(keys):
        return {"verdict": "not checked", "why": "the original's outputs do not match the converted graph's"}
    worst, identical = 0.0, True
    for key, a, b in pairs:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            return {"verdict": "changed", "why": f"output {key} has shape {list(a.shape)} in the original, "
                                                 f"{list(b.shape)} converted"}
        identical &= a.tobytes() == b.tobytes()
        magnitude = float(np.max(np.abs(a), initial=0.0)) or 1.0
        worst = max(worst, float(np.max(np.abs(a - b), initial=0.0)) / magnitude)
    verdict = "same bits" if identical else "within float32 rounding" if worst <= CEILING else "changed"
    return {"verdict": verdict, "max_relative": worst, "ceiling": CEILING, "outputs": len(pairs),
            "of": "the original model's own float32 outputs (TF Python) against the converted graph's"}


def conversion_line(check):
    """The report's line for a capture's conversion check, or None."""
    if not check:
        return None
    if "max_relative" not in check:
        return f"conversion: {check['verdict']} ({check.get('why', '')})"
    said = {"same bits": "did not change the model's outputs: the same bits",
            "within float32 rounding": f"moved the model's outputs by at most {check['max_relative']:.2g} of their "
                                       f"magnitude: float32 rounding (below the ceiling of {check['ceiling']:.2g})",
            "changed": f"CHANGED the model's outputs by {check['max_relative']:.3g} of their magnitude, beyond the "
                       f"ceiling of {check['ceiling']:.2g} that reordered float32 arithmetic never reaches"}
    return (f"conversion: the converter's optimizations {said[check['verdict']]} (TF Python, the original model "
            "against the converted graph it wrote)")


# --- the local exact answer ----------------------------------------------------------------------

class LocalReference:
    """Each point of the float64 graph, evaluated on the inputs one runtime fed it: a small
    session per point (graph_exec.local_graph), fed each capture's values.

    The sessions are kept for the last SESSIONS points only (about 135 kB each): captures are
    judged two at a time, in the plan's order, so the pair shares each session and memory stays
    flat in the number of nodes (100k nodes would hold 13 GB of sessions); a later pair builds
    them again (about 1.5 ms a point)."""

    SESSIONS = 512

    def __init__(self, graph, plan, reference):
        from .. import op_bounds
        self.graph, self.plan, self.reference, self.op_bounds = graph, plan, reference, op_bounds
        self.float64 = graph_exec.for_float64(graph.graph_def)
        self.by_name = {node.name: node for node in self.float64.node}
        self.captured = {p.layer: p.outputs for p in plan.points}
        self.inputs = {spec.name for spec in plan.inputs}
        # point -> (Session, {original tensor: its placeholder}, the node's inputs there), the
        # most recently used last; two judges share it
        self.locals = collections.OrderedDict()
        self.lock = threading.Lock()
        self.exact_fed = {}
        with held_stderr():  # TensorFlow's one-time native logs (its first session run), shown only on failure
            from tensorflow.core.framework import graph_pb2
            warm = graph_pb2.GraphDef()
            graph_exec._const(warm, "warm", 0.0, graph_exec.DT_DOUBLE)
            Session(warm).run({}, ["warm"])

    def _local(self, point):
        with self.lock:
            if point.name in self.locals:
                self.locals.move_to_end(point.name)
                return self.locals[point.name]
        graph_def, fed = graph_exec.local_graph(self.float64, self.by_name, point.layer, self.captured,
                                                self.inputs)
        # the converted node's own inputs (its unfused parts read them), as this graph names them
        inputs = [fed.get(graph_exec.tensor_name(name), name) for name in data_inputs(self.graph.nodes[point.layer])]
        local = (Session(graph_def, f"the float64 graph at node {point.layer!r}"), fed, inputs)
        with self.lock:
            # an evicted session is not closed here: the other judge may be running it (it is
            # freed with its last reference)
            local = self.locals.setdefault(point.name, local)
            self.locals.move_to_end(point.name)
            while len(self.locals) > self.SESSIONS:
                self.locals.popitem(last=False)
        return local

    def evaluate_capture(self, capture, precisions):
        from ..reference import as_float64
        inputs = capture.inputs
        base = {}
        for spec in self.plan.inputs:
            if spec.name not in inputs:
                raise KitError(f"{capture.label}: its metadata holds no input {spec.name!r}")
            base[spec.name] = as_float64([inputs[spec.name]])[0]
        for point in self.plan.points:
            node = self.graph.nodes[point.layer]
            session, fed, input_names = self._local(point)
            feeds = {name: value for name, value in base.items() if session.has(name)}
            for tensor, placeholder in fed.items():  # every point's output it reads (through a branch too)
                source, index = split_tensor(tensor)
                own = capture.outputs(source)[index]
                exact = self.reference.outputs(source)[index]
                if np.shape(own) != np.shape(exact):
                    self.exact_fed.setdefault(id(capture), {})[point.name] = source
                    own = exact
                feeds[placeholder] = np.asarray(own, np.float64)
            # a Merge's or Exit's inputs are inside a branch or loop: one has no value (and no
            # error model reads them)
            # (a Merge's or Exit's inputs: see above; a TensorList's or resource's handle is no array)
            read = [] if node.op in CONTROL_FLOW else [name for name in input_names if self._numeric(session, name)]
            fetched = session.run(feeds, [f"{node.name}:{k}" for k in range(point.outputs)] + read)
            outputs = [np.asarray(a, np.float64) for a in fetched[:point.outputs]]
            values = dict(zip(read, fetched[point.outputs:]))
            arrays = [np.asarray(values[name]) if name in values else None for name in input_names] if read else []
            call = self.op_bounds.OpCall(node, arrays, outputs, self._linear(session, node, input_names, feeds))
            with np.errstate(all="ignore"):
                bounds = {p.name: self.op_bounds.op_bound(call, p) for p in precisions}
            yield point, outputs, bounds

    @staticmethod
    def _numeric(session, name):
        try:
            dtype = session.dtype(name)
        except (KeyError, ValueError):
            return False
        return dtype.is_floating or dtype.is_integer or dtype.is_bool

    @staticmethod
    def _linear(session, node, input_names, feeds):
        """f(arrays) -> the node's pre-activation (its dot product and bias) on `arrays` in
        place of its inputs."""
        # the dot product and its bias: the bias is a term of the sum (wasm's XNNPACK starts each
        # sum at it), so S holds |b|. An unfused node with a bias and no activation is its BiasAdd.
        fused = graph_exec.fused_ops(node)
        biased = bool(fused) and fused[0] in ("BiasAdd", "Add")
        if session.has(f"{node.name}/kit_bias"):
            target = f"{node.name}/kit_bias"
        elif biased or not session.has(f"{node.name}/kit_linear"):
            target = node.name
        else:
            target = f"{node.name}/kit_linear"

        def linear(arrays):
            given = dict(feeds)
            given.update({name: a for name, a in zip(input_names, arrays) if a is not None})
            return np.asarray(session.run(given, [target])[0], np.float64)
        return linear


def local_reference(converted_dir, plan, reference):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # as model.load_keras would have it, if Keras comes later
    with held_stderr():  # TensorFlow's native start-up logs, shown only if something fails
        import tensorflow  # noqa: F401
        return LocalReference(read_graph_model(converted_dir), plan, reference)
