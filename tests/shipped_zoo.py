"""Models as their authors shipped them (issue 29), built for the tests: converted model.json
files as older tfjs converters wrote them, and graphs with what real shipped models hold.

  - legacy_graph/model.json: a graph model whose `_FusedConv2D` has no `TArgs` (what
    converters before tfjs 2.x wrote; TensorFlow 2.19 refuses such a node), a uint8 image
    input (tfjs feeds it as int32), a Cast from int32 and one from bool to float32 (tfjs's cpu
    and WebGL backends share the source's data: `data()` of the float32 result is an
    Int32Array or a Uint8Array), and a uint8-quantized weight whose manifest holds integer
    `min` and `scale` (-1 and 1), which NumPy 2 refuses in the converter's own reader;
  - legacy_layers/model.json: a layers model.json without a `format` key (tfjs 1.x's
    converter wrote none), its weights uint8-quantized with integer min and scale too;
  - unknown_rank/model.json: a graph model with an input of unknown rank (a recurrent
    state, as exported), fed by --input or --input-shape;
  - map_fn/model.json: a `tf.map_fn` loop, whose TensorArray carries a float32 flow value
    that must stay float32 in the float64 rewrite;
  - cumsum/model.json: a running sum along the last axis, after a node every backend runs:
    tfjs 4.22's wasm traps on it ("memory access out of bounds") and its cpu backend gives
    no values at all, while the tensorflow backend is right: one run, two failing backends;
  - nms/model.json, tensor_list/model.json: a non-max suppression and a TensorFlow 2 map_fn
    (a TensorList loop), as object detectors hold them;
  - cast_bool/model.json: `where(cast(a, bool), a, -1)` on values below 1 in magnitude, as
    handtrack's SSD masks its scores by box area: tfjs 4.22's wasm casts float to bool by
    truncating (tests/repro/wasm_cast_float_to_bool.js), every other backend gives a != 0;
  - int_matmul/model.json: gather indices made by an int32 MatMul, as MediaPipe's attention
    face mesh makes them (its SpatialTransformer's `repeat`): tfjs 4.22's wasm refuses an int32
    MatMul, and the first captured node that reads it is a float Gather.

    python tests/shipped_zoo.py OUT_DIR [NAME ...]

Run in its own process (tf-keras must be selected before TensorFlow is imported)."""
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

SHIPPED = ("legacy_graph", "legacy_layers", "unknown_rank", "map_fn", "cumsum", "nms", "tensor_list", "cast_bool",
           "int_matmul")
INTEGER_SCALE = np.array([-1.0, 0.0, 2.0, 7.0], np.float32)  # held as uint8 codes with min -1, scale 1


def rng():
    return np.random.default_rng(29)


def convert(module, signature, out):
    import tensorflow as tf
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as v2
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved, signatures={"serving_default": signature})
        v2.convert_tf_saved_model(saved, str(out), signature_def="serving_default")
    return json.loads((out / "model.json").read_text())


def rewrite_weights(out, document, quantize):
    """Write the model's weights again as one file, each float32 weight for which
    `quantize(name, values)` returns (codes, min, scale) as uint8 with that min and scale."""
    from tfjs_parity.quantization import decoded_weights
    groups = decoded_weights(out, document["weightsManifest"])
    for group in document["weightsManifest"]:
        for name in group["paths"]:
            (out / name).unlink()
    specs, data = [], b""
    for group, entries in zip(document["weightsManifest"], groups):
        for spec, entry in zip(group["weights"], entries):
            spec = {k: v for k, v in spec.items() if k != "quantization"}
            found = quantize(spec["name"], entry["data"]) if entry["data"].dtype == np.float32 else None
            if found is None:
                data += np.ascontiguousarray(entry["data"]).tobytes()
            else:
                codes, low, scale = found
                spec["quantization"] = {"dtype": "uint8", "min": low, "scale": scale}
                data += codes.astype(np.uint8).tobytes()
            specs.append(spec)
    (out / "group1-shard1of1.bin").write_bytes(data)
    document["weightsManifest"] = [{"paths": ["group1-shard1of1.bin"], "weights": specs}]


