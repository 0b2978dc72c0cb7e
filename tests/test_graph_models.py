"""Graph models (issue 16): SavedModels, Keras models converted --as graph (those tfjs-layers
cannot load included), and a bare model.json, through the real steps on every Node backend
and the browser's WebGL and WASM; every node captured and judged against its op's bound."""
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, check, run_script
from graph_zoo import GRAPH_ZOO

pytestmark = pytest.mark.slow

FLOAT32_OK = {"same bits", "float32 rounding"}
PLUMBING = {"Const", "Identity", "Placeholder", "NoOp"}

# name -> (create_keras_model.py arguments, {backend label: the error tfjs gives there})
RUNS = {
    "study": (["--as", "graph", "--depth", "3", "--units", "8"], {}),
    "module": (["--model", "module"], {}),
    "v1": (["--model", "v1"], {}),
    "fused_cnn": (["--model", "fused_cnn", "--as", "graph"], {}),
    # tfjs 4.22's wasm refuses the scalar bias grappler fuses into the convolution before the
    # hand-written hard sigmoid (tests/test_tfjs_bugs.py); every other backend runs it
    "op_lambda": (["--model", "op_lambda", "--as", "graph"],
                  {"node/wasm": "FusedConv2D only supports rank-1 bias but got rank 0",
                   "browser/wasm": "FusedConv2D only supports rank-1 bias but got rank 0"}),
    # tfjs 4.22's wasm backend has no Einsum kernel
    "text": (["--model", "text"], {"node/wasm": "Kernel 'Einsum' not registered for backend 'wasm'",
                                   "browser/wasm": "Kernel 'Einsum' not registered for backend 'wasm'"}),
    "mobilenet_v3": (["--model", "mobilenet_v3", "--as", "graph"], {}),
    "efficientnet": (["--model", "efficientnet", "--as", "graph"], {}),
    # tf.cond and tf.while_loop: tfjs runs them with executeAsync; the Merge and the Exit are
    # captured, what is inside the branch or the loop is not
    "control_flow": (["--model", "control_flow"], {}),
}
# ops judged by the ceiling alone (no error model): a Merge or an Exit is the branch's or the
# loop's whole computation, recomputed in float64 from the runtime's inputs to it
NO_BOUND_OPS = {"Merge", "Exit"}


@pytest.fixture(scope="session")
def graph_zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graph_zoo")
    subprocess.run([sys.executable, str(ROOT / "tests" / "graph_zoo.py"), str(folder)], check=True,
                   capture_output=True)
    return {name: folder / file for name, file in GRAPH_ZOO.items()}


def create_args(name, graph_zoo):
    return [str(graph_zoo[a]) if a in graph_zoo else a for a in RUNS[name][0]]


@pytest.fixture(scope="session")
def graph_runs(graph_zoo, tmp_path_factory):
    """{name: (out dir, {step: CompletedProcess}, --full JSON)}, two at a time."""
    root = tmp_path_factory.mktemp("graph_runs")

    def one(name):
        out = root / name
        steps = {"create": check(run_script("create_keras_model.py", *create_args(name, graph_zoo), "--out-dir", out,
                                            "--repeat", "1"))}
        steps["node"] = run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "1")
        steps["browser"] = run_script("run_browser.py", "--out-dir", out, "--backend", "webgl,wasm", "--repeat", "1")
        steps["compare"] = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json",
                                            out / "full.json"))
        return name, (out, steps, json.loads((out / "full.json").read_text()))
    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, RUNS))


def verdicts(entry):
    return {layer["layer"]: layer["verdict"] for layer in entry["layers"]}


def graph_nodes(model_json):
    """Every node of a converted model.json that computes something (not plumbing)."""
    topology = json.loads(model_json.read_text())["modelTopology"]
    return {node["name"] for node in topology["node"] if node["op"] not in PLUMBING}


