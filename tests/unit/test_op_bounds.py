"""The graph kind's per-op bounds (op_bounds.py), on the kit's own machinery in-process: a
small graph of each op is frozen, captured in float32 by TensorFlow (graph_exec: what Python
runs), its exact answer taken in float64, and each node judged locally as compare_outputs.py
judges it. TensorFlow's float32 result must be within the bound, and the bound must say
something (far below the ceiling of 2**-10 of the node's magnitude)."""
import os

import numpy as np
import pytest

from tfjs_parity.model import load_keras

os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")  # the converter imports TF-DF, which would import IPython under pytest

load_keras()  # tf-keras selected before TensorFlow is imported (the kit's rule)
import tensorflow as tf  # noqa: E402

from tfjs_parity.kinds import graph_convert, graph_model  # noqa: E402
from tfjs_parity.plan import Input  # noqa: E402
from tfjs_parity.reference import reference_capture  # noqa: E402
from tfjs_parity.runners import python_runner  # noqa: E402
from tfjs_parity.verdict import FLOAT32  # noqa: E402

R = np.random.default_rng(4)


def const(*shape, low=-1.0, high=1.0):
    return tf.constant(R.uniform(low, high, shape).astype(np.float32))


W = const(6, 5)
K = const(3, 3, 2, 4)
D = const(3, 3, 2, 1)
T = const(3, 3, 2, 2)  # a transposed convolution's filter: [kh, kw, out, in]
SCALE, OFFSET, MEAN, VAR = const(2), const(2), const(2), const(2, low=0.2, high=3)

# name -> (input shape, function of the input, ops it must hold)
CASES = {
    "arithmetic": ([2, 6], lambda x: (x + 0.5) * 3.0 - x / (tf.abs(x) + 0.25), {"AddV2", "Mul", "Sub", "RealDiv"}),
    "elementary": ([2, 6], lambda x: tf.math.rsqrt(tf.abs(x) + 0.5) + tf.sqrt(tf.abs(x) + 0.1) + tf.exp(x)
                   + tf.math.log(tf.abs(x) + 0.5), {"Rsqrt", "Sqrt", "Exp", "Log"}),
    "activations": ([2, 6], lambda x: tf.nn.sigmoid(x) + tf.nn.tanh(3 * x) + tf.nn.elu(2 * x) + tf.nn.relu6(4 * x)
                    + tf.nn.leaky_relu(x) + tf.nn.softplus(x), {"Sigmoid", "Tanh", "Elu", "Relu6", "LeakyRelu",
                                                                "Softplus"}),
    "squares": ([2, 6], lambda x: tf.square(x) + tf.math.squared_difference(x, 0.3) + tf.add_n([x, 2 * x, x * x]),
                {"Square", "SquaredDifference", "AddN"}),
    "reductions": ([3, 6], lambda x: tf.reduce_mean(x, axis=1) + tf.reduce_sum(x * x, axis=1)
                   + tf.reduce_max(x, axis=1), {"Mean", "Sum", "Max"}),
    "softmax": ([3, 7], lambda x: tf.nn.softmax(4 * x), {"Softmax"}),
    "matmul": ([4, 6], lambda x: tf.nn.bias_add(tf.matmul(x, W), const(5)), {"MatMul", "BiasAdd"}),
    "batch_matmul": ([2, 3, 6], lambda x: tf.reduce_sum(tf.matmul(tf.matmul(x, x, transpose_b=True), x), axis=2, keepdims=True)
                     + tf.einsum("bij,jk->bik", x, W),
                     {"BatchMatMulV2", "Einsum"}),
    "convolutions": ([1, 6, 6, 2], lambda x: tf.reduce_sum(tf.nn.conv2d(x, K, 1, "SAME"), axis=3, keepdims=True)
                     + tf.nn.depthwise_conv2d(x, D, [1, 1, 1, 1], "SAME")
                     + tf.nn.conv2d_transpose(x, T, [1, 6, 6, 2], 1, "SAME"),
                     {"Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput"}),
    "einsum_ellipsis": ([2, 64, 3], lambda x: tf.einsum("ij...,k->ik...", x, const(5)), {"Einsum"}),
    "pooling": ([1, 6, 6, 2], lambda x: tf.nn.avg_pool2d(x, 2, 2, "VALID") + tf.nn.max_pool2d(x, 2, 2, "VALID"),
                {"AvgPool", "MaxPool"}),
    "batch_norm": ([1, 4, 4, 2], lambda x: tf.compat.v1.nn.fused_batch_norm(x * 5.0, SCALE, OFFSET, MEAN, VAR,
                                                                             is_training=False)[0],
                   {"FusedBatchNormV3"}),
    "resize_bilinear": ([1, 4, 5, 2], lambda x: tf.image.resize(x * 3.0, [7, 9], method="bilinear")
                        + tf.compat.v1.image.resize_bilinear(x, [6, 6], align_corners=True)[:, :1, :1],
                        {"ResizeBilinear"}),
    "erf": ([2, 6], lambda x: tf.math.erf(3.0 * x), {"Erf"}),
    "data_movement": ([2, 6], lambda x: tf.concat([tf.transpose(tf.reshape(x, [2, 3, 2]), [0, 2, 1]),
                                                   tf.pad(tf.reshape(x, [2, 2, 3]), [[0, 0], [0, 0], [0, 0]])],
                                                  axis=1), {"Reshape", "Transpose", "ConcatV2", "Pad"}),
}


