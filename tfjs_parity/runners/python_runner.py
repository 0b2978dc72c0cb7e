"""TensorFlow Python: run the user's Keras model (tf-keras or Keras 3) and capture every
point of the probe plan."""
import datetime
import os
import platform
import statistics
import time

import numpy as np

from ..capture import Capture, output_key, weights_key
from ..capture_json import encode_tensor
from ..wire import SCHEMA
from ..kinds import kind_of
from ..steps import cpu_model

NAME = "python"
SCRIPT = "create_keras_model.py"
BACKENDS = ("tensorflow",)
# Step 1's runner: it runs the model in this process, so its run takes the loaded model, the
# plan and the inputs rather than a Job (runners/base.py) naming files.


def run(model, keras, plan, inputs, repeat=10, budget=10.0, repeat_check=1):
    """Predict `inputs` ({name: array}) with `model` (tf-keras or Keras 3, as `keras` says);
    capture every point of `plan` (weights and outputs), and time up to `repeat` predictions
    after one warm-up, stopping once `budget` seconds are spent."""
    import tensorflow as tf
    feed = [inputs[i.name] for i in plan.inputs]
    feed = feed[0] if len(feed) == 1 else feed
    # Timed first, as shipped: the model's own prediction (predict_on_batch: one batch,
    # without predict()'s per-call data pipeline); the first call (its tracing) apart.
    timing = time_predictions(lambda: model.predict_on_batch(feed), repeat, budget)
    timing.update(of="the model as shipped: its own prediction, outputs only", cold_ms=timing["warmup_ms"])
    probe = kind_of(plan).probe_model(model, keras, plan)
    predictions = _predict(probe, feed)
    repeat_result = {"runs": repeat_check, "identical": True, "first_difference": None}
    for _ in range(repeat_check - 1):  # the same input again, in this session: the same bits?
        again = _predict(probe, feed)
        differs = [i for i, (a, b) in enumerate(zip(predictions, again)) if not _same_bits(a, b)]
        if differs:
            repeat_result.update(identical=False, first_difference=_point_of(plan, differs[0]))
            break
    tensors, position = {}, 0
    for point in plan.points:
        if point.weights:
            tensors[weights_key(point.name)] = probe.layers[point.name].get_weights()
        tensors[output_key(point.name)] = [np.asarray(p) for p in predictions[position:position + point.outputs]]
        position += point.outputs
    keras_name = "tf_keras" if keras.__name__.startswith("tf_keras") else "keras"
    metadata = {
        "schema": SCHEMA,
        "runtime": NAME,
        "backend": "tensorflow",
        "versions": {"tensorflow": tf.__version__, keras_name: keras.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "environment": {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: oneDNN on)")},
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_model(),
        "inputs": {name: encode_tensor(array) for name, array in inputs.items()},
        "timing": timing,
        "repeat": repeat_result,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Capture(metadata, tensors)


def _predict(probe, feed):
    predictions = probe.model.predict(feed, verbose=0)
    return list(predictions) if isinstance(predictions, (list, tuple)) else [predictions]


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def _point_of(plan, index):
    """The plan point whose outputs hold the `index`-th predicted tensor."""
    for point in plan.points:
        if index < point.outputs:
            return point.name
        index -= point.outputs
    return None


def time_predictions(predict, repeat, budget=10.0):
    """Warm up once, then time up to `repeat` calls, stopping once `budget` seconds are spent
    (at least one): the same figures the JS side records."""
    def once():
        start = time.perf_counter()
        predict()
        return (time.perf_counter() - start) * 1000
    warmup = once()
    runs = []
    while len(runs) < repeat and (not runs or sum(runs) < budget * 1000):
        runs.append(once())
    return {"warmup_ms": warmup, "runs_ms": runs, "median_ms": statistics.median(runs),
            "min_ms": min(runs), "max_ms": max(runs), "repeat": repeat, "budget_s": budget}
