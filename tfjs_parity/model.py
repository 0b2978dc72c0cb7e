"""Building the study's Keras model or loading a user's (refusing what would run code), and
the tf-keras / Keras 3 selection. What tfjs then gets is the kind's business (kinds/).

TensorFlow is imported here, lazily: it costs seconds and hundreds of MiB, and only the
scripts that build or run a Keras model need it.
"""
import contextlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import KitError, topology
from .cli import Terminated, asked_to_stop
from .user_files import MAX_CONFIG_BYTES, check_archive_size, check_json_depth, read_archive_member

SOURCE_KERAS3_FILE = "source_model.keras"  # beside the converted model: the float64 reference's own model


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


def load_keras3():
    """Keras 3 (the `keras` package), for a user's Keras 3 model: only to read it, run it
    as the user would and take its float64 reference; tfjs gets a tf-keras translation."""
    load_keras()
    with held_stderr():
        import keras
    return keras


@dataclass
class SourceModel:
    """The model the user gave (or the study's), as loaded, and its flat graph."""
    model: object
    keras: object        # the module that built it: tf_keras or keras (3)
    format: str          # "tf_keras" or "keras3"
    graph: topology.Graph = None
    file: Path = None    # the user's file, None for the study's model
    parse_graph: bool = True  # False for a graph model's source: the converter reads the model, not the kit

    def __post_init__(self):
        if self.graph is None and self.parse_graph:
            config = json.loads(self.model.to_json())
            if "layers" not in config.get("config", {}):
                raise KitError(f"{self.file or 'the model'} is a subclassed Keras model ({config.get('class_name')}): "
                               "the kit needs a functional or Sequential model, whose graph it can read; --as graph "
                               "converts its traced function instead")
            op_layer = _find_class(config, ("TFOpLambda", "SlicingOpLambda"))
            if op_layer:
                raise KitError(f"{self.file or 'the model'}: layer {op_layer[1]!r} ({op_layer[0]}: an operation written "
                               "on tensors, such as x + 3.0 or x * y) cannot load in tfjs-layers; --as graph converts "
                               "the model to ops that tfjs runs")
            keras3 = self.format == "keras3"
            self.graph = topology.flatten(topology.parse(config, keras3), keras3)

    def smallest_vocabulary(self):
        """The smallest input_dim of the model's Embedding layers (random token ids stay below
        it), or None."""
        def layers(model):
            for layer in getattr(model, "layers", ()):
                yield layer
                yield from layers(layer)  # a nested model's
        sizes = [int(layer.input_dim) for layer in layers(self.model)
                 if type(layer).__name__ == "Embedding" and hasattr(layer, "input_dim")]
        return min(sizes, default=None)


def _find_class(config, class_names):
    """(class name, layer name) of the first layer in a model config of one of `class_names`."""
    if isinstance(config, dict):
        if config.get("class_name") in class_names:
            return config["class_name"], (config.get("config") or {}).get("name", "?")
        values = config.values()
    elif isinstance(config, list):
        values = config
    else:
        return None
    return next((found for found in map(lambda v: _find_class(v, class_names), values) if found), None)


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
    return SourceModel(keras.Model(inputs=inputs, outputs=outputs), keras, "tf_keras")


def load_user_model(path, parse_graph=True):
    """A user's model: a Keras 3 `.keras` file, a tf-keras `.h5` (or Keras 3's), or a tf-keras
    SavedModel folder. KitError naming the file when it is none of these."""
    path = Path(path)
    if not path.exists():
        raise KitError(f"--model {path}: not found")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise KitError(f"--model {path}: a folder but not a SavedModel (no saved_model.pb)")
        _refuse_saved_lambda(path)
        keras, keras3 = load_keras(), False
    elif path.suffix == ".keras":
        _refuse_lambda(path, _keras_file_config(path))
        check_archive_size(path)  # Keras unpacks every member
        keras, keras3 = load_keras3(), True
    elif path.suffix in (".h5", ".hdf5"):
        config = _h5_config(path)
        _refuse_lambda(path, config)
        keras3 = '"batch_shape"' in config or '"__keras_tensor__"' in config  # how Keras 3 spells its graph
        keras = load_keras3() if keras3 else load_keras()
    else:
        raise KitError(f"--model {path}: expected a .keras file, a .h5 file or a SavedModel folder")
    with held_stderr():
        try:
            if keras3:
                model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
            else:
                model = keras.models.load_model(str(path), compile=False)
        except Exception as error:  # Keras raises many kinds for a file that is not a model
            message = " ".join(str(error).split())
            raise KitError(f"--model {path}: cannot load it as a Keras model ({message[:300]})") from None
    if not hasattr(model, "to_json") or not hasattr(model, "layers"):
        raise KitError(f"--model {path}: loaded, but it is not a Keras model (a bare SavedModel?); "
                       "save the Keras model itself (model.save)")
    return SourceModel(model, keras, "keras3" if keras3 else "tf_keras", file=path, parse_graph=parse_graph)


