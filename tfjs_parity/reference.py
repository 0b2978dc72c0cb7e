"""The exact answer: the model evaluated in float64 from its float32 weights.

Two kinds of reference, both from a float64 clone of the Keras model (any Keras model the
kit can load, not only Dense stacks):

- the *global* reference (`reference_capture`): every layer's output for the model's input,
  saved like any other capture; the error against it is how far a runtime ends up from the
  right answer, including what earlier layers passed on;
- the *local* reference (`LocalReference`): each layer alone, in float64, on the inputs
  the runtime itself fed that layer (its own previous outputs). The error against it is
  only what that layer added, which is what a verdict needs: rounding in one layer is
  bounded, a wrong weight or op in one layer is not.
"""
import json

import numpy as np

from . import KitError
from .capture import Capture
from .model import held_stderr, load_keras

REFERENCE_RUNTIME, REFERENCE_BACKEND = "reference", "float64"


def float64_clone(model, weights=None):
    """The same topology with every dtype float64 and the (float32) weights cast exactly."""
    keras = load_keras()
    config = _as_float64(json.loads(model.to_json()))
    with held_stderr():
        clone = keras.models.model_from_json(json.dumps(config))
    clone.set_weights([np.asarray(w, dtype=np.float64) for w in (weights or model.get_weights())])
    return clone


def _as_float64(config):
    if isinstance(config, dict):
        return {key: ("float64" if key == "dtype" and value == "float32" else _as_float64(value))
                for key, value in config.items()}
    if isinstance(config, list):
        return [_as_float64(value) for value in config]
    return config


def reference_capture(model, inputs):
    """Capture the float64 clone of `model` on `inputs`: the exact answer, layer by layer."""
    from .runners import python_runner
    clone = float64_clone(model)
    with held_stderr():
        capture = python_runner.run(clone, np.asarray(inputs, dtype=np.float64), repeat=1)
    capture.metadata.update(runtime=REFERENCE_RUNTIME, backend=REFERENCE_BACKEND)
    capture.metadata.pop("timing", None)  # how fast float64 runs says nothing about anyone
    return capture


def load_converted_model(model_json):
    """The Keras model (topology and weights) of a converted tfjs Layers model."""
    load_keras()
    with held_stderr():
        import tensorflowjs
        try:
            return tensorflowjs.converters.load_keras_model(str(model_json))
        except Exception as error:  # the converter raises many kinds for a bad model
            raise KitError(f"{model_json}: cannot load as a Keras model ({error})") from None


class LocalReference:
    """Each layer of a float64 model, callable on one runtime's own inputs to that layer."""

    def __init__(self, model, reference):
        """`model`: the Keras topology; `reference`: the float64 capture whose weights are
        the true ones (a runtime's own weights may be the very thing that is wrong)."""
        keras = load_keras()
        weights = []
        for layer in model.layers:
            if not isinstance(layer, keras.layers.InputLayer):
                weights += reference.tensors.get(f"{layer.name}_weights", [])
        self.model = float64_clone(model, weights)
        self.keras = keras

    def layer_inputs(self, layer, capture):
        """The arrays `capture`'s runtime fed `layer`: its outputs of the layers before."""
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise KitError(f"layer {layer.name} is used {len(nodes)} times; per-layer verdicts need each layer once")
        inbound = nodes[0].inbound_layers
        inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
        arrays = []
        for source in inbound:
            if isinstance(source, self.keras.layers.InputLayer):
                arrays.append(capture.input)
            else:
                arrays.append(capture.tensors[f"{source.name}_output"][0])
        return [np.asarray(a, dtype=np.float64) for a in arrays]

    def evaluate(self, capture):
        """{layer: (local output, rounding scale, accumulation length)} for `capture`.

        The scale is what rounding errors are proportional to: for a layer with a kernel
        (Dense, Conv...) the layer evaluated with |weights| on |inputs| and no activation,
        i.e. sum |w x| + |b| per output; for other layers |output|. The accumulation length
        is how many products each output sums (kernel size / output channels), 1 without a
        kernel."""
        import tensorflow as tf
        results = {}
        for layer in self.model.layers:
            if isinstance(layer, self.keras.layers.InputLayer):
                continue
            inputs = self.layer_inputs(layer, capture)
            tensors = [tf.constant(a) for a in inputs]
            output = np.asarray(layer(tensors[0] if len(tensors) == 1 else tensors), dtype=np.float64)
            kernel = getattr(layer, "kernel", None)
            if kernel is not None:
                config = dict(layer.get_config(), activation="linear", name=f"{layer.name}_abs")
                absolute = layer.__class__.from_config(config)
                absolute.build(inputs[0].shape)
                absolute.set_weights([np.abs(w) for w in layer.get_weights()])
                scale = np.asarray(absolute(tf.constant(np.abs(inputs[0]))), dtype=np.float64)
                length = int(np.prod(kernel.shape[:-1]))
            else:
                scale, length = np.abs(output), 1
            results[layer.name] = (output, scale, length)
        return results
