"""A tfjs graph model executed by TensorFlow Python: its GraphDef (modelTopology, with the
constants read back from its weight files) imported into a tf.Graph and run in a session.

Two rewrites of the converted GraphDef, each keeping every capture point's node name:
  - `for_tensorflow`: what TensorFlow runs in float32. The converted graph is executed as
    it is (grappler's fused ops included: _FusedConv2D, _FusedMatMul), except the ops the
    tfjs converter invents, which TensorFlow does not have: `Prelu`, `FusedDepthwiseConv2dNative`
    and a fused op whose activation is Prelu. Each becomes the TensorFlow ops that compute
    what tfjs computes (PReLU as select(x < 0, alpha * x, x), as tfjs's kernels do).
  - `for_float64`: the exact answer. Every fused op unfused into its parts (TensorFlow has
    no float64 kernel for _FusedMatMul or _FusedDepthwiseConv2dNative, and the exact answer
    of a sum is the same however it is fused), every float32 type float64, every constant
    cast exactly. The unfused parts are named `<node>/kit_<part>`, the last one `<node>`:
    a dot-product node's pre-activation is its `kit_bias` part (or, with no activation, the
    node itself), its dot product alone `kit_linear`.
A session can feed any tensor: a node's local exact answer is the float64 graph run with
that node's inputs fed (a runtime's own values), and nothing before it computed.

(Over 400 lines: the two rewrites and the normalisation of older converters' nodes work on
the same GraphDef walk and helpers; apart, each would carry its own copy of them.)
"""
import numpy as np

from .. import KitError

DT_FLOAT, DT_DOUBLE, DT_BOOL = 1, 2, 10


def tensor_name(text):
    """'node' or 'node:1' -> 'node:0' / 'node:1' (a GraphDef input; '^node' is control)."""
    return text if ":" in text else f"{text}:0"


def split_tensor(text):
    node, _, index = text.partition(":")
    return node, int(index or 0)


def data_inputs(node):
    return [i for i in node.input if not i.startswith("^")]


def _new_node(graph_def, name, op, inputs, attrs, like=None):
    node = graph_def.node.add()
    node.name, node.op = name, op
    node.input.extend(inputs)
    if like is not None and like.device:
        node.device = like.device
    for key, value in attrs.items():
        node.attr[key].CopyFrom(value)
    return node


def _attr(**values):
    from tensorflow.core.framework import attr_value_pb2
    attrs = {}
    for key, value in values.items():
        if isinstance(value, attr_value_pb2.AttrValue):
            attrs[key] = value
        elif isinstance(value, bool):
            attrs[key] = attr_value_pb2.AttrValue(b=value)
        elif isinstance(value, float):
            attrs[key] = attr_value_pb2.AttrValue(f=value)
        elif isinstance(value, bytes):
            attrs[key] = attr_value_pb2.AttrValue(s=value)
        elif isinstance(value, int):
            attrs[key] = attr_value_pb2.AttrValue(type=value)
        else:
            raise TypeError(key)
    return attrs


def _const(graph_def, name, value, dtype):
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2
    proto = tf.make_tensor_proto(np.asarray(value, dtype=np.float64 if dtype == DT_DOUBLE else np.float32))
    return _new_node(graph_def, name, "Const", [], {"dtype": attr_value_pb2.AttrValue(type=dtype),
                                                     "value": attr_value_pb2.AttrValue(tensor=proto)})


def fused_ops(node):
    return [op.decode() for op in node.attr["fused_ops"].list.s] if "fused_ops" in node.attr else []


def _activation(graph_def, name, activation, source, alpha_input, node, dtype):
    """Append the nodes computing `activation` of `source`, the last one named `name`."""
    T = _attr(T=dtype)["T"]
    if activation in ("Relu", "Relu6", "Elu", "Selu", "Sigmoid", "Tanh"):
        _new_node(graph_def, name, activation, [source], {"T": T}, node)
    elif activation == "LeakyRelu":
        alpha = node.attr["leakyrelu_alpha"].f if "leakyrelu_alpha" in node.attr else node.attr["alpha"].f
        _new_node(graph_def, name, "LeakyRelu", [source], {"T": T, **_attr(alpha=float(alpha))}, node)
    elif activation == "Prelu":
        _prelu(graph_def, name, source, alpha_input, node, dtype)
    else:
        raise KitError(f"node {node.name!r} ({node.op}): fused activation {activation!r} is unknown to the kit")


