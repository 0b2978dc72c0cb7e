"""TensorFlow Python (tf-keras): run a Keras model and capture every layer."""
import datetime
import os
import platform
import statistics
import time

import numpy as np

from ..capture import SCHEMA, Capture, encode_tensor
from ..model import load_keras
from ..runs import cpu_model

NAME = "python"


def run(model, inputs, repeat=10):
    """Predict `inputs` with `model`; capture each layer's weights and output, and time
    `repeat` predictions after one warm-up."""
    keras = load_keras()
    import tensorflow as tf
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    outputs = [_as_list(layer.output) for layer in layers]
    # A model whose outputs are every layer's outputs: one predict, as the study did.
    probe = keras.Model(inputs=model.inputs, outputs=[o for group in outputs for o in group])
    predictions = _as_list(probe.predict(inputs, verbose=0))
    tensors, position = {}, 0
    for layer, group in zip(layers, outputs):
        tensors[f"{layer.name}_weights"] = layer.get_weights()
        tensors[f"{layer.name}_output"] = [np.asarray(p) for p in predictions[position:position + len(group)]]
        position += len(group)
    metadata = {
        "schema": SCHEMA,
        "runtime": NAME,
        "backend": "tensorflow",
        "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "environment": {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: oneDNN on)")},
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_model(),
        "input": encode_tensor(inputs),
        "timing": time_predictions(lambda: probe.predict(inputs, verbose=0), repeat),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Capture(metadata, tensors)


def time_predictions(predict, repeat):
    """Warm up once, then time `repeat` calls: the same figures the JS side records."""
    def once():
        start = time.perf_counter()
        predict()
        return (time.perf_counter() - start) * 1000
    warmup = once()
    runs = [once() for _ in range(repeat)]
    return {"warmup_ms": warmup, "runs_ms": runs, "median_ms": statistics.median(runs),
            "min_ms": min(runs), "max_ms": max(runs)}


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]
