"""A Keras config's graph (topology.py) and the Keras 3 -> tf-keras translation (keras3.py),
on small models built here in both Keras versions: what every probe plan is made from."""
import pytest

from tfjs_parity import KitError, topology
from tfjs_parity.model import SourceModel, load_keras, load_keras3


def _shared_and_nested(keras):
    """x -> inner(Dense, ReLU) -> shared Dense twice -> Add: a nested model and a shared layer."""
    inner_in = keras.Input((4,), name="inner_in")
    inner = keras.Model(inner_in, keras.layers.ReLU(name="relu")(keras.layers.Dense(4, name="d")(inner_in)),
                        name="inner")
    x = keras.Input((4,), name="x")
    shared = keras.layers.Dense(4, name="shared")
    h = inner(x)
    return keras.Model(x, keras.layers.Add(name="add")([shared(h), shared(shared(h))]), name="outer")


@pytest.fixture(scope="module", params=["tf_keras", "keras3"])
def flat(request):
    keras = load_keras() if request.param == "tf_keras" else load_keras3()
    graph = SourceModel(_shared_and_nested(keras), keras, request.param).graph
    graph.format = request.param
    return graph


def test_a_nested_model_is_flattened_and_a_shared_layer_keeps_each_call(flat):
    names = [layer.name for layer in flat.layers]
    assert names == ["x", "d", "relu", "shared", "add"]
    layers = {layer.name: layer for layer in flat.layers}
    assert layers["d"].path == ("inner", "d") and layers["shared"].path == ("shared",)
    assert len(layers["shared"].nodes) == 3  # called three times
    # d is fed by the outer input through the inner model; add by the 1st and 3rd call of shared
    assert [i[0] for i in layers["d"].nodes[0].inputs] == ["x"]
    assert sorted(i[:2] for i in layers["add"].nodes[0].inputs) == [("shared", 0), ("shared", 2)]
    assert flat.inputs == [("x", 0, 0)] and flat.outputs == [("add", 0, 0)]


def test_the_flat_graph_rebuilds_in_tf_keras_with_the_same_layers(flat):
    import json

    from tfjs_parity.keras3 import translate_layer
    keras = load_keras()
    config = topology.to_tf_keras_config(flat, lambda layer: translate_layer(layer.class_name, layer.config, keras)
                                         if flat.format == "keras3" else layer.config)
    rebuilt = keras.models.model_from_json(json.dumps(config))
    assert [layer.name for layer in rebuilt.layers] == ["x", "d", "relu", "shared", "add"]


def test_a_single_layer_is_not_a_model():
    with pytest.raises(KitError, match="found a single Dense layer"):
        topology.parse({"class_name": "Dense", "config": {}}, keras3=False)


def test_keras3_layers_translate_to_tf_keras_arguments():
    from tfjs_parity.keras3 import translate_layer
    keras = load_keras()
    assert translate_layer("InputLayer", {"name": "x", "batch_shape": [None, 3], "optional": False}, keras) == \
        {"name": "x", "batch_input_shape": [None, 3]}
    assert translate_layer("LeakyReLU", {"name": "l", "negative_slope": 0.2}, keras)["alpha"] == 0.2
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    assert translate_layer("Dense", {"name": "d", "units": 2, "dtype": policy}, keras)["dtype"] == "float32"
    assert "quantization_config" not in translate_layer("Dense", {"name": "d", "units": 2,
                                                                  "quantization_config": None}, keras)
    assert "use_cudnn" not in translate_layer("LSTM", {"name": "r", "units": 2, "use_cudnn": "auto"}, keras)
    with pytest.raises(KitError, match="argument flash=True has no tf-keras/tfjs counterpart"):
        translate_layer("Dense", {"name": "d", "units": 2, "flash": True}, keras)
    with pytest.raises(KitError, match="no tf-keras counterpart"):
        translate_layer("NoSuchLayer", {"name": "n"}, keras)
    with pytest.raises(KitError, match="hard_sigmoid"):
        translate_layer("Dense", {"name": "d", "units": 2, "activation": "hard_sigmoid"}, keras)


@pytest.mark.parametrize("version", ["tf_keras", "keras3"])
def test_the_layers_kind_flattens_either_keras_into_the_tf_keras_model_tfjs_gets(version):
    """kinds/layers_model.flat_tf_keras_model: same layers, same weights, same answer."""
    import numpy as np

    from tfjs_parity.kinds.layers_model import flat_tf_keras_model
    keras = load_keras() if version == "tf_keras" else load_keras3()
    source = SourceModel(_shared_and_nested(keras), keras, version)
    flat = flat_tf_keras_model(source)
    assert [layer.name for layer in flat.layers] == ["x", "d", "relu", "shared", "add"]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(flat.predict(x, verbose=0), source.model.predict(x, verbose=0), rtol=1e-6)
