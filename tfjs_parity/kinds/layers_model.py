"""The layers-model kind: a Keras model that tfjs-layers runs (tf.loadLayersModel). What
tfjs-layers 4.22 can load, the flat tf-keras model tfjs gets, the probe plan of its layer
calls, the probe that executes the plan on a Keras model, and the conversion. Its JS half,
layers_model.js beside this file, loads the model and executes the plan in Node and the page.
The rounding bound of a point is the bounds registry's for the layer's class."""
import json
from dataclasses import dataclass
from pathlib import Path

from .. import KitError, topology
from .. import plan as plan_module
from ..bounds import layer_bound
from ..capture_json import encode_tensor
from ..commit import model_id
from ..files import atomic_write_text, shown_path, write_error
from ..model import SOURCE_KERAS3_FILE, find_layer, held_stderr, load_keras
from ..paths import INPUT_FILE

NAME = "layers"
bound = layer_bound  # a point's error model: the registry entry of its layer's class

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


# Layers tfjs runs but whose exact (float64) answer TensorFlow cannot compute: it has no
# float64 CPU kernel for these ops (tests/unit/test_bounds.py keeps the check).
NO_FLOAT64 = {"MaxPooling3D": "MaxPool3D", "AveragePooling3D": "AvgPool3D"}


def check_tfjs_can_run(graph):
    """KitError naming the first layer tfjs-layers 4.22 cannot load or run, or whose exact
    answer the kit cannot compute."""
    for layer in graph.layers:
        for class_name, config in _with_wrapped(layer.class_name, layer.config):
            where = f"layer {layer.name!r} ({class_name})"
            if class_name in NO_FLOAT64:
                raise KitError(f"{where}: TensorFlow has no float64 CPU kernel for {NO_FLOAT64[class_name]}, so the "
                               "kit cannot compute the exact answer it judges every runtime against")
            if class_name == "Lambda":
                raise KitError(f"{where} runs Python code, which tfjs cannot run; express it with built-in layers")
            if class_name not in TFJS_LAYERS:
                raise KitError(f"{where}: tfjs-layers 4.22 has no {class_name} layer, so the converted model "
                               "cannot load in tfjs; --as graph converts the model to ops that tfjs runs")
            for key in ("activation", "recurrent_activation"):
                name = config.get(key)
                if isinstance(name, str) and name not in TFJS_ACTIVATIONS:
                    raise KitError(f"{where}: {key}={name!r} has no tfjs-layers counterpart (tfjs-layers 4.22 has "
                                   f"{', '.join(sorted(TFJS_ACTIVATIONS))}); --as graph converts the model to ops "
                                   "that tfjs runs")
            if int(config.get("groups", 1) or 1) != 1:
                raise KitError(f"{where}: groups={config['groups']}: tfjs-layers 4.22 has no grouped convolution")
            if config.get("padding") == "causal":
                raise KitError(f"{where}: padding='causal' does not load in tfjs-layers 4.22; pad explicitly "
                               "(ZeroPadding1D) and use 'valid'")
            if class_name == "ReLU" and (float(config.get("negative_slope") or 0) or float(config.get("threshold") or 0)):
                raise KitError(f"{where}: tfjs-layers 4.22's ReLU ignores negative_slope and threshold, so it would "
                               "compute another function; use LeakyReLU, or ReLU with only max_value")
            if class_name.startswith("Global") and "Pooling" in class_name and \
                    config.get("keepdims"):
                raise KitError(f"{where}: keepdims=True, which tfjs-layers 4.22 ignores (its global pooling returns "
                               "[batch, channels], layers/pooling.js), so the layers after it would get another "
                               "shape; --as graph runs it as TensorFlow does (or pool without keepdims and "
                               "Reshape after it)")
            if class_name == "Resizing":
                raise KitError(f"{where}: tfjs-layers 4.22's Resizing computes its output shape without the batch "
                               "dimension ([height, width, shape[2]], layers/preprocessing/image_resizing.js), so the "
                               "converted model fails in tfjs ('Shape mismatch'); --as graph runs it as TensorFlow "
                               "does (or resize the input before the model)")
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


def flat_tf_keras_model(source):
    """The source model as one flat tf-keras functional model with its weights: the model
    tfjs gets. Keras 3 layers are translated (keras3.py); nested models are flattened."""
    keras = load_keras()
    if source.format == "keras3":
        from ..keras3 import translate_layer
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
    point_names = plan_module.point_names(source.graph)  # the model's outputs, as points (Plan.outputs)
    described["outputs"] = list(dict.fromkeys(point_names[(layer, node)] for layer, node, _ in source.graph.outputs
                                              if (layer, node) in point_names))  # (an input is no point)
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