def _prelu(graph_def, name, x, alpha, node, dtype):
    """tfjs's PReLU: where(x < 0, alpha * x, x) (kernels/Prelu in every backend)."""
    T = _attr(T=dtype)["T"]
    _const(graph_def, f"{name}/kit_zero", 0.0, dtype)
    _new_node(graph_def, f"{name}/kit_less", "Less", [x, f"{name}/kit_zero"], {"T": T}, node)
    _new_node(graph_def, f"{name}/kit_scaled", "Mul", [alpha, x], {"T": T}, node)
    _new_node(graph_def, name, "SelectV2", [f"{name}/kit_less", f"{name}/kit_scaled", x], {"T": T}, node)


def _copy_attrs(node, keys):
    return {key: node.attr[key] for key in keys if key in node.attr}


def _unfuse(graph_def, node, dtype, keep_tf_fused, ranks):
    """Append the parts of fused `node` to graph_def (its name on the last); False when the
    node is not a fused op (or is kept as TensorFlow has it). `ranks`: {const: rank}."""
    ops = fused_ops(node)
    inputs = data_inputs(node)
    name = node.name
    if node.op in ("_FusedConv2D", "_FusedMatMul"):
        # grappler fuses any addition as a bias: a scalar (relu6(conv + 3.0), MobileNetV3's hard
        # sigmoid once the zero bias is folded away) or another tensor. TensorFlow's own kernel
        # refuses a bias that is not a 1-D constant (oneDNN's aborts the process), while tfjs
        # broadcasts it. Unfused then.
        # (or a tensor computed in the graph: another product, an LSTM's x W + h U)
        scalar_bias = len(inputs) > 2 and ranks.get(split_tensor(inputs[2])[0]) != 1
        if keep_tf_fused and "Prelu" not in ops and not scalar_bias:
            return False
        if node.op == "_FusedConv2D":
            base, attrs = "Conv2D", _copy_attrs(node, ("strides", "padding", "explicit_paddings", "data_format",
                                                       "dilations", "use_cudnn_on_gpu"))
        else:
            base, attrs = "MatMul", _copy_attrs(node, ("transpose_a", "transpose_b"))
        if keep_tf_fused and not scalar_bias:  # TensorFlow's fused op without the activation it lacks, then PReLU
            kept = graph_def.node.add()
            kept.CopyFrom(node)
            kept.name = f"{name}/kit_bias"
            del kept.input[:]
            kept.input.extend(inputs[:3])
            kept.attr["fused_ops"].list.s[:] = [op.encode() for op in ops if op != "Prelu"]
            kept.attr["num_args"].i = 1
            if "TArgs" in kept.attr:  # its one extra input now, the bias (PReLU's alpha went with the activation)
                kept.attr["TArgs"].list.type[:] = [node.attr["T"].type]
            _prelu(graph_def, name, f"{name}/kit_bias", inputs[3], node, dtype)
            return True
        return _unfused_parts(graph_def, node, base, attrs, inputs, ops, dtype, ranks)
    if node.op == "FusedDepthwiseConv2dNative":
        attrs = _copy_attrs(node, ("strides", "padding", "explicit_paddings", "data_format", "dilations"))
        return _unfused_parts(graph_def, node, "DepthwiseConv2dNative", attrs, inputs, ops, dtype, ranks)
    if node.op == "Prelu":
        _prelu(graph_def, name, inputs[0], inputs[1], node, dtype)
        return True
    if not keep_tf_fused and node.op in FLOAT_OUTPUT:  # computed as TensorFlow has it, its output cast
        kept = graph_def.node.add()
        kept.CopyFrom(node)
        kept.name = f"{name}/kit_float32"
        _new_node(graph_def, name, "Cast", [kept.name], _attr(SrcT=DT_FLOAT, DstT=DT_DOUBLE), node)
        return True
    if not keep_tf_fused and node.op.startswith("FusedBatchNorm"):
        return _batch_norm_parts(graph_def, node, inputs, dtype)
    return False