def build_legacy_graph(out):
    import tensorflow as tf
    r = rng()

    class Legacy(tf.Module):
        def __init__(self):
            self.kernel = tf.Variable(r.uniform(-1, 1, (3, 3, 3, 4)).astype("float32"))
            self.bias = tf.Variable(r.uniform(-1, 1, (4,)).astype("float32"))
            self.scale = tf.Variable(INTEGER_SCALE)

        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.uint8, name="image"),
                                      tf.TensorSpec([1], tf.int32, name="count")])
        def serve(self, image, count):
            x = tf.cast(image, tf.float32) / 255.0                       # Cast uint8 (fed as int32) -> float32
            y = tf.nn.relu(tf.nn.conv2d(x, self.kernel, 1, "SAME") + self.bias)  # grappler: _FusedConv2D
            pooled = tf.reduce_mean(y * self.scale, axis=[1, 2])
            n = tf.cast(count, tf.float32)                               # Cast int32 -> float32
            bright = tf.reduce_mean(tf.cast(x > 0.5, tf.float32), axis=[1, 2, 3])  # Cast bool -> float32
            return {"out": pooled * n[:, None] + bright[:, None]}
    module = Legacy()
    document = convert(module, module.serve, out)
    fused = [n for n in document["modelTopology"]["node"] if n["op"] == "_FusedConv2D"]
    assert fused and all("TArgs" in n["attr"] for n in fused), "the converter wrote no _FusedConv2D with TArgs"
    for node in fused:  # as converters before tfjs 2.x wrote them
        del node["attr"]["TArgs"]

    def integer(name, values):
        if values.shape == INTEGER_SCALE.shape and np.array_equal(values, INTEGER_SCALE):
            return values + 1, -1, 1   # integers in the manifest, as older converters wrote them
        return None
    rewrite_weights(out, document, integer)
    quantized = [w for g in document["weightsManifest"] for w in g["weights"] if "quantization" in w]
    assert len(quantized) == 1, "the scale constant is not a weight of its own"
    (out / "model.json").write_text(json.dumps(document))


def build_legacy_layers(out):
    import tf_keras as keras
    import tensorflowjs as tfjs
    uniform = keras.initializers.RandomUniform(-1, 1, seed=29)
    model = keras.Sequential([keras.Input((6,), name="x"),
                              keras.layers.Dense(5, activation="tanh", kernel_initializer=uniform,
                                                 bias_initializer=uniform, name="hidden"),
                              keras.layers.Dense(3, activation="softmax", kernel_initializer=uniform,
                                                 bias_initializer=uniform, name="head")])
    tfjs.converters.save_keras_model(model, str(out))
    document = json.loads((out / "model.json").read_text())
    del document["format"]  # tfjs 1.x's converter wrote none

    def on_a_grid(name, values):  # uint8 with an integer min and a power-of-two scale: integer and exact
        codes = np.clip(np.round((values + 1) * 64), 0, 255)
        return codes, -1, 1 / 64
    rewrite_weights(out, document, on_a_grid)
    (out / "model.json").write_text(json.dumps(document))


def build_unknown_rank(out):
    import tensorflow as tf
    r = rng()

    class Stateful(tf.Module):
        def __init__(self):
            self.w = tf.Variable(r.uniform(-1, 1, (4, 3)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x"),
                                      tf.TensorSpec(None, tf.float32, name="state")])
        def serve(self, x, state):
            return {"y": tf.tanh(tf.matmul(x, self.w)) + tf.reduce_sum(state)}
    module = Stateful()
    convert(module, module.serve, out)


def build_map_fn(out):
    """A TF1 graph (v1 control flow, as older models were saved): tf.map_fn writes a while loop
    over TensorArrayV3s, whose flow is a float32 that carries no number."""
    import tensorflow as tf
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as v2
    r = rng()
    tf.compat.v1.disable_control_flow_v2()
    graph = tf.Graph()
    with graph.as_default(), tempfile.TemporaryDirectory() as saved:
        x = tf.compat.v1.placeholder(tf.float32, [3, 4], name="x")
        w = tf.compat.v1.get_variable("w", initializer=r.uniform(-1, 1, (4, 4)).astype("float32"))
        rows = tf.map_fn(lambda row: tf.tanh(row * 2.0 + 1.0), x)
        y = tf.identity(tf.matmul(rows, w), name="y")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(Path(saved) / "model"))
            signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()
        v2.convert_tf_saved_model(str(Path(saved) / "model"), str(out), signature_def="serving_default")
    tf.compat.v1.enable_control_flow_v2()
    ops = {n["op"] for n in json.loads((out / "model.json").read_text())["modelTopology"]["node"]}
    assert "TensorArrayV3" in ops, f"the converter wrote no TensorArray for map_fn: {sorted(ops)}"