@pytest.mark.parametrize("name", list(RUNS))
def test_every_node_of_every_graph_is_captured_and_within_its_bound_on_every_backend(graph_runs, name):
    out, steps, document = graph_runs[name]
    failing = RUNS[name][1]
    labels = {c["label"] for c in document["captures"]}
    expected = {"python/tensorflow", "node/tensorflow", "node/cpu", "node/wasm", "browser/webgl", "browser/wasm"}
    assert labels == expected - set(failing), (labels, steps["node"].stderr, steps["browser"].stderr)
    for label, message in failing.items():
        step = steps[label.split("/")[0]]
        assert step.returncode != 0 and f"error: {label}: failed at node " in step.stderr \
            and message in step.stderr, step.stderr
        if "rank-1 bias" in message:  # what step 1 can foresee, it says before anything runs
            assert "foreseen: tfjs's wasm backend will fail at node " in steps["create"].stdout
            assert message in steps["create"].stdout
    for step in ("node", "browser"):
        if not any(label.startswith(step) for label in failing):
            check(steps[step])
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    assert plan["kind"] == "graph"
    captured = {p["name"] for p in plan["points"]}
    # every computing node is a point, except those producing no float tensor (shapes, indices)
    float_free = graph_nodes(out / "keras_converted" / "model.json") - captured
    python = next(c for c in document["captures"] if c["label"] == "python/tensorflow")
    assert set(verdicts(python)) == captured
    for node in float_free:
        op = next(n["op"] for n in json.loads((out / "keras_converted" / "model.json").read_text())
                  ["modelTopology"]["node"] if n["name"] == node)
        assert op in {"Shape", "StridedSlice", "Pack", "Cast", "Prod", "ArgMax", "ConcatV2", "Range", "Fill"} or \
            name == "control_flow", (node, op)
    ops = {p["name"]: p["class_name"] for p in plan["points"]}
    for capture in document["captures"]:
        found = verdicts(capture)
        assert set(found) == captured, capture["label"]
        wrong = {layer: v for layer, v in found.items()
                 if v not in FLOAT32_OK and not (v == "no bound" and ops[layer] in NO_BOUND_OPS)}
        assert not wrong, (capture["label"], {k: next(l["reason"] for l in capture["layers"] if l["layer"] == k)
                                               for k in list(wrong)[:5]})


def test_python_runs_the_converted_graph_with_the_fused_ops_tfjs_runs(graph_runs):
    out, _, document = graph_runs["fused_cnn"]
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    ops = {p["class_name"] for p in plan["points"]}
    assert {"_FusedConv2D", "FusedDepthwiseConv2dNative", "MaxPool", "AvgPool", "Mean", "_FusedMatMul",
            "Softmax"} <= ops, ops
    # the PReLU fused into the pointwise convolution by the converter (a tfjs-only fusion)
    assert any(p["kwargs"].get("fused_ops") == ["BiasAdd", "Prelu"] for p in plan["points"]), plan["points"]
    node = next(c for c in document["captures"] if c["label"] == "node/tensorflow")
    assert set(verdicts(node).values()) <= FLOAT32_OK


def test_a_tfoplambda_model_names_the_graph_way_and_runs_as_one(graph_zoo, graph_runs, tmp_path):
    done = run_script("create_keras_model.py", "--model", graph_zoo["op_lambda"], "--out-dir", tmp_path)
    assert_one_line_error(done, "(TFOpLambda", "cannot load in tfjs-layers", "--as graph")
    out, _, document = graph_runs["op_lambda"]
    ops = {layer["layer"].rsplit("/", 1)[-1] for layer in document["captures"][0]["layers"]}
    assert {"Mul", "AddV2", "Tanh"} <= ops, ops
    # the convolution with the scalar bias grappler fused: TensorFlow's kernel refuses it, so
    # Python runs it unfused (conv, + 3.0, relu6), and the point is still judged
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    model = json.loads((out / "keras_converted" / "model.json").read_text())
    shapes = {w["name"]: w["shape"] for group in model["weightsManifest"] for w in group["weights"]}
    scalar = [p for p in plan["points"] if p["class_name"] == "_FusedConv2D" and
              any(shapes.get(c) == [] for c in p["constants"])]
    assert scalar, plan["points"]
    node = next(c for c in document["captures"] if c["label"] == "node/tensorflow")
    assert verdicts(node)[scalar[0]["name"]] in FLOAT32_OK


