"""A zoo of user-like models, built for the tests and saved the way users save them.

    python tests/zoo.py OUT_DIR [NAME ...]

Writes OUT_DIR/<name>.h5, .keras or a SavedModel folder per model (ZOO says which). Weights
are random but seeded; BatchNormalization gets non-trivial moving statistics, as a trained
model has. Run in its own process: tf-keras and Keras 3 each want to be imported their way.
"""
import os
import sys
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

# name -> file name; the builder of each is below, `build_<name>`
ZOO = {
    "mlp": "mlp.h5",
    "cnn": "cnn_savedmodel",
    "text": "text.h5",
    "bilstm": "bilstm.h5",
    "conv1d": "conv1d.h5",
    "two_inputs": "two_inputs.h5",
    "keras3": "keras3.keras",
    "mobilenet": "mobilenet.h5",
}


def tf_keras():
    import tf_keras
    tf_keras.utils.set_random_seed(7)
    return tf_keras


def with_statistics(model, seed=3):
    """Give every BatchNormalization the statistics training would: means far from 0,
    variances far from 1, scales and offsets not 1 and 0."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.uniform(-0.5, 0.5, beta.shape).astype("float32"),
                               rng.uniform(-2, 2, mean.shape).astype("float32"),
                               rng.uniform(0.2, 3, variance.shape).astype("float32")])
    return model


def build_mlp():
    keras = tf_keras()
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10, activation="softmax")],
                            name="mlp")


def build_cnn():
    keras = tf_keras()
    layers = keras.layers
    x = inputs = keras.Input((17, 17, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = layers.Activation("elu")(x)
    x = layers.SeparableConv2D(12, 3, padding="valid", activation="sigmoid")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(6, 2, strides=1, padding="same", dilation_rate=1)(x)
    x = layers.AveragePooling2D(2, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(5, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_text():
    keras = tf_keras()
    layers = keras.layers
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = layers.Embedding(50, 8)(tokens)
    x = layers.LSTM(8, return_sequences=True)(x)
    x = layers.GRU(6, reset_after=False)(x)  # tfjs refuses Keras' default reset_after=True
    outputs = layers.Dense(3, activation="sigmoid")(x)
    return keras.Model(tokens, outputs, name="text")


def build_bilstm():
    keras = tf_keras()
    layers = keras.layers
    inputs = keras.Input((10, 4), name="sequence")
    x = layers.Bidirectional(layers.LSTM(5, return_sequences=True))(inputs)
    x = layers.Bidirectional(layers.LSTM(3), merge_mode="sum")(x)
    x = layers.SimpleRNN(4)(layers.RepeatVector(3)(x))
    outputs = layers.Dense(2)(x)
    return keras.Model(inputs, outputs, name="bilstm")


def build_conv1d():
    keras = tf_keras()
    layers = keras.layers
    inputs = keras.Input((32, 3), name="signal")
    x = layers.Conv1D(6, 5, strides=2, activation="relu")(inputs)
    x = layers.MaxPooling1D(2)(x)
    x = layers.Conv1D(4, 3, padding="same", activation="elu")(x)
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(1)(x)
    return keras.Model(inputs, outputs, name="conv1d")


def build_two_inputs():
    """Two inputs, one Dense shared by both (two calls: two capture points), merges, a
    LayerNormalization, and a nested Sequential model (its layers captured one by one)."""
    keras = tf_keras()
    layers = keras.layers
    left, right = keras.Input((6,), name="left"), keras.Input((6,), name="right")
    shared = layers.Dense(6, activation="relu", name="shared")
    a, b = shared(left), shared(right)
    added = layers.Add()([a, b])
    product = layers.Multiply()([a, b])
    x = layers.Concatenate()([added, product, left])
    x = layers.LayerNormalization()(x)
    inner = keras.Sequential([keras.Input((18,)), layers.Dense(8, activation="tanh", name="inner_dense"),
                              layers.Dense(4, name="inner_out")], name="inner")
    x = inner(x)
    outputs = layers.Average()([layers.Dense(4)(x), x])
    return keras.Model([left, right], outputs, name="two_inputs")


def build_mobilenet():
    keras = tf_keras()
    return keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=10)


def build_keras3():
    """A Keras 3 model (what TensorFlow 2.16+ writes by default): two inputs, conv + BN +
    depthwise on one, Embedding + LSTM on the other, a LeakyReLU (renamed argument), a
    LayerNormalization, and a nested Keras 3 model."""
    import keras
    keras.utils.set_random_seed(11)
    layers = keras.layers
    image = keras.Input((12, 12, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same")(image)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(negative_slope=0.1)(x)
    x = layers.DepthwiseConv2D(3, padding="valid", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    tokens = keras.Input((7,), dtype="int32", name="tokens")
    t = layers.Embedding(30, 5)(tokens)
    t = layers.LSTM(6)(t)
    x = layers.Concatenate()([x, t])
    x = layers.LayerNormalization()(x)
    head_in = keras.Input((12,))
    head = keras.Model(head_in, layers.Dense(4, activation="softmax", name="head_dense")(
        layers.Dense(8, activation="relu", name="head_hidden")(head_in)), name="head")
    outputs = head(x)
    return keras.Model([image, tokens], outputs, name="keras3_model")


def save(name, out_dir):
    model = globals()[f"build_{name}"]()
    with_statistics(model)
    path = out_dir / ZOO[name]
    if name == "keras3":
        model.save(path)
    elif path.suffix == ".h5":
        model.save(path, save_format="h5")
    else:
        model.save(path, save_format="tf")
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:] or ZOO:
        print(save(name, out))
