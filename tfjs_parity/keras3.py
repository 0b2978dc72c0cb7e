"""Keras 3 layer configs translated into tf-keras's, the dialect tfjs-layers 4.22 reads.

tfjs-layers cannot load what Keras 3 writes ("An InputLayer should be passed either a
`batchInputShape` or an `inputShape`", tfjs issue #8494) and tf-keras cannot read Keras 3
files. Per layer this translation:

- InputLayer: `batch_shape` -> `batch_input_shape`, `optional` dropped;
- dtype policies (`{"class_name": "DTypePolicy", "config": {"name": ...}}`) -> their name;
- nested objects (initializers, regularizers, constraints, wrapped layers): Keras 3's
  `module`/`registered_name` dropped, arguments tf-keras does not take dropped;
- renamed arguments (RENAMED);
- arguments tf-keras does not know: dropped when they cannot change inference (None,
  False, a seed...), otherwise a KitError naming the layer.

The graph itself (Keras 3's `inbound_nodes`) is translated by topology.py. Nothing here is
trusted: the kit's Python capture and float64 reference come from the original Keras 3
model, so a layer translated wrongly shows up as a mismatch of every tfjs runtime there.
"""
import inspect

from . import KitError

RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}
# Arguments that play no part in inference (dropout seeds, cuDNN choice, initializer fan axes).
INFERENCE_FREE = {"seed", "use_cudnn", "input_axes", "output_axes", "optional"}
BASE_LAYER_ARGUMENTS = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape",
                        "batch_size", "weights", "activity_regularizer", "autocast", "implementation"}


def translate_layer(class_name, config, keras):
    """tf-keras config for one Keras 3 layer; `keras` is the tf_keras module."""
    config = dict(config)
    if class_name == "InputLayer" and "batch_shape" in config:
        config["batch_input_shape"] = config.pop("batch_shape")
    for old, new in RENAMED.get(class_name, {}).items():
        if old in config:
            config[new] = config.pop(old)
    for key, value in config.items():
        if value == "hard_sigmoid":
            raise KitError(f"layer {config.get('name')!r} ({class_name}): {key}='hard_sigmoid' is clip(x/6 + 0.5) in "
                           "Keras 3 but clip(0.2x + 0.5) in tf-keras and tfjs: no tfjs layer computes it; "
                           "use 'sigmoid'")
    cls = getattr(keras.layers, class_name, None)
    if cls is None:
        raise KitError(f"layer {config.get('name')!r} ({class_name}) has no tf-keras counterpart, so it cannot be "
                       "converted to tfjs; replace it with built-in layers")
    accepted = _arguments(cls) | BASE_LAYER_ARGUMENTS
    translated = {}
    for key, value in config.items():
        if key not in accepted:
            if value in (None, False, {}, [], "auto") or key in INFERENCE_FREE:
                continue
            raise KitError(f"layer {config.get('name')!r} ({class_name}): argument {key}={value!r} has no "
                           "tf-keras/tfjs counterpart; the kit cannot translate this layer")
        translated[key] = _value(key, value, keras, config.get("name"))
    return translated


def _value(key, value, keras, layer):
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return value["config"]["name"]
    if isinstance(value, dict) and "class_name" in value and isinstance(value.get("config"), dict):
        class_name, config = value["class_name"], value["config"]
        if "name" in config and getattr(keras.layers, class_name, None) is not None:  # a wrapped layer
            return {"class_name": class_name, "config": translate_layer(class_name, config, keras)}
        module = next((getattr(keras, m) for m in ("initializers", "regularizers", "constraints")
                       if key.endswith(m[:-1])), None)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is None:
            raise KitError(f"layer {layer!r}: {key} is a {class_name}, which the kit cannot translate to tf-keras")
        accepted = _arguments(cls)
        return {"class_name": class_name, "config": {k: v for k, v in config.items() if k in accepted}}
    if isinstance(value, dict) and value.get("class_name") == "function" and isinstance(value.get("config"), str):
        return value["config"]  # an activation written as a serialized function
    return value


def _arguments(cls):
    """Every named __init__ argument of `cls` and the classes it passes **kwargs up to."""
    names = set()
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
    return names
