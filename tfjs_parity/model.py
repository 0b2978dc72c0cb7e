"""Building the study's Keras model or loading a user's, and converting it to TensorFlow.js.

TensorFlow is imported here, lazily: it costs seconds and hundreds of MiB, and only the
scripts that build or run a Keras model need it.
"""
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import KitError, topology
from .cli import Terminated, asked_to_stop, stop_if_asked
from . import plan as plan_module
from .capture import remove_other_formats
from .capture_json import encode_tensor
from .files import atomic_write_text, commit_file, exchange_or_replace_dir, failpoint, shown_path, staging_dir, write_error
from .paths import INPUT_FILE

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

    def __post_init__(self):
        if self.graph is None:
            config = json.loads(self.model.to_json())
            if "layers" not in config.get("config", {}):
                raise KitError(f"{self.file or 'the model'} is a subclassed Keras model ({config.get('class_name')}): "
                               "the kit needs a functional or Sequential model, whose graph it can read")
            keras3 = self.format == "keras3"
            self.graph = topology.flatten(topology.parse(config, keras3), keras3)


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


def load_user_model(path):
    """A user's model: a Keras 3 `.keras` file, a tf-keras `.h5` (or Keras 3's), or a tf-keras
    SavedModel folder. KitError naming the file when it is none of these."""
    path = Path(path)
    if not path.exists():
        raise KitError(f"--model {path}: not found")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise KitError(f"--model {path}: a folder but not a SavedModel (no saved_model.pb)")
        keras, keras3 = load_keras(), False
    elif path.suffix == ".keras":
        _refuse_lambda(path, _keras_file_config(path))
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
    return SourceModel(model, keras, "keras3" if keras3 else "tf_keras", file=path)


