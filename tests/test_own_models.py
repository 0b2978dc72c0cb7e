"""Your own model: a zoo of user-like models (tests/zoo.py), each converted and run for real
in TensorFlow Python, every Node backend and browser WebGL, and judged layer by layer."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, check, copy_study, corrupt_weight, leftovers, run_pipeline, run_script
from tfjs_parity.capture import Capture
from tfjs_parity.plan import PLAN_FILE, Plan

sys.path.insert(0, str(ROOT / "tests"))
from zoo import ZOO  # noqa: E402

pytestmark = pytest.mark.slow  # the real steps, as subprocesses: see pytest.ini

FLOAT32_OK = {"same bits", "float32 rounding"}
EXPECTED_CAPTURES = {"python/tensorflow", "node/tensorflow", "node/cpu", "node/wasm", "browser/webgl"}


def verdicts(capture_entry):
    return {layer["layer"]: layer["verdict"] for layer in capture_entry["layers"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_every_layer_in_every_runtime_is_float32_rounding(zoo_runs, name):
    out, stdout, document = zoo_runs[name]
    plan = Plan.load(out / "keras_converted" / PLAN_FILE)
    captures = {c["label"]: c for c in document["captures"]}
    assert set(captures) == EXPECTED_CAPTURES
    for label, entry in captures.items():
        judged = verdicts(entry)
        assert list(judged) == [p.name for p in plan.points], label  # every point, in order
        assert set(judged.values()) <= FLOAT32_OK, (label, {k: v for k, v in judged.items() if v not in FLOAT32_OK})
        for layer in entry["layers"]:
            assert layer["bound_ratio"] <= 1 and layer["vs_float64"]["max_rel"] < 1e-3, (label, layer)
    for point in plan.points:  # every point appears in the printed report too
        assert f"\n{point.name[:19]}" in stdout


SAME_LOCAL_REFERENCE = """
import sys
from pathlib import Path
import numpy as np
from tfjs_parity.capture import Capture
from tfjs_parity.kinds.layers_model import local_reference
from tfjs_parity.model import find_layer, load_keras
from tfjs_parity.plan import PLAN_FILE, Plan
from tfjs_parity.reference import LocalReference, float64_clone
from tfjs_parity.verdict import FLOAT32
out = Path(sys.argv[1])
converted = out / "keras_converted"
python = Capture.load(next(out.glob("keras_model_python.*")))
exact = Capture.load(next(out.glob("keras_model_float64.*")))
plan = Plan.load(converted / PLAN_FILE)
fast = local_reference(converted, plan, exact)
keras = load_keras()
import tensorflowjs  # the way before: the converter's loader, then a float64 clone with its weights
before = float64_clone(tensorflowjs.converters.load_keras_model(str(converted / "model.json")), keras)
slow = LocalReference(before, keras, plan, exact, by_path=False)
for (point, a, bounds_a), (_, b, bounds_b) in zip(fast.evaluate_capture(python, [FLOAT32]),
                                                  slow.evaluate_capture(python, [FLOAT32])):
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b)), point.name
    assert (bounds_a["float32"] is None) == (bounds_b["float32"] is None), point.name
    if bounds_a["float32"] is not None:
        assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(bounds_a["float32"], bounds_b["float32"])), \
            point.name
