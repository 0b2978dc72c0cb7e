"""The exact answer: the model evaluated in float64 from its float32 weights.

Two kinds of reference, both from a float64 clone of the user's own model (for a Keras 3
model, the Keras 3 original, not the tf-keras translation tfjs gets), both executing the
probe plan:

- the *global* reference (`reference_capture`): every point's output for the model's
  inputs, saved like any other capture; the error against it is how far a runtime ends up
  from the right answer, including what earlier layers passed on;
- the *local* reference (`LocalReference`): each point alone, in float64, on the inputs
  the runtime itself fed it (its own previous outputs), with the model's true weights. The
  error against it is only what that call added, which is what a verdict needs: rounding
  in one layer is bounded (bounds.py), a wrong weight or op in one layer is not.
"""
import inspect
import json

import numpy as np

from . import KitError
from .capture import WEIGHTS_SUFFIX
from .bounds import layer_bound
from .model import held_stderr, load_keras, load_keras3
from .plan import PLAN_FILE, Plan
from .runners import REFERENCE_RUNTIME

REFERENCE_BACKEND = "float64"


def float64_clone(model, keras):
    """The same topology (nested models included) with every float dtype float64 and the
    (float32) weights cast exactly."""
    config = _as_float64(json.loads(model.to_json()))
    with held_stderr():
        clone = keras.models.model_from_json(json.dumps(config))
    clone.set_weights([np.asarray(w, dtype=np.float64) for w in model.get_weights()])
    return clone


def _as_float64(config):
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):  # Keras 3's dtype policies
            return "float64"
        return {key: ("float64" if key == "dtype" and value in ("float32", "float16", "mixed_float16")
                      else _as_float64(value)) for key, value in config.items()}
    if isinstance(config, list):
        return [_as_float64(value) for value in config]
    return config


def as_float64(arrays):
    """Float arrays as float64; integer arrays (token ids) as they are."""
    return [a if np.issubdtype(np.asarray(a).dtype, np.integer) else np.asarray(a, dtype=np.float64) for a in arrays]


def reference_capture(probe, plan, inputs):
    """Capture `probe` (the kind's float64 execution of the model: its float64_probe) on
    `inputs`: the exact answer, point by point."""
    from .runners import python_runner
    with held_stderr():
        capture = python_runner.capture(probe, plan, dict(zip(inputs, as_float64(inputs.values()))), timed=False)
    capture.metadata.update(runtime=REFERENCE_RUNTIME, backend=REFERENCE_BACKEND)
    capture.metadata.pop("timing", None)  # how fast float64 runs says nothing about anyone
    capture.metadata.pop("repeat", None)
    for key in [k for k in capture.tensors if k.endswith(WEIGHTS_SUFFIX)]:
        # the weights are the model's float32 values, cast exactly: stored as float32, half the size
        capture.tensors[key] = [_exactly_float32(w) for w in capture.tensors[key]]
    return capture


def _exactly_float32(array):
    narrowed = np.asarray(array).astype(np.float32)
    if not np.array_equal(narrowed.astype(np.float64), array, equal_nan=True):
        raise AssertionError("a float64 reference weight is not a float32 value")  # a bug, not bad input
    return narrowed


def load_reference_model(converted_dir):
    """(model, keras module, plan, by_path) for the local reference of a converted model: the
    Keras 3 original when the user gave one (kept beside the converted model), else the
    converted model itself (flat, so its layers are found by their flat names)."""
    plan = Plan.load(converted_dir / PLAN_FILE)
    if plan.source.get("format") == "keras3":
        keras = load_keras3()
        path = converted_dir / plan.source["file"]
        with held_stderr():
            try:
                return keras.saving.load_model(str(path), compile=False), keras, plan, True
            except Exception as error:  # Keras raises many kinds for a bad file
                raise KitError(f"{path}: cannot load the Keras 3 source model ({error})") from None
    keras = load_keras()
    return converted_float64(converted_dir / "model.json", keras), keras, plan, False  # float64 already