def test_a_signature_is_chosen_by_name(graph_zoo, tmp_path):
    check(run_script("create_keras_model.py", "--model", graph_zoo["module"], "--signature", "mean",
                     "--out-dir", tmp_path))
    plan = json.loads((tmp_path / "keras_converted" / "probe_plan.json").read_text())
    assert {p["class_name"] for p in plan["points"]} >= {"Abs", "Sqrt", "Mean"}
    assert plan["source"]["signature"] == "mean"


def test_an_npz_input_feeds_the_signatures_inputs_by_name(graph_zoo, tmp_path):
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(2, 6)
    np.savez(tmp_path / "input.npz", x=x)
    check(run_script("create_keras_model.py", "--model", graph_zoo["module"], "--input", tmp_path / "input.npz",
                     "--out-dir", tmp_path / "out"))
    from tfjs_parity.capture import Capture
    python = Capture.load(tmp_path / "out" / "keras_model_python.json")
    assert np.array_equal(python.inputs["x"], x)
    assert python.metadata["conversion"]["verdict"] in ("same bits", "within float32 rounding")
    done = run_script("create_keras_model.py", "--model", graph_zoo["module"], "--input", tmp_path / "input.npz",
                      "--signature", "mean", "--input-seed", "3", "--out-dir", tmp_path / "out2")
    check(done)  # the other signature takes the same input


@pytest.mark.parametrize("model, args, fragments", [
    ("module", ["--signature", "nope"], ["no signature 'nope'", "it has mean, serving_default", "--signature"]),
    ("strings", [], ["input 'text' of type string"]),
    ("determinant", [], ["MatrixDeterminant", "no kernel"]),
    ("module", ["--as", "layers"], ["not a Keras model has no layers", "--as graph"]),
    ("fused_cnn", ["--signature", "x"], ["--signature picks a signature of a SavedModel"]),
])
def test_what_cannot_run_is_one_line_before_anything_runs(graph_zoo, tmp_path, model, args, fragments):
    done = run_script("create_keras_model.py", "--model", graph_zoo[model], *args, "--out-dir", tmp_path / "out")
    assert_one_line_error(done, *fragments)
    assert not (tmp_path / "out" / "keras_converted").exists()


def test_a_model_json_that_is_neither_kind_is_one_line(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"format": "onnx", "modelTopology": {"x": 1}}))
    done = run_script("create_keras_model.py", "--model", tmp_path / "model.json", "--out-dir", tmp_path / "out")
    assert_one_line_error(done, "model.json of format 'onnx'", "neither a tfjs graph model nor a layers model")


def test_a_weight_file_outside_the_model_folder_is_refused(graph_runs, tmp_path):
    out, _, _ = graph_runs["fused_cnn"]
    document = json.loads((out / "keras_converted" / "model.json").read_text())
    document["weightsManifest"][0]["paths"] = ["../secret.bin"]
    (tmp_path / "model.json").write_text(json.dumps(document))
    done = run_script("create_keras_model.py", "--model", tmp_path / "model.json", "--out-dir", tmp_path / "out")
    assert_one_line_error(done, "weight file '../secret.bin' is not a file name in its folder")