# Ops whose output TensorFlow computes in float32 whatever their input (no float64 kernel):
# their "exact" answer is TensorFlow's float32 one, so they get no bound (docs/verdicts-and-bounds.md).
FLOAT_OUTPUT = frozenset({"ResizeBilinear", "ResizeBicubic", "ResizeArea"})
CONTROL_FLOW = frozenset({"Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond"})  # v1 control flow's ops


def _batch_norm_parts(graph_def, node, inputs, dtype):
    """Inference batch norm, (x - mean) * (scale * rsqrt(variance + epsilon)) + offset, as
    float64 ops (TensorFlow's FusedBatchNorm has no float64 kernel); channels last."""
    name = node.name
    if node.attr["data_format"].s.decode() not in ("", "NHWC") or node.attr["is_training"].b:
        raise KitError(f"node {name!r} ({node.op}): only inference batch norm, channels last, has an exact answer "
                       "in the kit")
    T = _attr(T=dtype)["T"]
    x, scale, offset, mean, variance = inputs[:5]
    _const(graph_def, f"{name}/kit_epsilon", node.attr["epsilon"].f, dtype)
    _new_node(graph_def, f"{name}/kit_shifted", "AddV2", [variance, f"{name}/kit_epsilon"], {"T": T}, node)
    _new_node(graph_def, f"{name}/kit_rsqrt", "Rsqrt", [f"{name}/kit_shifted"], {"T": T}, node)
    _new_node(graph_def, f"{name}/kit_factor", "Mul", [scale, f"{name}/kit_rsqrt"], {"T": T}, node)
    _new_node(graph_def, f"{name}/kit_centred", "Sub", [x, mean], {"T": T}, node)
    _new_node(graph_def, f"{name}/kit_scaled", "Mul", [f"{name}/kit_centred", f"{name}/kit_factor"], {"T": T}, node)
    _new_node(graph_def, name, "AddV2", [f"{name}/kit_scaled", offset], {"T": T}, node)
    return True


def _unfused_parts(graph_def, node, base, attrs, inputs, ops, dtype, ranks):
    """`base` (the dot product), then its bias, then its activation; the last named as `node`."""
    T = _attr(T=dtype)["T"]
    name = node.name
    biased = bool(ops) and ops[0] in ("BiasAdd", "Add")
    activations = [op for op in (ops[1:] if biased else ops) if op != "NoOp"]  # NoOp: tfjs's "no bias"
    if len(activations) > 1:
        raise KitError(f"node {name!r} ({node.op}): fused ops {ops} are not supported by the kit")
    last = f"{name}/kit_linear" if biased or activations else name
    _new_node(graph_def, last, base, inputs[:2], {"T": T, **attrs}, node)
    if biased:
        target = f"{name}/kit_bias" if activations else name
        bias_attrs = _copy_attrs(node, ("data_format",)) if base != "MatMul" else {}
        if ranks.get(split_tensor(inputs[2])[0]) == 1:
            _new_node(graph_def, target, "BiasAdd", [last, inputs[2]], {"T": T, **bias_attrs}, node)
        else:  # a bias of another shape, broadcast (as tfjs adds it)
            _new_node(graph_def, target, "AddV2", [last, inputs[2]], {"T": T}, node)
        last = target
    if activations:
        alpha = inputs[3 if biased else 2] if len(inputs) > (3 if biased else 2) else None
        _activation(graph_def, name, activations[0], last, alpha, node, dtype)
    return True