def converted_float64(model_json, keras):
    """The converted layers model's layers, each made straight in float64 from its config in
    the topology (as the converter's load_keras_model makes them, every dtype float64), with
    its initializers zeros: LocalReference sets every weight from the float64 capture's (the
    model's true weights), so drawing 25M random float64 numbers for ResNet50 first is only
    time. They are not wired into a model: LocalReference calls each on its own inputs and
    builds each from the shapes it is fed, as Keras would (wiring ResNet50's traced every
    layer on symbolic tensors: 0.7 s)."""
    try:
        topology = json.loads(model_json.read_text())["modelTopology"]
        config = _zero_initialized(_as_float64(topology.get("model_config", topology)))
        with held_stderr():
            layers = config.get("config", {}).get("layers") if isinstance(config.get("config"), dict) else None
            if not isinstance(layers, list):  # an older layout: built as a model
                return keras.models.model_from_json(json.dumps(config))
            return FlatLayers({layer["config"]["name"]: keras.layers.deserialize(
                {"class_name": layer["class_name"], "config": layer["config"]}) for layer in layers})
    except (KitError, KeyboardInterrupt):
        raise
    except Exception as error:  # Keras raises many kinds for a bad model
        raise KitError(f"{model_json}: cannot load as a Keras model ({error})") from None


class FlatLayers:
    """A flat model's layers by name, unwired (converted_float64); get_layer as a model's."""

    def __init__(self, layers):
        self._layers = layers

    def get_layer(self, name):
        if name not in self._layers:
            raise ValueError(f"no layer {name!r} in the converted model")
        return self._layers[name]


def _zero_initialized(config):
    if isinstance(config, dict):
        return {key: ({"class_name": "Zeros", "config": {}} if key.endswith("_initializer") and value is not None
                      else _zero_initialized(value)) for key, value in config.items()}
    if isinstance(config, list):
        return [_zero_initialized(value) for value in config]
    return config


