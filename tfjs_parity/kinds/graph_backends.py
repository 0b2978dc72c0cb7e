"""What tfjs 4.22's backends can run of a graph model, told before anything runs: the ops no
backend has a kernel for and fusions tfjs's fused kernels do not apply (a KitError: the model
cannot run in tfjs), and, per backend, the nodes a backend is known to fail at or to compute
wrongly (step 1's `foreseen:` lines; each measured by a test and a reproducer in tests/repro/)."""
from .. import KitError
from . import graph_exec
from .graph_exec import data_inputs, split_tensor


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