def rewritten(graph_def, float64):
    """A copy of graph_def for TensorFlow: tfjs-only ops replaced (for_tensorflow), or every
    fused op unfused and every float32 type float64 (for_float64)."""
    from tensorflow.core.framework import graph_pb2
    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    dtype = DT_DOUBLE if float64 else DT_FLOAT
    ranks = {node.name: len(node.attr["value"].tensor.tensor_shape.dim) for node in graph_def.node if node.op == "Const"}
    for node in graph_def.node:
        if not _unfuse(out, node, dtype, not float64, ranks):
            out.node.add().CopyFrom(node)
    if float64:
        flows = flow_nodes(graph_def)[1]
        narrow = [node for node in out.node if node.name not in flows and _float32_only(node)]
        kept = {node.name for node in narrow} | flows
        for node in out.node:
            _to_float64(node, keep_float=node.name in kept)
            if node.op == "Cast" and node.input and node.input[0].endswith("/kit_float32"):
                node.attr["SrcT"].type = DT_FLOAT  # what a FLOAT_OUTPUT op gives, whatever it is fed
        for node in narrow:  # (after: the casts it adds are typed already)
            _float32_island(out, node)
    return out


def normalize(graph_def):
    """Make each node of a converted GraphDef what TensorFlow's op registry asks of it today,
    in place, as tfjs reads it (tfjs reads none of these attributes): older converters wrote
    _FusedConv2D and _FusedMatMul without `TArgs`, which TensorFlow 2.19 requires; it is
    [T] * num_args (the fused op's extra inputs, its bias and PReLU's alpha, are of its type).
    A missing attribute with a default takes the op definition's default; an attribute the
    op does not define is dropped (names starting with '_' are TensorFlow's own and stay).
    Ops TensorFlow does not have (tfjs's Prelu, FusedDepthwiseConv2dNative) are left to the
    rewrites. Returns what was changed, [{op, attr, action, nodes, first}], for the plan; a
    required attribute that cannot be derived is a KitError naming the node, op and attribute."""
    from tensorflow.core.framework import attr_value_pb2
    from tensorflow.python.framework import op_def_registry
    changes = {}

    def note(node, attr, action):
        entry = changes.setdefault((node.op, attr, action), {"op": node.op, "attr": attr, "action": action,
                                                             "nodes": 0, "first": node.name})
        entry["nodes"] += 1
    for node in graph_def.node:
        definition = op_def_registry.get(node.op)
        if definition is None:
            continue
        known = {attr.name: attr for attr in definition.attr}
        for name in list(node.attr):
            if name not in known and not name.startswith("_"):
                del node.attr[name]
                note(node, name, "dropped: the op does not define it")
        for name, attr in known.items():
            if name in node.attr:
                continue
            if name == "TArgs" and "T" in node.attr:
                count = node.attr["num_args"].i if "num_args" in node.attr else max(len(data_inputs(node)) - 2, 0)
                node.attr[name].CopyFrom(attr_value_pb2.AttrValue(
                    list=attr_value_pb2.AttrValue.ListValue(type=[node.attr["T"].type] * count)))
                note(node, name, "derived: [T] * num_args")
            elif attr.HasField("default_value"):
                node.attr[name].CopyFrom(attr.default_value)
                note(node, name, "the op's default")
            else:
                raise KitError(f"node {node.name!r} ({node.op}) has no attribute {name!r}, which TensorFlow requires "
                               "and the kit cannot derive, so the graph cannot run in TensorFlow")
    return list(changes.values())


# Ops whose output is their input passed on, typed by their attr T: a TensorArray's flow
# keeps its float32 type through them (carried into a loop, out of it, through a branch).
PASSING = frozenset({"Identity", "Snapshot", "StopGradient", "Enter", "RefEnter", "Exit", "RefExit", "Switch",
                     "RefSwitch", "Merge", "RefMerge", "NextIteration", "RefNextIteration"})