def judged(shape, function):
    """{node op: [(error / bound max, bound / magnitude)]} of every point of the function's
    frozen graph, TensorFlow's float32 capture judged against its local float64 answer."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    concrete = tf.function(function).get_concrete_function(tf.TensorSpec(shape, tf.float32, name="x"))
    graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    constants = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}
    outputs = {"y": {"name": concrete.outputs[0].name}}
    graph = graph_model.GraphModel(None, graph_def, {"inputs": {}, "outputs": outputs}, constants)
    specs = [Input("x", list(shape), "float32")]
    plan = graph_model.make_plan(graph, specs, {})
    feed = {"x": R.uniform(-1, 1, shape).astype(np.float32)}
    python = python_runner.capture(graph_model.python_probe(graph, plan), plan, feed, repeat=1)
    exact = reference_capture(graph_model.float64_probe(graph, plan), plan, feed)
    local = graph_model.LocalReference(graph, plan, exact)
    results = {}
    for point, outputs_, bounds in local.evaluate_capture(python, [FLOAT32]):
        got = np.concatenate([np.ravel(a).astype(np.float64) for a in python.outputs(point.name)])
        want = np.concatenate([np.ravel(a) for a in outputs_])
        bound = None if bounds["float32"] is None else np.concatenate([np.ravel(b) for b in bounds["float32"]])
        magnitude = float(np.max(np.abs(want), initial=0.0)) or 1.0
        ratio = None if bound is None else float(np.max(np.abs(got - want) / bound))
        tightness = None if bound is None else float(np.max(bound)) / magnitude
        results.setdefault(point.class_name, []).append((ratio, tightness))
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_tensorflow_float32_is_within_every_ops_bound_and_the_bound_says_something(name):
    shape, function, ops = CASES[name]
    results = judged(shape, function)
    assert ops <= set(results), (ops - set(results), sorted(results))
    for op, entries in results.items():
        for ratio, tightness in entries:
            assert ratio is not None, f"{op}: no bound"
            assert ratio <= 1, f"{op}: {ratio:.3g} of its bound"
            assert tightness < 2.0 ** -14, f"{op}: a bound of {tightness:.3g} of the magnitude says nothing"


def test_an_op_without_an_error_model_has_no_bound():
    results = judged([2, 6], lambda x: tf.math.cumsum(x, axis=1))
    assert results["Cumsum"] == [(None, None)]


def test_a_wrong_value_is_beyond_the_bound():
    """The check can fail: one product off by one unit roundoff of the sum's terms is within;
    a weight off by 1e-3 is not (the local answer uses the model's constants)."""
    from tfjs_parity import op_bounds
    from tensorflow.core.framework import node_def_pb2
    node = node_def_pb2.NodeDef(name="m", op="MatMul")
    x, w = R.uniform(-1, 1, (2, 6)), R.uniform(-1, 1, (6, 5))
    exact = x @ w
    call = op_bounds.OpCall(node, [x, w], [exact], lambda arrays: np.abs(arrays[0]) @ np.abs(arrays[1]))
    bound = op_bounds.op_bound(call, FLOAT32)[0]
    assert np.all(np.abs((x @ (w + 1e-3)) - exact) > bound)
    assert np.all(np.abs(exact.astype(np.float32).astype(np.float64) - exact) <= bound)


def test_a_bias_added_first_is_within_a_fused_ops_bound():
    """The bias is a term of the sum: wasm's XNNPACK starts each sum at it (found on
    EfficientNetB0: tests/repro/wasm_bias_first.js). Sixteen products of just under half an
    ULP of a bias of 3, added after it, are each rounded away: a correct float32 evaluation
    off by 16 of them, which a bound without |b| in S (the kit's first) called a mismatch."""
    from tensorflow.core.framework import attr_value_pb2, graph_pb2
    x_in = tf.constant(np.ones((1, 16), np.float32))
    weights = np.full((16, 4), 0.99 * 2.0 ** -23, np.float32)
    bias = np.full(4, 3.0, np.float32)
    concrete = tf.function(lambda x: tf.nn.bias_add(tf.matmul(x, weights), bias)).get_concrete_function(
        tf.TensorSpec([1, 16], tf.float32, name="x"))
    original = concrete.graph.as_graph_def()
    graph_def = graph_pb2.GraphDef()
    graph_def.versions.CopyFrom(original.versions)
    matmul = next(n for n in original.node if n.op == "MatMul")
    for node in original.node:
        if node.op == "MatMul":
            continue
        copy = graph_def.node.add()
        copy.CopyFrom(node)
        if node.op == "BiasAdd":  # grappler's fusion, as the converter writes it
            copy.op = "_FusedMatMul"
            del copy.input[:]
            copy.input.extend([matmul.input[0], matmul.input[1], node.input[1]])
            for key in ("transpose_a", "transpose_b"):
                copy.attr[key].CopyFrom(matmul.attr[key])
            copy.attr.pop("data_format", None)
            copy.attr["fused_ops"].CopyFrom(attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(
                s=[b"BiasAdd"])))
            copy.attr["num_args"].i = 1
    constants = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}
    fused = next(n for n in graph_def.node if n.op == "_FusedMatMul")
    graph = graph_model.GraphModel(None, graph_def, {"outputs": {"y": {"name": f"{fused.name}:0"}}}, constants)
    plan = graph_model.make_plan(graph, [Input("x", [1, 16], "float32")], {})
    feed = {"x": x_in.numpy()}
    capture = python_runner.capture(graph_model.python_probe(graph, plan), plan, feed, repeat=1)
    exact = reference_capture(graph_model.float64_probe(graph, plan), plan, feed)
    bias_first = np.full((1, 4), 3.0, np.float32)
    for _ in range(16):
        bias_first = (bias_first + np.float32(weights[0, 0])).astype(np.float32)  # rounded away each time
    point = next(p for p in plan.points if p.class_name == "_FusedMatMul")
    capture.tensors[f"{point.name}_output"] = [bias_first]
    local = graph_model.LocalReference(graph, plan, exact)
    for judged_point, outputs_, bounds in local.evaluate_capture(capture, [FLOAT32]):
        if judged_point.name == point.name:
            error = np.abs(bias_first.astype(np.float64) - outputs_[0])
            assert np.all(error > 0) and np.all(error <= bounds["float32"][0]), (error, bounds["float32"][0])
            return
    raise AssertionError("the fused node was not judged")


