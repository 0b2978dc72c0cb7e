"""Building the study's Keras model and converting it to TensorFlow.js.

TensorFlow is imported here, lazily: it costs seconds and hundreds of MiB, and only the
scripts that build or run a Keras model need it.
"""
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import KitError
from .capture import atomic_write_text, current_umask, encode_tensor
from .paths import INPUT_FILE


def load_keras():
    """tf-keras (Keras 2), not Keras 3: tfjs-layers 4.22 refuses the topology Keras 3 writes
    ("An InputLayer should be passed either a `batchInputShape` or an `inputShape`").
    TF_USE_LEGACY_KERAS must be set before TensorFlow is first imported."""
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise KitError("TensorFlow was imported before the kit could select tf-keras; "
                       "import tfjs_parity.model first or set TF_USE_LEGACY_KERAS=1")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    with held_stderr():
        import tf_keras
    return tf_keras


def build_study_model(depth=10, units=50, seed=123):
    """The original study's model: `depth` Dense(units) layers named dense_0..., linear,
    kernels and biases from one RandomUniform(-1, 1, seed) initializer, every layer an output."""
    keras = load_keras()
    keras.backend.clear_session()
    initializer = keras.initializers.RandomUniform(minval=-1, maxval=1, seed=seed)
    x = inputs = keras.Input((units,), name="input")
    outputs = []
    for i in range(depth):
        x = keras.layers.Dense(units, dtype="float32", kernel_initializer=initializer,
                               bias_initializer=initializer, name=f"dense_{i}")(x)
        outputs.append(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def study_input(model):
    """The study's input: a batch of one vector of ones, float32."""
    shape = model.inputs[0].shape
    return np.ones((1,) + tuple(shape[1:]), dtype=np.float32)


def save_converted(model, inputs, converted_dir):
    """Convert `model` to a tfjs Layers model in `converted_dir`, with the input beside it.

    Written to a temporary folder first and swapped in, so a failed conversion leaves the
    previous model (or nothing) in place."""
    converted_dir = Path(converted_dir)
    converted_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=converted_dir.parent, prefix=f".{converted_dir.name}."))
    try:
        with held_stderr():  # its imports and legacy-format warnings are noise here
            import tensorflowjs
            tensorflowjs.converters.save_keras_model(model, str(staging))
        atomic_write_text(staging / INPUT_FILE, json.dumps(encode_tensor(inputs)))
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700; give the folder the usual mode
        if converted_dir.exists():
            shutil.rmtree(converted_dir)
        os.replace(staging, converted_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def held_stderr():
    """Hold back what is written to file descriptor 2 and show it only if the block fails.

    TensorFlow's native start-up logs (CUDA plugin registration and the like, harmless on a
    machine without a GPU) bypass TF_CPP_MIN_LOG_LEVEL and would bury the report."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode("utf-8", "replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