class LocalReference:
    """Each capture point of a float64 model, callable on one runtime's own inputs to it."""

    def __init__(self, model, keras, plan, reference, by_path=True):
        """`model`: the user's (cloned here in float64), or the converted model built in float64
        (by_path False: converted_float64)."""
        """`reference`: the float64 capture, whose weights are the true ones (a runtime's own
        weights may be the very thing that is wrong)."""
        import tensorflow as tf
        self.tf, self.keras = tf, keras
        self.plan, self.reference = plan, reference
        self.exact_fed = {}  # id(capture) -> {point: the source whose exact answer fed it}
        self._decoded = {}  # id(capture) -> its inputs, decoded once (ResNet50's: 15 ms, at each of 176 points)
        if by_path:  # the Keras 3 original: cloned in float64 (the converted model is built so)
            model = float64_clone(model, keras)
        from .model import find_layer  # every layer built, as in the model
        self.layers = {point.name: find_layer(model, point.path if by_path else [point.layer]) for point in plan.points}
        for point in plan.points:  # unwired layers (converted_float64) built from what they are fed
            layer = self.layers[point.name]
            if not layer.built:
                specs = [tf.TensorSpec([None, *np.shape(a)[1:]], tf.as_dtype(np.asarray(a).dtype))
                         for a in self.point_inputs(point, reference)]
                with held_stderr():
                    layer._maybe_build(specs[0] if len(specs) == 1 else specs)  # what Layer.__call__ does first
        given = set()
        for point in plan.points:
            layer, weights = self.layers[point.name], reference.weights(point.name)
            if point.weights and weights:
                layer.set_weights([np.asarray(w, np.float64) for w in weights])
                given.add(id(layer))
        for point in plan.points:  # a shared layer's weights come with its first call
            if self.layers[point.name].weights and id(self.layers[point.name]) not in given:
                raise KitError(f"{reference.label}: it holds no weights for layer {point.layer!r}; make it again "
                               "with create_keras_model.py")

    def layer(self, point):
        return self.layers[point.name]

    def _inputs(self, capture):
        if id(capture) not in self._decoded:
            inputs = capture.inputs
            if list(inputs) == [None] and len(self.plan.inputs) == 1:  # a capture from before named inputs
                inputs = {self.plan.inputs[0].name: inputs[None]}
            self._decoded[id(capture)] = (capture, inputs)  # the capture kept: its id stays its own
        return self._decoded[id(capture)][1]

    def point_inputs(self, point, capture):
        """The arrays `capture`'s runtime fed `point`: model inputs, or its own outputs of earlier
        points; where one of those is shaped differently from the exact answer's (the runtime
        computed another shape there), the exact answer's, recorded in `self.exact_fed`."""
        inputs = self._inputs(capture)
        arrays = []
        for source in point.sources:
            if "input" in source:
                if source["input"] not in inputs:
                    raise KitError(f"{capture.label}: its metadata holds no input {source['input']!r}")
                arrays.append(inputs[source["input"]])
                continue
            own = capture.outputs(source["point"])[source["index"]]
            exact = self.reference.outputs(source["point"])[source["index"]]
            if np.shape(own) != np.shape(exact):
                self.exact_fed.setdefault(id(capture), {})[point.name] = source["point"]
                own = exact
            arrays.append(own)
        return as_float64(arrays)

    def evaluate(self, layer, arrays, kwargs=None):
        """`layer` on `arrays` in float64; a mask goes only to a layer whose call takes one
        (Keras itself hands masks on that way)."""
        tensors = [self.tf.constant(a) for a in arrays]
        kwargs = dict(kwargs or {})
        if "mask" in kwargs and "mask" not in inspect.signature(layer.call).parameters:
            kwargs.pop("mask")
        result = layer(tensors[0] if len(tensors) == 1 else tensors, **kwargs)
        result = result if isinstance(result, (list, tuple)) else [result]
        return [np.asarray(r, dtype=np.float64) for r in result]

    def evaluate_capture(self, capture, precisions):
        """(point, exact outputs on this capture's own inputs, {precision name: bounds or None}),
        one point at a time: only one layer's arrays are in memory at once.

        Keras masks (Embedding(mask_zero=True), Masking) are carried as Keras carries them:
        each layer gets its sources' masks and passes on its compute_mask(); without them a
        layer's exact answer would be another function's."""
        masks = {}  # point -> a mask per output, for points that pass one on
        for point in self.plan.points:
            layer = self.layer(point)
            arrays = self.point_inputs(point, capture)
            kwargs = dict(point.kwargs)
            source_masks = [None if "input" in s else masks.get(s["point"], {}).get(s["index"]) for s in point.sources]
            if any(m is not None for m in source_masks):
                kwargs["mask"] = source_masks[0] if len(arrays) == 1 else source_masks

            def evaluate(layer_, arrays_, kwargs=kwargs):
                return self.evaluate(layer_, arrays_, kwargs)
            outputs = evaluate(layer, arrays)
            produced = self._output_masks(layer, arrays, kwargs.get("mask"), len(outputs))
            if produced:
                masks[point.name] = produced
            with np.errstate(all="ignore"):
                bounds = {p.name: layer_bound(layer, arrays, outputs, p, evaluate, kwargs.get("mask"))
                          for p in precisions}
            yield point, outputs, bounds

    def _output_masks(self, layer, arrays, mask, count):
        """{output index: mask} that `layer` passes on, or {}."""
        tensors = [self.tf.constant(a) for a in arrays]
        try:
            result = layer.compute_mask(tensors[0] if len(tensors) == 1 else tensors, mask)
        except (TypeError, ValueError, NotImplementedError):
            return {}
        if result is None:
            return {}
        result = list(result) if isinstance(result, (list, tuple)) else [result] * count
        return {i: np.asarray(m) for i, m in enumerate(result) if m is not None}