def flow_nodes(graph_def):
    """(producers, passing): the nodes whose float32 outputs only carry a value an op's
    definition fixes (a TensorArray's `flow`: TensorArrayV3's second output, the output of
    TensorArrayWriteV3 and TensorArrayScatterV3, ...), not a number of the model; and those
    passing such a value on (Enter, Merge, NextIteration, Exit, Identity). A flow's type is the
    op's, not the model's precision: the float64 rewrite keeps the passing nodes' float32, and
    no point captures either."""
    from tensorflow.python.framework import op_def_registry
    nodes = {node.name: node for node in graph_def.node}
    fixed = {}  # node -> the indices of its outputs whose float32 type its op definition fixes
    for node in graph_def.node:
        definition = op_def_registry.get(node.op)
        if definition is None or not node.op.startswith("TensorArray"):  # (a resize's float output is a value)
            continue
        indices = [k for k, arg in enumerate(definition.output_arg)
                   if arg.type == DT_FLOAT and not arg.type_attr and not arg.number_attr]
        if indices:
            fixed[node.name] = set(indices)
    producers = {name for name in fixed
                 if all(arg.type and not arg.type_attr and not arg.number_attr and not arg.type_list_attr
                        for arg in op_def_registry.get(nodes[name].op).output_arg)}
    flows, changed = set(), True
    while changed:  # to a fixed point: a loop's Merge reads its NextIteration, after it in no order
        changed = False
        for node in graph_def.node:
            if node.op not in PASSING or node.name in flows:
                continue
            for text in data_inputs(node):
                source, index = split_tensor(text)
                if index in fixed.get(source, ()) or (source in flows and source in nodes):
                    flows.add(node.name)
                    changed = True
                    break
    return producers, flows


def _to_float64(node, keep_float=False):
    import tensorflow as tf
    if keep_float:
        node.attr.pop("_output_shapes", None)
        node.device = ""
        return
    for key in node.attr:
        value = node.attr[key]
        if value.type == DT_FLOAT:
            value.type = DT_DOUBLE
        if value.list.type:
            value.list.type[:] = [DT_DOUBLE if t == DT_FLOAT else t for t in value.list.type]
    if node.op == "Const" and node.attr["value"].tensor.dtype == DT_FLOAT:
        array = tf.make_ndarray(node.attr["value"].tensor).astype(np.float64)
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array))
    node.attr.pop("_output_shapes", None)
    node.device = ""


def _float32_only(node):
    """Whether `node` computes in float32 and its op has no float64 kernel in TensorFlow (its
    type attribute allows float but not double: NonMaxSuppressionV3/V4/V5's boxes and scores)."""
    from tensorflow.python.framework import op_def_registry
    definition = op_def_registry.get(node.op)
    if definition is None:
        return False
    for attr in definition.attr:
        allowed = attr.allowed_values.list.type if attr.type == "type" else []
        if allowed and DT_FLOAT in allowed and DT_DOUBLE not in allowed and node.attr[attr.name].type == DT_FLOAT:
            return True
    return False


def _float32_island(graph_def, node):
    """`node` kept in float32 inside the float64 graph: its float inputs cast down to float32,
    its outputs given under its own name by an IdentityN, float ones cast up to float64. Its
    answer is TensorFlow's float32 one (as for FLOAT_OUTPUT ops): what it selects (indices)
    is not judged, what follows it is, from the runtime's own values."""
    from tensorflow.python.framework import op_def_registry
    definition = op_def_registry.get(node.op)
    if any(arg.number_attr or arg.type_list_attr for arg in [*definition.input_arg, *definition.output_arg]):
        raise KitError(f"node {node.name!r} ({node.op}) has no float64 kernel in TensorFlow and lists of inputs or "
                       "outputs: the kit cannot compute its exact answer")

    def arg_type(arg):
        return node.attr[arg.type_attr].type if arg.type_attr else arg.type
    inputs = data_inputs(node)
    for k, arg in enumerate(definition.input_arg):
        if k < len(inputs) and arg_type(arg) == DT_FLOAT:
            cast = _new_node(graph_def, f"{node.name}/kit_in{k}", "Cast", [inputs[k]],
                             _attr(SrcT=DT_DOUBLE, DstT=DT_FLOAT), node)
            node.input[k] = cast.name
    types = [arg_type(arg) for arg in definition.output_arg]
    if DT_FLOAT not in types:
        return
    name = node.name
    node.name = f"{name}/kit_float32"
    outputs = []
    for k, dtype in enumerate(types):
        if dtype == DT_FLOAT:
            _new_node(graph_def, f"{name}/kit_out{k}", "Cast", [f"{node.name}:{k}"], _attr(SrcT=DT_FLOAT, DstT=DT_DOUBLE),
                      node)
            outputs.append(f"{name}/kit_out{k}")
        else:
            outputs.append(f"{node.name}:{k}")
    from tensorflow.core.framework import attr_value_pb2
    identity = _new_node(graph_def, name, "IdentityN", outputs, {}, node)
    identity.attr["T"].CopyFrom(attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(
        type=[DT_DOUBLE if t == DT_FLOAT else t for t in types])))


