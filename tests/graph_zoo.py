"""A zoo of graph models, built for the tests and saved the way their users save them: the
shapes of tfjs's own convert_predict suite (a v1 SavedModel, a v2 function with variables,
a conv2d + BatchNorm + ReLU that grappler fuses, a conv2d + PReLU), a model with TFOpLambda
layers that tfjs-layers cannot load, a text model (embedding, attention-like einsum and
batch matmul, a transposed output projection), the standard MobileNetV3Small and
EfficientNetB0 with random weights, and models the kit must refuse by name.

    python tests/graph_zoo.py OUT_DIR [NAME ...]

Run in its own process (tf-keras must be selected before TensorFlow is imported)."""
import os
import sys
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

GRAPH_ZOO = {
    "module": "module_savedmodel",      # tf.Module: two signatures, variables
    "v1": "v1_savedmodel",              # a TF1 graph saved with SavedModelBuilder
    "fused_cnn": "fused_cnn.h5",        # conv + BN + ReLU, depthwise + relu6, conv + PReLU, pooling, softmax
    "op_lambda": "op_lambda.h5",        # TFOpLambda: a hard swish by hand, x * 3.0 + skip, tf.math.tanh
    "text": "text_savedmodel",          # embedding, einsum attention, transposed projection
    "mobilenet_v3": "mobilenet_v3.h5",  # keras.applications.MobileNetV3Small, random weights
    "efficientnet": "efficientnet_b0.h5",
    "strings": "strings_savedmodel",    # a string input: refused
    "determinant": "det_savedmodel",    # MatrixDeterminant, which tfjs lacks: refused
    "control_flow": "cond_savedmodel",  # tf.cond and tf.while_loop: refused by node, for now
}


def rng():
    return np.random.default_rng(11)


def build_module(path):
    import tensorflow as tf
    r = rng()

    class Module(tf.Module):
        def __init__(self):
            self.w = tf.Variable(r.uniform(-1, 1, (6, 5)).astype("float32"))
            self.b = tf.Variable(r.uniform(-1, 1, (5,)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
        def serve(self, x):
            h = tf.matmul(x, self.w) + self.b
            return {"y": tf.nn.softmax(tf.nn.sigmoid(h) * 2.0 - tf.exp(-h))}

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
        def mean(self, x):
            return {"m": tf.reduce_mean(tf.sqrt(tf.abs(x) + 1.0), axis=1)}
    module = Module()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "mean": module.mean})


def build_v1(path):
    import tensorflow as tf
    r = rng()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.compat.v1.get_variable("w", initializer=r.uniform(-1, 1, (4, 3)).astype("float32"))
        b = tf.compat.v1.get_variable("b", initializer=r.uniform(-1, 1, (3,)).astype("float32"))
        y = tf.nn.tanh(tf.nn.bias_add(tf.matmul(x, w), b), name="y")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()


def _random_weights(model, seed=5):
    r = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        names = [w.name for w in layer.weights]
        layer.set_weights([r.uniform(0.2, 3, w.shape).astype("float32") if "variance" in n
                           else r.uniform(-1, 1, w.shape).astype("float32") for w, n in zip(weights, names)])
    return model


def build_fused_cnn(path):
    import tf_keras as keras
    layers = keras.layers
    image = keras.Input((12, 12, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="conv")(image)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="depthwise")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(8, 1, name="pointwise")(x)
    x = layers.PReLU(name="prelu")(x)
    x = layers.AveragePooling2D(name="average")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(5, activation="softmax", name="head")(x)
    _random_weights(keras.Model(image, x, name="fused_cnn")).save(path, save_format="h5")


def build_op_lambda(path):
    """Operations written on tensors (TFOpLambda layers): a gate by hand, as MobileNetV3's
    squeeze-excite has, a hard sigmoid after a convolution whose bias is zero, as an untrained
    Keras model's is. grappler folds the zero bias away and fuses relu6(conv + 3.0) into a
    _FusedConv2D with a scalar bias."""
    import tensorflow as tf
    import tf_keras as keras
    uniform = keras.initializers.RandomUniform(-1, 1, seed=3)
    image = keras.Input((6, 6, 2), name="image")
    gate = keras.layers.Conv2D(4, 3, padding="same", name="gate", kernel_initializer=uniform)(image)
    value = keras.layers.Conv2D(4, 3, padding="same", name="value", kernel_initializer=uniform,
                                bias_initializer=uniform)(image)
    gated = value * (tf.nn.relu6(gate + 3.0) * (1.0 / 6.0))
    flat = keras.layers.Flatten(name="flatten")(gated)
    dense = keras.layers.Dense(8, name="dense", kernel_initializer=keras.initializers.RandomUniform(-1, 1, seed=4),
                               bias_initializer=keras.initializers.RandomUniform(-1, 1, seed=5))(flat)
    y = tf.math.tanh(dense * 3.0 + tf.reduce_mean(flat, axis=1, keepdims=True))
    keras.Model(image, y, name="op_lambda").save(path, save_format="h5")


def build_text(path):
    import tensorflow as tf
    r = rng()
    vocabulary, width, length = 20, 8, 6

    class Text(tf.Module):
        def __init__(self):
            self.embedding = tf.Variable(r.uniform(-1, 1, (vocabulary, width)).astype("float32"))
            self.query = tf.Variable(r.uniform(-1, 1, (width, width)).astype("float32"))
            self.key = tf.Variable(r.uniform(-1, 1, (width, width)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, length], tf.int32, name="tokens")])
        def serve(self, tokens):
            e = tf.gather(self.embedding, tokens)                       # [batch, length, width]
            q = tf.einsum("blw,wv->blv", e, self.query)
            k = tf.einsum("blw,wv->blv", e, self.key)
            attention = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / np.sqrt(width).astype("float32"))
            mixed = tf.matmul(attention, e)                             # BatchMatMul
            logits = tf.einsum("blw,vw->blv", mixed, self.embedding)    # the transposed projection
            return {"logits": logits}
    module = Text()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def build_mobilenet_v3(path):
    import tf_keras as keras
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=10)
    _random_weights(model).save(path, save_format="h5")


def build_efficientnet(path):
    import tf_keras as keras
    model = keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10)
    _random_weights(model).save(path, save_format="h5")


def build_strings(path):
    import tensorflow as tf

    class Strings(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {"length": tf.cast(tf.strings.length(text), tf.float32)}
    module = Strings()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def build_determinant(path):
    import tensorflow as tf

    class Determinant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3, 3], tf.float32, name="m")])
        def serve(self, m):
            return {"det": tf.linalg.det(m)}
    module = Determinant()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def build_control_flow(path):
    import tensorflow as tf

    class Flow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            y = tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
            _, z = tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 0.5 + 1.0), (0, y))
            return {"z": z}
    module = Flow()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    import tf_keras
    tf_keras.utils.set_random_seed(7)
    for name in sys.argv[2:] or GRAPH_ZOO:
        globals()[f"build_{name}"](out / GRAPH_ZOO[name])
        print(out / GRAPH_ZOO[name])