print("same", len(plan.points))
"""


@pytest.mark.parametrize("name", ["mlp", "cnn", "text", "bilstm", "two_inputs", "mobilenet"])
def test_the_float64_model_built_once_is_the_one_cloned_before(zoo_runs, name):
    """The local reference's float64 layers, each made alone from the converted topology with
    zero initializers and built from what it is fed (converted_float64), answer bit for bit,
    with the same bounds, as the float64 clone of the converter's own loading did, at every
    point of the zoo model."""
    out, _, _ = zoo_runs[name]
    done = subprocess.run([sys.executable, "-c", SAME_LOCAL_REFERENCE, str(out)], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, TF_USE_LEGACY_KERAS="1"))
    assert done.returncode == 0 and done.stdout.startswith("same"), done.stderr[-3000:]


def test_nested_models_and_shared_layers_become_points_of_their_own(zoo_runs):
    out, _, _ = zoo_runs["two_inputs"]
    plan = Plan.load(out / "keras_converted" / PLAN_FILE)
    points = {p.name: p for p in plan.points}
    assert [i.name for i in plan.inputs] == ["left", "right"]
    # one Dense called on both inputs: a point per call, the weights at the first
    assert points["shared_call0"].sources == [{"input": "left"}] and points["shared_call0"].weights
    assert points["shared_call1"].sources == [{"input": "right"}] and not points["shared_call1"].weights
    # a Sequential inside the model: its layers, not one opaque block
    assert points["inner_dense"].path == ["inner", "inner_dense"] and "inner" not in points
    node = Capture.load(out / "keras_model_tfjs_node.json")
    python = Capture.load(out / "keras_model_python.json")
    assert "shared_call1_weights" not in node.tensors
    np.testing.assert_array_equal(node.outputs("shared_call1")[0], python.outputs("shared_call1")[0])


def test_keras3_model_is_translated_and_judged_against_its_original(zoo_runs):
    out, stdout, document = zoo_runs["keras3"]
    converted = out / "keras_converted"
    plan = Plan.load(converted / PLAN_FILE)
    assert {k: v for k, v in plan.source.items() if k != "outputs"} == {"format": "keras3",
                                                                        "file": "source_model.keras"}
    assert plan.source["outputs"] and set(plan.source["outputs"]) <= {p.name for p in plan.points}  # its outputs
    assert (converted / "source_model.keras").is_file()
    python = Capture.load(out / "keras_model_python.json")
    assert python.metadata["versions"]["keras"].startswith("3.")  # captured by Keras 3 itself
    assert python.metadata["model"]["format"] == "keras3"
    topology = json.loads((converted / "model.json").read_text())["modelTopology"]["model_config"]["config"]
    leaky = next(layer for layer in topology["layers"] if layer["class_name"] == "LeakyReLU")
    assert leaky["config"]["alpha"] == pytest.approx(0.1)  # Keras 3's negative_slope, renamed
    assert [p.name for p in plan.points][-2:] == ["head_hidden", "head_dense"]  # the nested Keras 3 model


def test_integer_inputs_stay_within_the_vocabulary_and_the_input_is_recorded(zoo_runs, zoo_files, tmp_path):
    out, _, _ = zoo_runs["text"]
    python = Capture.load(out / "keras_model_python.json")
    tokens = python.inputs["tokens"]
    assert tokens.dtype == np.int32 and tokens.shape == (1, 12) and 0 <= tokens.min() and tokens.max() < 50
    assert python.metadata["input_origin"]["random_seed"] == 0
    node = Capture.load(out / "keras_model_tfjs_node.json")
    np.testing.assert_array_equal(node.inputs["tokens"], tokens)
    # the same seed gives the same input; another seed another
    check(run_script("create_keras_model.py", "--model", zoo_files["text"], "--out-dir", tmp_path, "--repeat", "1",
                     "--input-seed", "5"))
    other = Capture.load(tmp_path / "keras_model_python.json").inputs["tokens"]
    assert not np.array_equal(other, tokens)


def test_an_npz_input_feeds_each_input_by_name(zoo_files, tmp_path):
    left = np.linspace(-2, 2, 6, dtype=np.float32)[None]
    right = np.full((1, 6), 0.5, dtype=np.float64)  # float64: fed to the float32 model as float32
    np.savez(tmp_path / "feed.npz", right=right, left=left)
    out = tmp_path / "out"
    check(run_script("create_keras_model.py", "--model", zoo_files["two_inputs"], "--input", tmp_path / "feed.npz",
                     "--out-dir", out, "--repeat", "1"))
    python = Capture.load(out / "keras_model_python.json")
    np.testing.assert_array_equal(python.inputs["left"], left)
    np.testing.assert_array_equal(python.inputs["right"], right.astype(np.float32))
    assert python.metadata["input_origin"]["file"].endswith("feed.npz")


@pytest.mark.slow
def test_a_scaled_kernel_in_the_weights_file_is_a_mismatch_at_that_layer_only(zoo_runs, tmp_path):
    source, _, _ = zoo_runs["cnn"]
    out = copy_study(source, tmp_path / "cnn")
    corrupt_weight(out / "keras_converted", "separable_conv2d/pointwise_kernel", lambda w: w * 1.001)
    check(run_script("run_node.py", "--out-dir", out, "--backend", "cpu", "--repeat", "1"))
    done = run_script("compare_outputs.py", "--out-dir", out, out / "keras_model_tfjs_node_cpu.json", "--full",
                      "--json", out / "full.json")
    captures = {c["label"]: c for c in json.loads((out / "full.json").read_text())["captures"]}
    judged = list(verdicts(captures["node/cpu"]).items())
    layers = [name for name, _ in judged]
    at = layers.index("separable_conv2d")
    assert judged[at][1] == "mismatch", judged
    assert all(verdict in FLOAT32_OK for _, verdict in judged[:at]), judged
    assert "node/cpu: mismatch starts at separable_conv2d" in done.stdout


@pytest.mark.slow
def test_a_recurrent_kernel_off_by_a_little_is_caught_by_the_output_check_alone(zoo_runs, tmp_path):
    """A runtime that reports the right weights but computes with an LSTM recurrent kernel
    off by 0.3%: only the output check, through the bound carried over 12 time steps, sees it."""
    source, _, _ = zoo_runs["text"]
    out = copy_study(source, tmp_path / "text")
    corrupt_weight(out / "keras_converted", "lstm/lstm_cell/recurrent_kernel", lambda w: w * 1.003)
    check(run_script("run_node.py", "--out-dir", out, "--repeat", "1"))
    node = Capture.load(out / "keras_model_tfjs_node.json")
    python = Capture.load(out / "keras_model_python.json")
    for key in node.tensors:
        if key.endswith("_weights"):
            node.tensors[key] = python.tensors[key]
    node.save(out / "keras_model_tfjs_node.json")
    run_script("compare_outputs.py", "--out-dir", out, out / "keras_model_tfjs_node.json", "--full", "--json",
               out / "full.json")
    captures = {c["label"]: c for c in json.loads((out / "full.json").read_text())["captures"]}
    judged = verdicts(captures["node/tensorflow"])
    assert judged["embedding"] == "same bits" and judged["lstm"] == "mismatch", judged


def test_the_long_report_stays_aligned(zoo_runs):
    _, stdout, document = zoo_runs["mobilenet"]
    assert len(document["captures"][0]["layers"]) > 150
    block = next(b for b in stdout.split("\n\n") if b.startswith("python/tensorflow  (stores")).splitlines()
    header, rows = block[1], block[2:]
    column = header.index("vs Python")
    assert all(len(row) > column and row[column - 1] == " " for row in rows)  # names never push into the numbers


# --- bad input: one line, a non-zero exit, nothing written ----------------------------------

def build_with_tf_keras(tmp_path, code, name):
    """Save a small tf-keras model made by `code` (which sets `model`) as tmp_path/name."""
    script = ("import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'\nimport tf_keras as keras\n" + code +
              f"\nmodel.save({str(tmp_path / name)!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    return tmp_path / name


@pytest.mark.parametrize("code, fragments", [
    ("i = keras.Input((4,)); model = keras.Model(i, keras.layers.Lambda(lambda x: x * 2, name='double')(i))",
     ["layer 'double' (Lambda)", "tfjs cannot run"]),
    ("i = keras.Input((5, 3)); model = keras.Model(i, keras.layers.GRU(2, name='gru_default')(i))",
     ["layer 'gru_default' (GRU)", "reset_after=True", "reset_after=False"]),
])
def test_a_layer_tfjs_cannot_run_is_named(tmp_path, code, fragments):
    model = build_with_tf_keras(tmp_path, code, "model.h5")
    done = run_script("create_keras_model.py", "--model", model, "--out-dir", tmp_path / "out")
    assert_one_line_error(done, *fragments)
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("name, content, fragment", [
    ("missing.keras", None, "not found"),
    ("notes.keras", b"not a zip", "not a Keras 3 .keras file"),
    ("weights.h5", b"\x89HDF\r\n\x1a\n garbage", "not an HDF5 file"),
    ("model.onnx", b"x", "expected a .keras file, a .h5 file or a SavedModel folder"),
])
def test_a_file_that_is_not_a_model_is_one_line(tmp_path, name, content, fragment):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    done = run_script("create_keras_model.py", "--model", tmp_path / name, "--out-dir", tmp_path / "out")
    assert_one_line_error(done, f"--model {tmp_path / name}", fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model, array, fragments", [
    ("mlp", np.zeros((1, 21), np.float32), ["input 'input_1'", "shape [1, 21]", "expected shape (batch, 20) float32"]),
    ("text", np.zeros((1, 12), np.float32), ["input 'tokens' is float32", "expected shape (batch, 12) int32"]),
    ("two_inputs", np.zeros((1, 6), np.float32), ["one array, but the model has 2 inputs", "left (batch, 6)"]),
])
def test_an_input_that_does_not_fit_names_what_was_expected(zoo_files, tmp_path, model, array, fragments):
    np.save(tmp_path / "input.npy", array)
    done = run_script("create_keras_model.py", "--model", zoo_files[model], "--input", tmp_path / "input.npy",
                      "--out-dir", tmp_path / "out")
    assert_one_line_error(done, *fragments)
    assert not (tmp_path / "out").exists()


def test_study_options_do_not_mix_with_a_model(zoo_files, tmp_path):
    done = run_script("create_keras_model.py", "--model", zoo_files["mlp"], "--depth", "3", "--out-dir", tmp_path)
    assert_one_line_error(done, "--depth, --units and --seed build the study's model")


def test_the_kit_knows_which_layers_tfjs_has():
    """model.TFJS_LAYERS against the classes tfjs-layers really registers."""
    from tfjs_parity.kinds.layers_model import TFJS_LAYERS
    script = ("const tf = require('@tensorflow/tfjs');"
              "console.log(JSON.stringify(Object.keys(tf.serialization.SerializationMap.getMap().classNameMap)));")
    done = subprocess.run(["node", "-e", script], cwd=ROOT, capture_output=True, text=True, check=True)
    registered = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert TFJS_LAYERS <= registered, TFJS_LAYERS - registered
    assert "Lambda" not in registered and "Subtract" not in registered


@pytest.mark.slow
def test_every_browser_backend_and_float16_on_a_cnn(zoo_runs, tmp_path):
    """WebGPU, WASM and the plain CPU backend in Chromium are float32 rounding on every layer;
    float16 textures are reduced precision (max pooling stays exact), never a mismatch."""
    source, _, _ = zoo_runs["cnn"]
    out = copy_study(source, tmp_path / "cnn")
    check(run_script("run_browser.py", "--out-dir", out, "--backend", "all", "--repeat", "1"))
    check(run_script("run_browser.py", "--out-dir", out, "--precision", "f16", "--repeat", "1"))
    check(run_script("compare_outputs.py", "--out-dir", out, *sorted(out.glob("keras_model_tfjs_*.json")),
                     "--full", "--json", out / "full.json"))
    captures = {c["label"]: c for c in json.loads((out / "full.json").read_text())["captures"]}
    assert set(captures) == {"python/tensorflow", "browser/webgl", "browser/wasm", "browser/cpu", "browser/webgpu",
                             "browser/webgl/f16"}
    for label, entry in captures.items():
        expected = FLOAT32_OK | ({"reduced precision"} if label.endswith("f16") else set())
        assert set(verdicts(entry).values()) <= expected, (label, verdicts(entry))
    assert "reduced precision" in verdicts(captures["browser/webgl/f16"]).values()


def test_keras3_hard_sigmoid_has_no_tfjs_counterpart(tmp_path):
    """Keras 3's hard_sigmoid is clip(x/6 + 0.5); tf-keras's and tfjs's is clip(0.2x + 0.5):
    translating the name would silently change the function."""
    script = ("import keras\ni = keras.Input((5, 3))\n"
              "o = keras.layers.LSTM(2, recurrent_activation='hard_sigmoid', name='gates')(i)\n"
              f"keras.Model(i, o).save({str(tmp_path / 'hard.keras')!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    done = run_script("create_keras_model.py", "--model", tmp_path / "hard.keras", "--out-dir", tmp_path / "out")
    assert_one_line_error(done, "layer 'gates' (LSTM)", "hard_sigmoid", "clip(x/6 + 0.5)")


# --- models that broke earlier versions ----------------------------------------------------

def pipeline_on_node_cpu(model, out, *create_args):
    check(run_script("create_keras_model.py", "--model", model, "--out-dir", out, "--repeat", "1", *create_args))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "cpu", "--repeat", "1"))
    run_script("compare_outputs.py", "--out-dir", out, out / "keras_model_tfjs_node_cpu.json", "--full",
               "--json", out / "full.json")
    return {c["label"]: verdicts(c) for c in json.loads((out / "full.json").read_text())["captures"]}


def test_inner_and_outer_layers_of_the_same_name_are_both_captured(tmp_path):
    model = build_with_tf_keras(tmp_path, (
        "inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name='dense')], name='inner')\n"
        "x = keras.Input((4,)); model = keras.Model(x, keras.layers.Dense(2, name='dense')(inner(x)))"), "clash.h5")
    judged = pipeline_on_node_cpu(model, tmp_path / "out")
    assert list(judged["node/cpu"]) == ["inner_dense", "dense"]
    assert set(judged["node/cpu"].values()) <= FLOAT32_OK


def test_tfjs_global_average_pooling_ignores_the_keras_mask(tmp_path):
    """A real difference, kept as its minimal reproducer: Keras averages only the steps an
    Embedding(mask_zero=True) leaves unmasked; tfjs-layers 4.22's GlobalAveragePooling1D
    averages all of them. The kit carries Keras' mask into its float64 reference, so tfjs
    is the mismatch and Python is float32 rounding."""
    model = build_with_tf_keras(tmp_path, (
        "x = keras.Input((7,), dtype='int32')\n"
        "y = keras.layers.Embedding(20, 4, mask_zero=True)(x)\n"
        "y = keras.layers.Dropout(0.5)(y)\n"  # passes the mask on; its call takes none
        "model = keras.Model(x, keras.layers.GlobalAveragePooling1D()(y))"), "mask.h5")
    np.save(tmp_path / "tokens.npy", np.array([[3, 4, 0, 0, 5, 0, 1]], np.int32))
    judged = pipeline_on_node_cpu(model, tmp_path / "out", "--input", tmp_path / "tokens.npy")
    assert judged["python/tensorflow"]["global_average_pooling1d"] == "float32 rounding"
    assert judged["node/cpu"]["global_average_pooling1d"] == "mismatch"
    assert judged["node/cpu"]["embedding"] in FLOAT32_OK and judged["node/cpu"]["dropout"] in FLOAT32_OK


def test_bilinear_upsampling_is_float32_rounding_in_python_and_a_mismatch_on_every_tfjs_runtime(tmp_path):
    """A real tfjs 4.22 bug (tfjs #4340: tfjs-layers resizes without half-pixel centres). The
    error model of bilinear interpolation (bounds.bilinear_bound) holds TF Python to float32
    rounding; every tfjs backend, under Node and in Chromium, is a mismatch at that layer."""
    model = build_with_tf_keras(tmp_path, (
        "x = keras.Input((4, 4, 2))\n"
        "model = keras.Model(x, keras.layers.UpSampling2D(2, interpolation='bilinear', name='up')(x))"), "up.h5")
    out = tmp_path / "out"
    check(run_script("create_keras_model.py", "--model", model, "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "1"))
    check(run_script("run_browser.py", "--out-dir", out, "--backend", "all", "--repeat", "1"))
    run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json")
    judged = {c["label"]: verdicts(c) for c in json.loads((out / "full.json").read_text())["captures"]}
    assert judged.pop("python/tensorflow")["up"] == "float32 rounding"
    assert sorted(judged) == ["browser/cpu", "browser/wasm", "browser/webgl", "browser/webgpu", "node/cpu",
                              "node/tensorflow", "node/wasm"]
    assert {label: v["up"] for label, v in judged.items()} == {label: "mismatch" for label in judged}


def test_a_masked_lstm_is_judged_on_webgpu_saved_not_refused_and_a_mismatch_there(tmp_path):
    """tfjs #8638 (open): Masking + LSTM on Chromium's WebGPU backend gives zeros or stale
    values. The capture is saved and judged; the masked recurrence has an error model (the
    recurrence with the mask applied), so the healthy backends are float32 rounding there."""
    model = build_with_tf_keras(tmp_path, (
        "x = keras.Input((6, 3)); y = keras.layers.Masking(0.0, name='mask')(x)\n"
        "y = keras.layers.LSTM(4, return_sequences=True, name='lstm')(y)\n"
        "model = keras.Model(x, keras.layers.Dense(2, name='head')(y))"), "masked.h5")
    x = np.random.default_rng(1).normal(size=(2, 6, 3)).astype(np.float32)
    x[0, 4:], x[1, 2] = 0.0, 0.0
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    check(run_script("create_keras_model.py", "--model", model, "--out-dir", out, "--input", tmp_path / "x.npy",
                     "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "cpu", "--repeat", "1"))
    check(run_script("run_browser.py", "--out-dir", out, "--backend", "webgl,webgpu", "--repeat", "1"))
    assert (out / "keras_model_tfjs_browser_webgpu.json").is_file()
    run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json")
    judged = {c["label"]: verdicts(c) for c in json.loads((out / "full.json").read_text())["captures"]}
    assert judged["browser/webgpu"]["lstm"] == "mismatch"
    for label in ("python/tensorflow", "node/cpu", "browser/webgl"):
        assert judged[label]["lstm"] in FLOAT32_OK, (label, judged[label])


def test_what_step_1_refuses_as_a_layers_model_the_graph_route_runs_and_judges(tmp_path):
    """Bilinear upsampling, Resizing and keepdims pooling --as graph: tfjs's ResizeBilinear
    and Mean ops compute them as TensorFlow does, judged against their error models
    (op_bounds: ResizeBilinear with its own half_pixel_centers) on every Node backend."""
    model = build_with_tf_keras(tmp_path, (
        "x = keras.Input((4, 4, 2)); y = keras.layers.UpSampling2D(2, interpolation='bilinear', name='up')(x)\n"
        "y = keras.layers.Resizing(5, 3, name='rs')(y)\n"
        "y = keras.layers.GlobalAveragePooling2D(keepdims=True, name='gap')(y)\n"
        "model = keras.Model(x, keras.layers.Dense(2, name='head')(y))"), "resize.h5")
    out = tmp_path / "out"
    check(run_script("create_keras_model.py", "--model", model, "--as", "graph", "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "1"))
    run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json")
    judged = {c["label"]: verdicts(c) for c in json.loads((out / "full.json").read_text())["captures"]}
    assert len(judged) == 4
    resizes = [name for name in judged["node/cpu"] if name.endswith("ResizeBilinear")]
    assert len(resizes) == 2
    for label, points in judged.items():
        assert set(points.values()) <= FLOAT32_OK, (label, points)


def test_a_nan_in_the_input_is_inherited_not_a_fault(tmp_path):
    model = build_with_tf_keras(tmp_path, "x = keras.Input((3,)); model = keras.Model(x, keras.layers.Dense(2)(x))",
                                "dense.h5")
    np.save(tmp_path / "x.npy", np.array([[np.nan, 1.0, 2.0]], np.float32))
    judged = pipeline_on_node_cpu(model, tmp_path / "out", "--input", tmp_path / "x.npy")
    assert judged["python/tensorflow"]["dense"] in FLOAT32_OK
    assert judged["node/cpu"]["dense"] in FLOAT32_OK


@pytest.mark.parametrize("code, fragments", [
    ("x = keras.Input((8, 8, 4)); model = keras.Model(x, keras.layers.Conv2D(4, 3, groups=2, name='grouped')(x))",
     ["layer 'grouped' (Conv2D)", "groups=2"]),
    ("x = keras.Input((8, 3)); model = keras.Model(x, keras.layers.Conv1D(2, 3, padding='causal', name='c')(x))",
     ["layer 'c' (Conv1D)", "padding='causal'"]),
    ("x = keras.Input((4,)); model = keras.Model(x, keras.layers.ReLU(negative_slope=0.1, name='r')(x))",
     ["layer 'r' (ReLU)", "ignores negative_slope"]),
    ("x = keras.Input((4,)); model = keras.Model(x, keras.layers.Dense(2, activation='exponential', name='e')(x))",
     ["layer 'e' (Dense)", "activation='exponential' has no tfjs-layers counterpart", "--as graph"]),
    ("x = keras.Input((4,)); model = keras.Model(x, x)", ["no layers besides its inputs"]),
    # the head of the standard MobileNet: tfjs-layers ignores keepdims (issue 17)
    ("model = keras.applications.MobileNet(weights=None, input_shape=(32, 32, 3), alpha=0.25)",
     ["(GlobalAveragePooling2D): keepdims=True, which tfjs-layers 4.22 ignores", "--as graph runs it"]),
    ("x = keras.Input((8, 8, 3)); model = keras.Model(x, keras.layers.Resizing(4, 4, name='rs')(x))",
     ["layer 'rs' (Resizing)", "without the batch dimension", "--as graph runs it"]),
])
def test_what_tfjs_would_compute_differently_is_refused_by_name(tmp_path, code, fragments):
    model = build_with_tf_keras(tmp_path, code, "model.h5")
    assert_one_line_error(run_script("create_keras_model.py", "--model", model, "--out-dir", tmp_path / "out"),
                          *fragments)


@pytest.mark.parametrize("write, fragments", [
    (lambda path: np.save(path.with_suffix(".npy"), np.array([[1, 2, 99, 3, 4, 5, 6, 7, 8, 9, 10, 11]], np.int32)),
     ["input 'tokens' holds token id 99", "vocabulary (0 to 49)"]),
    (lambda path: path.with_suffix(".npy").write_bytes(b"PK\x03\x04 not a zip"), ["not a .npy or .npz file"]),
    (lambda path: np.savez(path.with_suffix(".npz"), tokens=np.array([None] * 12, dtype=object)[None]),
     ["not a .npy or .npz file of plain arrays"]),
])
def test_token_ids_and_input_files_are_checked(zoo_files, tmp_path, write, fragments):
    write(tmp_path / "input")
    given = next(tmp_path.glob("input.*"))
    done = run_script("create_keras_model.py", "--model", zoo_files["text"], "--input", given,
                      "--out-dir", tmp_path / "out")
    assert_one_line_error(done, *fragments)
