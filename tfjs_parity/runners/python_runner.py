"""TensorFlow Python: run the user's model (a Keras model, or a converted graph: kinds/) and
capture every point of the probe plan."""
import datetime
import os
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np

from ..capture import Capture, output_key, weights_key
from ..capture_json import encode_tensor
from ..steps import cpu_model
from ..wire import DEFAULTS, SCHEMA

NAME = "python"
SCRIPT = "create_keras_model.py"
BACKENDS = ("tensorflow",)


@dataclass
class Options:
    """Step 1's runner runs the model in this process: its Job carries the kind's execution
    of the loaded model (`probe`: kinds/, their python_probe), the probe `plan` and the
    `inputs` ({name: array}) rather than files; `timed` False for the float64 reference."""
    probe: object
    plan: object
    inputs: dict
    timed: bool = True


def run(job):
    """Predict job.options.inputs with its probe; capture every point of the plan (weights
    and outputs), and time up to job.repeat predictions of the model as shipped after one
    warm-up, stopping once job.budget seconds are spent (not at all when not `timed`).
    Yields ("tensorflow", Capture); an error of the model itself propagates."""
    options = job.options
    yield BACKENDS[0], _capture(options.probe, options.plan, options.inputs, job.repeat, job.budget,
                                job.repeat_check, options.timed)


def _capture(probe, plan, inputs, repeat, budget, repeat_check, timed):
    # Timed first, as shipped: the model's own prediction (its outputs only); the first call
    # (its tracing) apart.
    timing = None
    if timed:
        timing = time_predictions(lambda: probe.shipped(inputs), repeat, budget)
        timing.update(of="the model as shipped: its own prediction, outputs only", cold_ms=timing["warmup_ms"])
    predictions = [np.asarray(p) for p in probe.predict(inputs)]
    repeat_result = {"runs": repeat_check, "identical": True, "first_difference": None}
    for _ in range(repeat_check - 1):  # the same input again, in this session: the same bits?
        again = probe.predict(inputs)
        differs = [i for i, (a, b) in enumerate(zip(predictions, again)) if not _same_bits(a, b)]
        if differs:
            repeat_result.update(identical=False, first_difference=_point_of(plan, differs[0]))
            break
    tensors, position = {}, 0
    for point in plan.points:
        if point.weights:
            tensors[weights_key(point.name)] = probe.weights(point)
        tensors[output_key(point.name)] = predictions[position:position + point.outputs]
        position += point.outputs
    metadata = {
        "schema": SCHEMA,
        "runtime": NAME,
        "backend": "tensorflow",
        "versions": dict(probe.versions, numpy=np.__version__, python=platform.python_version()),
        "environment": {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: oneDNN on)")},
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_model(),
        "inputs": {name: encode_tensor(array) for name, array in inputs.items()},
        **({"timing": timing} if timing else {}),
        "repeat": repeat_result,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Capture(metadata, tensors)


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


def time_predictions(predict, repeat, budget=DEFAULTS["budget"]):
    """Warm up once, then time up to `repeat` calls while the next one fits in `budget`
    seconds by the last one's time (at least one): the same rule and figures as the JS side's."""
    def once():
        start = time.perf_counter()
        predict()
        return (time.perf_counter() - start) * 1000
    warmup = once()
    runs = []
    while len(runs) < repeat and (not runs or sum(runs) + runs[-1] <= budget * 1000):
        runs.append(once())
    return {"warmup_ms": warmup, "runs_ms": runs, "median_ms": statistics.median(runs),
            "min_ms": min(runs), "max_ms": max(runs), "repeat": repeat, "budget_s": budget}


def capture(probe, plan, inputs, repeat=DEFAULTS["repeat"], budget=DEFAULTS["budget"], repeat_check=1, timed=True):
    """The one capture of run(Job(...)) for a model in this process (step 1, the float64
    reference, tests): no files, one backend."""
    from .base import Job
    job = Job(None, None, list(BACKENDS), repeat=repeat, budget=budget, repeat_check=repeat_check,
              options=Options(probe, plan, inputs, timed))
    (_, result), = run(job)
    return result