class KerasProbe:
    """python_runner's execution of a Keras model: the model as shipped (predict_on_batch),
    and its Probe (built on first use: the shipped model is timed before it exists)."""

    def __init__(self, model, keras, plan, by_path=True):
        import tensorflow as tf
        self.model, self.keras, self.plan, self.by_path = model, keras, plan, by_path
        self._probe = None
        keras_name = "tf_keras" if keras.__name__.startswith("tf_keras") else "keras"
        self.versions = {"tensorflow": tf.__version__, keras_name: keras.__version__}

    def _feed(self, inputs):
        feed = [inputs[i.name] for i in self.plan.inputs]
        return feed[0] if len(feed) == 1 else feed

    @property
    def probe(self):
        if self._probe is None:
            self._probe = probe_model(self.model, self.keras, self.plan, self.by_path)
        return self._probe

    def shipped(self, inputs):
        return self.model.predict_on_batch(self._feed(inputs))

    def predict(self, inputs):
        predictions = self.probe.model.predict(self._feed(inputs), verbose=0)
        return list(predictions) if isinstance(predictions, (list, tuple)) else [predictions]

    def weights(self, point):
        return self.probe.layers[point.name].get_weights()


def python_probe(source, plan):
    """The source model as TensorFlow Python runs it (the user's own, Keras 3 included)."""
    return KerasProbe(source.model, source.keras, plan)


def float64_probe(source, plan):
    """A float64 clone of the source model: the exact answer."""
    from ..reference import float64_clone
    return KerasProbe(float64_clone(source.model, source.keras), source.keras, plan)


def local_reference(converted_dir, plan, reference):
    """The LocalReference of a converted layers model (reference.py)."""
    from ..reference import LocalReference, load_reference_model
    model, keras, plan, by_path = load_reference_model(converted_dir)
    return LocalReference(model, keras, plan, reference, by_path)


def _rename(layer, name):
    if hasattr(layer, "_name"):  # tf-keras keeps it here; `name` is a read-only property
        layer._name = name
    else:
        layer.name = name


def stage_converted(flat_model, plan, inputs, source, model_dir, qmap=None, quantized_source=False):
    """Convert `flat_model` to a tfjs Layers model in `model_dir` (a new folder inside a run's
    staging folder), with the probe plan, the inputs ({name: array}) and, for a Keras 3
    source, the source model; `qmap` (the converter's quantization_dtype_map) or
    `quantized_source` (a layers model.json given quantized): its weights quantized (quantize()).
    The plan records the model's id (a hash of what was written):
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
    if qmap or quantized_source:
        quantize(flat_model, source, plan, model_dir, qmap)
    atomic_write_text(model_dir / INPUT_FILE, json.dumps({name: encode_tensor(a) for name, a in inputs.items()}))
    plan.model_id = model_id(model_dir)
    plan.save(model_dir / plan_module.PLAN_FILE)


def quantize(flat_model, source, plan, model_dir, qmap):
    """Quantize the weights of the layers model converted in `model_dir` (`qmap`: the
    converter's quantization_dtype_map; None for a layers model.json given quantized, whose
    own weight files replace the converted ones), and give `flat_model` and the source model
    the dequantized weights every runtime holds, so TF Python and the float64 reference run
    the quantized model. Records the quantization in `plan`."""
    from .. import quantization
    schemes = quantization.quantize_converted(model_dir, qmap) if qmap else \
        quantization.adopt_weights(source.file, model_dir)
    manifest = json.loads((model_dir / "model.json").read_text())["weightsManifest"]
    dequantized = {entry["name"]: entry["data"] for group in quantization.decoded_weights(model_dir, manifest)
                   for entry in group}
    names = {}
    for layer in source.graph.layers:
        target = flat_model.get_layer(layer.name)
        names[layer.name] = [weight.name.split(":")[0] for weight in target.weights]
        if not names[layer.name] or layer.class_name == "InputLayer":
            continue
        missing = [name for name in names[layer.name] if name not in dequantized]
        if missing:
            raise KitError(f"layer {layer.name!r}: its weight {missing[0]!r} is not in the converted model's "
                           "weightsManifest")
        values = [dequantized[name] for name in names[layer.name]]
        target.set_weights(values)
        find_layer(source.model, layer.path).set_weights(values)
    point_names = plan_module.point_names(source.graph)
    by_layer = {layer.name: layer for layer in source.graph.layers}
    outputs = []
    for layer, node, tensor in source.graph.outputs:
        config = by_layer[layer].config
        outputs.append({"point": point_names[(layer, node)], "index": tensor,
                        "softmax": by_layer[layer].class_name == "Softmax" or config.get("activation") == "softmax"})
    plan.quantization = quantization.plan_section(qmap, schemes, {p.name: names[p.layer] for p in plan.points
                                                                  if p.weights}, outputs)


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