def build_cumsum(out):
    import tensorflow as tf
    r = rng()

    class Running(tf.Module):
        def __init__(self):
            self.w = tf.Variable(r.uniform(-1, 1, (5, 5)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([2, 3, 5], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.math.cumsum(tf.tanh(tf.matmul(x, self.w)), axis=-1)}
    module = Running()
    convert(module, module.serve, out)


def build_nms(out):
    import tensorflow as tf
    r = rng()

    class Detector(tf.Module):
        def __init__(self):
            self.w = tf.Variable(r.uniform(-1, 1, (4, 4)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([8, 4], tf.float32, name="boxes")])
        def serve(self, boxes):
            moved = tf.matmul(boxes, self.w)
            scores = tf.sigmoid(tf.reduce_sum(moved, axis=1))
            kept = tf.image.non_max_suppression(moved, scores, 3, iou_threshold=0.5)
            return {"kept": tf.gather(moved, kept) * 2.0}
    module = Detector()
    document = convert(module, module.serve, out)
    ops = {n["op"] for n in document["modelTopology"]["node"]}
    assert any(op.startswith("NonMaxSuppression") for op in ops), sorted(ops)


def build_tensor_list(out):
    import tensorflow as tf
    r = rng()

    class Mapped(tf.Module):
        def __init__(self):
            self.w = tf.Variable(r.uniform(-1, 1, (4, 4)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([3, 4], tf.float32, name="x")])
        def serve(self, x):
            rows = tf.map_fn(lambda row: tf.tanh(row * 2.0 + 1.0), x)
            return {"y": tf.matmul(rows, self.w)}
    module = Mapped()
    document = convert(module, module.serve, out)
    ops = {n["op"] for n in document["modelTopology"]["node"]}
    assert "TensorListStack" in ops, sorted(ops)


def build_cast_bool(out):
    import tensorflow as tf
    r = rng()

    class Masked(tf.Module):
        def __init__(self):
            self.w = tf.Variable(r.uniform(-1, 1, (6, 6)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([1, 6], tf.float32, name="x")])
        def serve(self, x):
            area = tf.tanh(tf.matmul(x, self.w)) * 0.5  # every value in (-0.5, 0.5), none 0
            masked = tf.where(tf.cast(area, tf.bool), area, -tf.ones_like(area))
            return {"y": masked * 3.0}
    module = Masked()
    document = convert(module, module.serve, out)
    casts = [n for n in document["modelTopology"]["node"] if n["op"] == "Cast"]
    assert any(n["attr"]["DstT"]["type"] == "DT_BOOL" for n in casts), casts


def build_int_matmul(out):
    import tensorflow as tf

    class Repeated(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32, name="x"),
                                      tf.TensorSpec([1, 1], tf.int32, name="step")])
        def serve(self, x, step):
            indices = tf.reshape(tf.matmul(step, tf.constant([[0, 1, 2, 3]], tf.int32)), [-1])  # at most 27
            return {"y": tf.gather(tf.tanh(x), indices, axis=1) * 2.0}
    module = Repeated()
    document = convert(module, module.serve, out)
    ops = {(n["op"], n.get("attr", {}).get("T", {}).get("type")) for n in document["modelTopology"]["node"]}
    assert ("MatMul", "DT_INT32") in ops, sorted(ops)


if __name__ == "__main__":
    # Set here, not at import: the tests import this module for its names, and an environment
    # changed in pytest's process would reach every later step they run (oneDNN off changes
    # TF Python's float32 bits: the study's table no longer matched).
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # as the kit converts: no oneDNN fusions tfjs lacks
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:] or SHIPPED:
        folder = root / name
        folder.mkdir()
        globals()[f"build_{name}"](folder)
        print(folder / "model.json")