def load_converted_layers_model(path, parse_graph=True):
    """A tfjs layers model.json (its weight files beside it, checked by read_model_json): the
    tf-keras model it describes, so Python runs that very model."""
    from .model_json import read_model_json
    from .quantization import decoded_weights
    keras = load_keras()
    document = read_model_json(path)  # a model.json without a `format` (tfjs 1.x's) is told by its content
    with held_stderr():
        from tensorflowjs.converters import keras_tfjs_loader
        try:  # the weights decoded as tfjs decodes them (integer min and scale included)
            entries = [entry for group in decoded_weights(Path(path).parent, document["weightsManifest"])
                       for entry in group]
            model = keras_tfjs_loader._deserialize_keras_model(document["modelTopology"], entries)
        except Exception as error:  # the converter raises many kinds for a model it cannot read
            message = " ".join(str(error).split())
            raise KitError(f"--model {path}: cannot load it as a tfjs layers model ({message[:300]})") from None
    return SourceModel(model, keras, "tf_keras", file=Path(path), parse_graph=parse_graph)


def _keras_file_config(path):
    """The model config inside a .keras file (a zip holding config.json), within MAX_CONFIG_BYTES."""
    try:
        return read_archive_member(path, "config.json", MAX_CONFIG_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise KitError(f"--model {path}: not a Keras 3 .keras file (its config.json is not UTF-8)") from None


def _h5_config(path):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            if "model_config" in f.attrs:
                size = h5py.h5a.open(f.id, b"model_config").get_storage_size()
                if size > MAX_CONFIG_BYTES:
                    raise KitError(f"--model {path}: its model_config is {size:,} bytes, more than the "
                                   f"{MAX_CONFIG_BYTES:,} a model config may hold")
            config = f.attrs.get("model_config")
    except OSError:
        raise KitError(f"--model {path}: not an HDF5 file") from None
    if config is None:
        raise KitError(f"--model {path}: an HDF5 file without a model_config (weights only?); save the whole model")
    return config.decode() if isinstance(config, bytes) else config


# A Lambda layer's entry in a tf-keras SavedModel's keras_metadata.pb (each layer's metadata is
# JSON, as json.dumps writes it, inside the protobuf), with or without the spaces
_SAVED_LAMBDA = re.compile(rb'"class_name":\s*"Lambda"')


def _refuse_saved_lambda(path):
    """A tf-keras SavedModel's Lambda layer runs its (marshalled) Python when tf-keras loads
    it, in the sandbox or not: refused before anything loads, by a scan of the layers' metadata
    (bounded), as for .keras and .h5 files."""
    metadata = path / "keras_metadata.pb"
    if not metadata.is_file():
        return
    size = metadata.stat().st_size
    if size > 4 * MAX_CONFIG_BYTES:
        raise KitError(f"--model {path}: its keras_metadata.pb is {size:,} bytes, more than the "
                       f"{4 * MAX_CONFIG_BYTES:,} the kit reads")
    if _SAVED_LAMBDA.search(metadata.read_bytes()):
        raise KitError(f"--model {path}: a Lambda layer, whose Python code runs when the SavedModel loads and "
                       "which tfjs cannot run; rewrite it as a layer or as operations on tensors, and convert "
                       "with --as graph")


def _refuse_lambda(path, config_text):
    """A Lambda layer holds Python code: tfjs cannot run it, and loading it would run it."""
    def find(value):
        if isinstance(value, dict):
            if value.get("class_name") == "Lambda":
                return (value.get("config") or {}).get("name", "?")
            return next((name for name in map(find, value.values()) if name), None)
        if isinstance(value, list):
            return next((name for name in map(find, value) if name), None)
        return None
    check_json_depth(config_text, where=f"--model {path}: its model config")
    try:
        name = find(json.loads(config_text))
    except ValueError:
        raise KitError(f"--model {path}: its model config is not JSON") from None
    if name:
        raise KitError(f"--model {path}: layer {name!r} (Lambda) runs Python code, which tfjs cannot run; "
                       "express it with built-in layers")


def find_layer(model, path):
    """The layer at `path` (inner model names, then the layer's) in `model`."""
    layer = model
    for name in path:
        layer = layer.get_layer(name)
    return layer


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
        except (KitError, KeyboardInterrupt, Terminated):
            raise  # an expected failure or an interruption is one line; the logs would bury it
        except BaseException:
            if asked_to_stop():  # a failure a library made of an interruption it swallowed
                raise
            sys.stderr.flush()
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode("utf-8", "replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