def test_a_bare_model_json_runs_with_no_source(graph_runs, tmp_path):
    """Only the files a user ships: Python runs that very graph, and the verdicts are those of
    the run that had the source."""
    out, _, converted = graph_runs["fused_cnn"]
    shipped = shipped_files(out / "keras_converted", tmp_path / "shipped")
    run = tmp_path / "run"
    check(run_script("create_keras_model.py", "--model", shipped / "model.json", "--out-dir", run, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", run, "--backend", "cpu", "--repeat", "1"))
    check(run_script("compare_outputs.py", "--out-dir", run, "--full", "--json", run / "full.json"))
    document = json.loads((run / "full.json").read_text())
    source_python = next(c for c in converted["captures"] if c["label"] == "python/tensorflow")
    for capture in document["captures"]:
        assert set(verdicts(capture)) == set(verdicts(source_python))
        assert set(verdicts(capture).values()) <= FLOAT32_OK
    from tfjs_parity.capture import Capture
    same = Capture.load(run / "keras_model_python.json")
    before = Capture.load(out / "keras_model_python.json")
    for key in before.tensors:
        assert all(np.array_equal(a, b) for a, b in zip(before.tensors[key], same.tensors[key])), key


def test_a_fault_in_one_constant_is_a_mismatch_where_it_is_read_and_not_before(graph_runs, tmp_path):
    """The pointwise convolution's kernel, changed in the weight file Node reads: a mismatch
    at the node that reads it; every node before it is as healthy as without the fault."""
    out, _, _ = graph_runs["fused_cnn"]
    run = tmp_path / "run"
    shutil.copytree(out, run, ignore=shutil.ignore_patterns("*tfjs*", "full.json"))
    plan = json.loads((run / "keras_converted" / "probe_plan.json").read_text())
    names = [p["name"] for p in plan["points"]]
    target = next(p for p in plan["points"] if "pointwise" in p["name"] and p["constants"])
    constant = next(c for c in target["constants"] if "Conv2D" in c or "filter" in c.lower() or "kernel" in c.lower())
    corrupt_constant(run / "keras_converted", constant)
    check(run_script("run_node.py", "--out-dir", run, "--backend", "tensorflow", "--repeat", "1"))
    done = run_script("compare_outputs.py", "--out-dir", run, "--full", "--json", run / "full.json")
    document = json.loads((run / "full.json").read_text())
    node = verdicts(next(c for c in document["captures"] if c["label"] == "node/tensorflow"))
    at = names.index(target["name"])
    assert node[target["name"]] == "mismatch", node
    assert all(node[n] in FLOAT32_OK for n in names[:at]), node
    assert f"node/tensorflow: mismatch starts at {target['name']}" in done.stdout, done.stdout


def shipped_files(converted_dir, folder):
    """Only what a user ships of a converted model: its model.json and weight files."""
    folder.mkdir()
    for file in converted_dir.iterdir():
        if file.name == "model.json" or file.suffix == ".bin":
            shutil.copy(file, folder)
    return folder


def corrupt_constant(model_dir, name):
    """Add 1 to the first value of constant `name` in the model's weight files (float32)."""
    document = json.loads((model_dir / "model.json").read_text())
    for group in document["weightsManifest"]:
        offset = 0
        for weight in group["weights"]:
            size = int(np.prod(weight["shape"])) * 4
            if weight["name"] == name:
                shard = model_dir / group["paths"][0]
                data = bytearray(shard.read_bytes())
                value = np.frombuffer(bytes(data[offset:offset + 4]), np.float32)[0] + 1.0
                data[offset:offset + 4] = np.float32(value).tobytes()
                shard.write_bytes(bytes(data))
                return
            offset += size
    raise AssertionError(f"no constant {name}")


def test_a_bare_layers_model_json_runs_as_the_layers_model_it_is(small_study, tmp_path):
    shipped = shipped_files(small_study / "keras_converted", tmp_path / "shipped")
    run = tmp_path / "run"
    check(run_script("create_keras_model.py", "--model", shipped / "model.json", "--out-dir", run, "--repeat", "1"))
    plan = json.loads((run / "keras_converted" / "probe_plan.json").read_text())
    assert plan["kind"] == "layers" and [p["name"] for p in plan["points"]] == ["dense_0", "dense_1", "dense_2"]
    done = run_script("create_keras_model.py", "--model", shipped / "model.json", "--as", "graph", "--out-dir",
                      tmp_path / "graph", "--repeat", "1")
    check(done)  # a layers model.json converts as a graph model too
    assert json.loads((tmp_path / "graph" / "keras_converted" / "probe_plan.json").read_text())["kind"] == "graph"


KERAS3_CNN = """
import sys
import keras
keras.utils.set_random_seed(2)
x = keras.Input((8, 8, 3), name="image")
y = keras.layers.Conv2D(4, 3, activation="hard_silu", name="conv")(x)
y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
y = keras.layers.Dense(3, activation="softmax", name="head")(y)
keras.Model(x, y).save(sys.argv[1])
"""


def test_a_keras3_model_converts_as_a_graph_model(zoo_files, tmp_path):
    """Keras 3's hard_silu has no tfjs-layers counterpart; as a graph it is ops tfjs runs. A
    recurrent layer becomes a while loop, whose body is not captured."""
    model = tmp_path / "cnn.keras"
    subprocess.run([sys.executable, "-c", KERAS3_CNN, str(model)], check=True, capture_output=True)
    out = tmp_path / "out"
    assert_one_line_error(run_script("create_keras_model.py", "--model", model, "--out-dir", out),
                          "hard_silu", "--as graph")
    check(run_script("create_keras_model.py", "--model", model, "--as", "graph", "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "cpu,wasm", "--repeat", "1"))
    check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json"))
    document = json.loads((out / "full.json").read_text())
    python = Capture_of(out)
    assert python.metadata["conversion"]["verdict"] in ("same bits", "within float32 rounding"), python.metadata
    for capture in document["captures"]:
        assert set(verdicts(capture).values()) <= FLOAT32_OK, capture["label"]
    # an LSTM is a while loop in the graph: its body runs many times and is not captured, said so
    check(run_script("create_keras_model.py", "--model", zoo_files["keras3"], "--as", "graph", "--out-dir",
                     tmp_path / "lstm", "--repeat", "1"))
    plan = json.loads((tmp_path / "lstm" / "keras_converted" / "probe_plan.json").read_text())
    assert plan["source"]["control_flow"]["not_captured"] > 0
    assert not any("/while/" in p["name"] and "exit" not in p["name"] for p in plan["points"])


def Capture_of(out):
    from tfjs_parity.capture import Capture
    return Capture.load(out / "keras_model_python.json")


def test_control_flow_runs_with_its_merge_and_exit_captured_and_its_inside_counted(graph_runs):
    out, _, document = graph_runs["control_flow"]
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    ops = {p["class_name"] for p in plan["points"]}
    assert {"Merge", "Exit"} <= ops, ops
    assert plan["source"]["control_flow"]["not_captured"] > 0
    for capture in document["captures"]:  # every tfjs backend ran it (executeAsync) and agrees
        if capture["label"] != "python/tensorflow":
            assert set(verdicts(capture).values()) <= FLOAT32_OK, capture["label"]


def test_plumbing_is_kept_on_request_and_judged_exact(tmp_path):
    out = tmp_path / "out"
    check(run_script("create_keras_model.py", "--as", "graph", "--depth", "2", "--units", "4", "--keep-plumbing",
                     "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "cpu", "--repeat", "1"))
    check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json"))
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    identities = [p["name"] for p in plan["points"] if p["class_name"] == "Identity"]
    assert len(identities) == 2, plan["points"]
    node = verdicts(next(c for c in json.loads((out / "full.json").read_text())["captures"]
                         if c["label"] == "node/cpu"))
    assert all(node[name] in FLOAT32_OK for name in identities)
    assert_one_line_error(run_script("create_keras_model.py", "--keep-plumbing", "--out-dir", tmp_path / "x"),
                          "--keep-plumbing is for graph models")