def for_tensorflow(graph_def):
    return rewritten(graph_def, float64=False)


def for_float64(graph_def):
    return rewritten(graph_def, float64=True)


def local_graph(graph_def, by_name, point, captured, inputs):
    """The part of a (float64) graph that computes node `point` from what a runtime fed it: the
    node, its unfused parts and the constants and shape arithmetic they read, with every other
    point's output it reads (`captured`: {node: outputs captured}) a Placeholder. Returns
    (GraphDef, {original tensor: its placeholder tensor}). A session on the whole graph would
    copy all of it (hundreds of MB of float64 constants) for each new feed: seconds per node."""
    from tensorflow.core.framework import attr_value_pb2, graph_pb2
    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    fed, kept, stack = {}, set(), [point]
    while stack:
        name = stack.pop()
        if name in kept:
            continue
        kept.add(name)
        copy = out.node.add()
        copy.CopyFrom(by_name[name])
        rewired = []
        for text in copy.input:
            source, index = split_tensor(text.lstrip("^"))
            own = source == point or source.startswith(point + "/kit_")
            if text.startswith("^"):  # an order, not a value: kept inside a loop (it puts a node in
                if own or (source not in inputs and source not in captured):  # its frame), else dropped
                    rewired.append(text)
                    stack.append(source)
                continue
            if not own and source not in inputs and index < captured.get(source, 0):
                placeholder = f"{source}/kit_fed_{index}"
                if f"{source}:{index}" not in fed:
                    fed[f"{source}:{index}"] = f"{placeholder}:0"
                    node = out.node.add()
                    node.name, node.op = placeholder, "Placeholder"
                    node.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=DT_DOUBLE))
                rewired.append(placeholder)
            else:
                rewired.append(text)
                stack.append(source)
        del copy.input[:]
        copy.input.extend(rewired)
    return out, fed


class Session:
    """A GraphDef imported and ready to run: run({tensor: array}, [tensor names])."""

    def __init__(self, graph_def, where="the converted graph"):
        import tensorflow as tf
        self.tf = tf
        self.graph = tf.Graph()
        with self.graph.as_default():
            try:
                tf.graph_util.import_graph_def(graph_def, name="")
            except (ValueError, tf.errors.OpError) as error:
                raise KitError(f"{where} does not load in TensorFlow ({' '.join(str(error).split())[:300]})") from None
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=0, inter_op_parallelism_threads=1)
        # the graph as written: no grappler pass in the session (it would fold, reorder and fuse
        # the converted ops again, and Python would no longer run what tfjs runs)
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)

    def dtype(self, tensor):
        return self.graph.get_tensor_by_name(tensor_name(tensor)).dtype

    def outputs_of(self, node_name):
        return self.graph.get_operation_by_name(node_name).outputs

    def has(self, node_name):
        try:
            self.graph.get_operation_by_name(node_name)
            return True
        except KeyError:
            return False

    def run(self, feeds, fetches):
        try:
            return self.session.run([tensor_name(f) for f in fetches],
                                    {tensor_name(name): value for name, value in feeds.items()})
        except self.tf.errors.OpError as error:
            raise KitError(f"TensorFlow cannot run the graph: {' '.join(error.message.split())[:300]}") from None