def test_an_einsums_contracted_length_counts_the_letters_before_an_ellipsis():
    from tfjs_parity.op_bounds import _einsum_terms
    assert _einsum_terms("ij...,k->ik...", [np.zeros((2, 64, 3)), np.zeros(5)]) == 64
    assert _einsum_terms("bij,jk->bik", [np.zeros((2, 3, 6)), np.zeros((6, 5))]) == 6
    assert _einsum_terms("ij->i", [np.zeros((3, 7))]) == 7


def test_the_conversion_check_pairs_outputs_by_their_number_not_the_manifests_order():
    class Probe:
        def shipped(self, feed):  # the converted graph's outputs, in the signature's (scrambled) order
            return [np.ones((1, 10)), np.zeros((1, 2)), np.full((1, 3), 2.0)]
    graph = graph_model.GraphModel(None, tf.compat.v1.GraphDef(), {"outputs": {
        "output_10:0": {}, "output_0:0": {}, "output_2:0": {}}}, {})
    original = [np.zeros((1, 2)), np.full((1, 3), 2.0), np.ones((1, 10))]  # the Keras model's order
    check = graph_convert.conversion_check(graph, Probe(), {}, original)
    assert check["verdict"] == "same bits", check


def test_int64_constants_read_back_in_their_dtype(tmp_path):
    """The converter writes an int64 constant's values as int32; read back under its int64
    dtype, TensorFlow refused to run the graph."""
    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.gather(x, tf.constant([0, 2], tf.int64), axis=1) * 2.0}
    module = Module()
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"serving_default": module.serve})
    (tmp_path / "model").mkdir()
    graph_convert.convert_saved_model(tmp_path / "saved", "serving_default", tmp_path / "model")
    graph = graph_model.read_graph_model(tmp_path / "model")
    assert any(n.op == "Const" and n.attr["dtype"].type == tf.int64.as_datatype_enum for n in graph.graph_def.node)
    plan = graph_model.make_plan(graph, graph_model.specs(graph), {})
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (y,) = graph_model.python_probe(graph, plan).shipped({"x": x})
    assert np.array_equal(y, x[:, [0, 2]] * 2)
