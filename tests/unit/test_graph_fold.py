"""graph_fold.fold_batch_norms, the converter's fold of batch norms into convolutions with its
weight scaling vectorized, gives the converter's own graph bit for bit (issue 34: that scaling
was 46 of ResNet50's 56 s in step 1 as a graph model)."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")


def frozen_graph():
    """A Conv2D and a DepthwiseConv2dNative (channel multiplier 2), each followed by a
    FusedBatchNormV3 with the statistics training gives, as constants."""
    rng = np.random.default_rng(5)

    def const(*shape, low=-1.0, high=1.0):
        return tf.constant(rng.uniform(low, high, shape).astype(np.float32))
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 3], name="x")
        y = tf.nn.conv2d(x, const(3, 3, 3, 5), 1, "SAME")
        y = tf.compat.v1.nn.fused_batch_norm(y, const(5), const(5), mean=const(5), variance=const(5, low=0.1, high=3),
                                             is_training=False)[0]
        z = tf.nn.depthwise_conv2d(y, const(3, 3, 5, 2), [1, 1, 1, 1], "SAME")
        tf.compat.v1.nn.fused_batch_norm(z, const(10), const(10), mean=const(10), variance=const(10, low=0.1, high=3),
                                         is_training=False, name="out")
    return graph.as_graph_def()


def test_the_vectorized_fold_is_the_converter_s_bit_for_bit(monkeypatch):
    # tensorflow_decision_forests, which the converter imports, imports IPython for its banner
    # when stdout is not a terminal or file (pytest's capture): no banner
    monkeypatch.setenv("TFDF_DISABLE_WELCOME_MESSAGE", "1")
    from tensorflow.core.framework import graph_pb2
    from tensorflowjs.converters import fold_batch_norms as theirs
    from tfjs_parity.kinds import graph_fold

    def fresh():  # the fold rewires the nodes it is given: each gets its own copy
        copy = graph_pb2.GraphDef()
        copy.CopyFrom(graph_def)
        return copy
    graph_def = frozen_graph()
    expected, ours = theirs.fold_batch_norms(fresh()), graph_fold.fold_batch_norms(fresh())
    assert not any(node.op.startswith("FusedBatchNorm") for node in ours.node)  # it folded both
    assert {node.op for node in ours.node} >= {"Conv2D", "DepthwiseConv2dNative", "BiasAdd"}
    assert ours.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