def _keras_file_config(path):
    """The model config inside a .keras file (a zip holding config.json)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read("config.json").decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError):
        raise KitError(f"--model {path}: not a Keras 3 .keras file (no readable config.json inside)") from None


def _h5_config(path):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
    except OSError:
        raise KitError(f"--model {path}: not an HDF5 file") from None
    if config is None:
        raise KitError(f"--model {path}: an HDF5 file without a model_config (weights only?); save the whole model")
    return config.decode() if isinstance(config, bytes) else config


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
    try:
        name = find(json.loads(config_text))
    except ValueError:
        raise KitError(f"--model {path}: its model config is not JSON") from None
    if name:
        raise KitError(f"--model {path}: layer {name!r} (Lambda) runs Python code, which tfjs cannot run; "
                       "express it with built-in layers")


# tfjs-layers 4.22's layer classes (its serialization registry, minus optimizers, initializers,
# constraints and activations; tests/test_model.py checks the list against the real registry).
TFJS_LAYERS = frozenset("""
    Activation Add AlphaDropout Average AveragePooling1D AveragePooling2D AveragePooling3D BatchNormalization
    Bidirectional CategoryEncoding CenterCrop Concatenate Conv1D Conv2D Conv2DTranspose Conv3D Conv3DTranspose
    ConvLSTM2D Cropping2D Dense DepthwiseConv2D Dot Dropout ELU Embedding Flatten GRU GaussianDropout
    GaussianNoise GlobalAveragePooling1D GlobalAveragePooling2D GlobalMaxPooling1D GlobalMaxPooling2D Identity
    InputLayer LSTM LayerNormalization LeakyReLU Masking MaxPooling1D MaxPooling2D MaxPooling3D Maximum Minimum
    Multiply PReLU Permute RNN ReLU RepeatVector Rescaling Reshape Resizing SeparableConv2D SimpleRNN Softmax
    SpatialDropout1D ThresholdedReLU TimeDistributed UpSampling2D ZeroPadding2D""".split())


# Keras activation names tfjs-layers 4.22 can load (its own are camelCase: hardSigmoid...).
TFJS_ACTIVATIONS = frozenset("""linear relu relu6 elu selu sigmoid hard_sigmoid tanh softmax softplus softsign
    swish silu gelu mish log_softmax""".split())


def check_tfjs_can_run(graph):
    """KitError naming the first layer tfjs-layers 4.22 cannot load or run."""
    for layer in graph.layers:
        for class_name, config in _with_wrapped(layer.class_name, layer.config):
            where = f"layer {layer.name!r} ({class_name})"
            if class_name == "Lambda":
                raise KitError(f"{where} runs Python code, which tfjs cannot run; express it with built-in layers")
            if class_name not in TFJS_LAYERS:
                raise KitError(f"{where}: tfjs-layers 4.22 has no {class_name} layer, so the converted model "
                               "cannot load in tfjs")
            for key in ("activation", "recurrent_activation"):
                name = config.get(key)
                if isinstance(name, str) and name not in TFJS_ACTIVATIONS:
                    raise KitError(f"{where}: {key}={name!r} has no tfjs counterpart (tfjs-layers 4.22 has "
                                   f"{', '.join(sorted(TFJS_ACTIVATIONS))})")
            if int(config.get("groups", 1) or 1) != 1:
                raise KitError(f"{where}: groups={config['groups']}: tfjs-layers 4.22 has no grouped convolution")
            if config.get("padding") == "causal":
                raise KitError(f"{where}: padding='causal' does not load in tfjs-layers 4.22; pad explicitly "
                               "(ZeroPadding1D) and use 'valid'")
            if class_name == "ReLU" and (float(config.get("negative_slope") or 0) or float(config.get("threshold") or 0)):
                raise KitError(f"{where}: tfjs-layers 4.22's ReLU ignores negative_slope and threshold, so it would "
                               "compute another function; use LeakyReLU, or ReLU with only max_value")
            if class_name == "ELU" and float(config.get("alpha", 1.0)) != 1.0:
                raise KitError(f"{where}: alpha={config['alpha']}: tfjs-layers 4.22's ELU layer supports only 1.0")
            if class_name == "GRU" and config.get("reset_after"):
                raise KitError(f"{where} has reset_after=True (Keras' default), which tfjs-layers 4.22 refuses "
                               "(tfjs issues #2442, #4621); reset_after=False is a different function, so there "
                               "is no exact rewrite: retrain with GRU(reset_after=False) to ship it to tfjs")


def _with_wrapped(class_name, config):
    """The layer and any layer it wraps (Bidirectional, TimeDistributed)."""
    yield class_name, config
    for key in ("layer", "backward_layer"):
        wrapped = config.get(key)
        if isinstance(wrapped, dict) and "class_name" in wrapped:
            yield from _with_wrapped(wrapped["class_name"], wrapped.get("config", {}))


def find_layer(model, path):
    """The layer at `path` (inner model names, then the layer's) in `model`."""
    layer = model
    for name in path:
        layer = layer.get_layer(name)
    return layer


def flat_tf_keras_model(source):
    """The source model as one flat tf-keras functional model with its weights: the model
    tfjs gets. Keras 3 layers are translated (keras3.py); nested models are flattened."""
    keras = load_keras()
    if source.format == "keras3":
        from .keras3 import translate_layer
        def layer_config(layer):
            return translate_layer(layer.class_name, layer.config, keras)
    else:
        def layer_config(layer):
            return layer.config
    config = topology.to_tf_keras_config(source.graph, layer_config)
    with held_stderr():
        try:
            flat = keras.models.model_from_json(json.dumps(config))
        except Exception as error:  # tf-keras raises many kinds for a config it cannot read
            raise KitError(f"the model cannot be rebuilt in tf-keras, the dialect tfjs reads "
                           f"({' '.join(str(error).split())[:300]})") from None
    for layer in source.graph.layers:
        if layer.class_name == "InputLayer":  # no weights; a Sequential's is not among its layers
            continue
        weights = find_layer(source.model, layer.path).get_weights()
        target = flat.get_layer(layer.name)
        if [w.shape for w in target.get_weights()] != [w.shape for w in weights]:
            raise KitError(f"layer {layer.name!r} ({layer.class_name}): its weights do not fit the translated layer "
                           f"({[w.shape for w in weights]} vs {[w.shape for w in target.get_weights()]})")
        target.set_weights(weights)
    return flat


def make_plan(source, flat_model, inputs):
    """The probe plan of `source`, with the number of outputs of each call read from the
    built flat model. `inputs`: [plan.Input]."""
    counts = {}
    for layer in source.graph.layers:
        built = flat_model.get_layer(layer.name)
        for k in range(len(layer.nodes)):
            outputs = built._inbound_nodes[k].outputs
            counts[(layer.name, k)] = len(outputs) if isinstance(outputs, (list, tuple)) else 1
    described = {"format": source.format}
    if source.format == "keras3":
        described["file"] = SOURCE_KERAS3_FILE
    return plan_module.build(source.graph, counts, inputs, described)


@dataclass
class Probe:
    """The plan executed on one model's layers: `model` outputs every point's tensors."""
    model: object
    layers: dict     # point name -> the layer object it calls
    tensors: dict    # point name -> its symbolic output tensors
    inputs: dict     # input name -> the symbolic input


def probe_model(model, keras, plan, by_path=True):
    """A Probe of `model`: its inputs, and as outputs every capture point's, in plan order,
    each point calling this model's own layer (found by its path in the user's model, or by
    its flat name when `by_path` is False), so one predict yields every point."""
    layers = {point.name: find_layer(model, point.path if by_path else [point.layer]) for point in plan.points}
    original = {id(layer): layer.name for layer in layers.values()}
    try:
        for point in plan.points:  # one Keras model wants unique names; a nested layer may share an outer one's
            if layers[point.name].name != point.layer:
                _rename(layers[point.name], point.layer)
        inputs = dict(zip((i.name for i in plan.inputs), model.inputs))
        produced, outputs = {}, []
        for point in plan.points:
            args = [inputs[s["input"]] if "input" in s else produced[s["point"]][s["index"]] for s in point.sources]
            result = layers[point.name](args[0] if len(args) == 1 else args, **point.kwargs)
            result = list(result) if isinstance(result, (list, tuple)) else [result]
            if len(result) != point.outputs:
                raise KitError(f"layer {point.layer!r} returned {len(result)} tensors, the plan expects "
                               f"{point.outputs}")
            produced[point.name] = result
            outputs += result
        probe = keras.Model(inputs=list(model.inputs), outputs=outputs)
    finally:  # the user's model keeps its names (its nested models find their layers by them)
        for layer in layers.values():
            if layer.name != original[id(layer)]:
                _rename(layer, original[id(layer)])
    return Probe(probe, layers, produced, inputs)


def _rename(layer, name):
    if hasattr(layer, "_name"):  # tf-keras keeps it here; `name` is a read-only property
        layer._name = name
    else:
        layer.name = name


def stage_converted(flat_model, plan, inputs, source, model_dir):
    """Convert `flat_model` to a tfjs Layers model in `model_dir` (a new folder inside a run's
    staging folder), with the probe plan, the inputs ({name: array}) and, for a Keras 3
    source, the source model. The plan records the model's id (a hash of what was written):
    every capture made from this model carries it, so a capture of another model is named
    stale instead of being compared."""
    model_dir = Path(model_dir)
    model_dir.mkdir()
    with held_stderr():  # its imports and legacy-format warnings are noise here
        import tensorflow as tf
        import tensorflowjs
        try:
            tensorflowjs.converters.save_keras_model(flat_model, str(model_dir))
            if source.format == "keras3":
                source.model.save(str(model_dir / SOURCE_KERAS3_FILE))
        except OSError as error:  # a full disk, mostly
            raise write_error(model_dir, error) from None
        except tf.errors.OpError as error:  # TensorFlow's own file writer says the same its way
            raise KitError(f"cannot write {shown_path(model_dir)}: {error.message.rsplit('; ', 1)[-1]}") from None
    _drop_fields_tfjs_refuses(model_dir / "model.json")
    atomic_write_text(model_dir / INPUT_FILE, json.dumps({name: encode_tensor(a) for name, a in inputs.items()}))
    plan.model_id = _model_id(model_dir)
    plan.save(model_dir / plan_module.PLAN_FILE)


def _model_id(folder):
    """A short hash of every file in `folder` (names and bytes): the same model and inputs
    give the same id, so captures of an identical rebuild stay valid."""
    digest = hashlib.sha256()
    for file in sorted(Path(folder).iterdir()):
        digest.update(file.name.encode("utf-8") + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def commit_run(run_dir, out_dir, model_name):
    """Put a run's files, staged in `run_dir`, in place in `out_dir`: the converted model
    folder `model_name` first (swapped in whole, atomically), then each capture (renamed).
    A run killed between two renames leaves whole files only; compare_outputs.py then names
    the capture whose model id is not the converted model's. `run_dir` is removed."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    try:
        stop_if_asked()  # an interruption a library swallowed must not let the run commit
        failpoint("staged")
        exchange_or_replace_dir(run_dir / model_name, out_dir / model_name)
        failpoint("model committed")
        for staged in sorted(run_dir.iterdir()):
            if staged.is_file():
                commit_file(staged, out_dir / staged.name)
                remove_other_formats(out_dir / staged.name)
                failpoint(f"{staged.name} committed")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# tf-keras writes these into SeparableConv2D's config; tfjs-layers 4.22 refuses to load them
# ("Fields kernelInitializer, kernelRegularizer and kernelConstraint are invalid for
# SeparableConv2D"). They play no part in inference.
TFJS_REFUSED_FIELDS = {"SeparableConv2D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint")}


def _drop_fields_tfjs_refuses(model_json):
    document = json.loads(model_json.read_text())

    def clean(value):
        if isinstance(value, dict):
            if value.get("class_name") in TFJS_REFUSED_FIELDS and isinstance(value.get("config"), dict):
                for key in TFJS_REFUSED_FIELDS[value["class_name"]]:
                    value["config"].pop(key, None)
            for item in value.values():
                clean(item)
        elif isinstance(value, list):
            for item in value:
                clean(item)
    clean(document["modelTopology"])
    atomic_write_text(model_json, json.dumps(document))


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
