"""The models people ship (issue 29): model.json files as older tfjs converters wrote them,
through the real steps on every Node backend and Chromium's WebGL and WASM. Each fixture
(tests/shipped_zoo.py) stopped in step 1, or gave false mismatches, before the kit read it
as tfjs does."""
import base64
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, check, run_script
from shipped_zoo import INTEGER_SCALE, SHIPPED

pytestmark = pytest.mark.slow

LABELS = {"python/tensorflow", "node/tensorflow", "node/cpu", "node/wasm", "browser/webgl", "browser/wasm"}
FLOAT32_OK = {"same bits", "float32 rounding"}
# name -> create_keras_model.py's arguments besides --model
CREATE = {"legacy_graph": [], "legacy_layers": [], "map_fn": [], "unknown_rank": ["--input-shape", "state=1,3"]}


@pytest.fixture(scope="session")
def shipped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shipped")
    subprocess.run([sys.executable, str(ROOT / "tests" / "shipped_zoo.py"), str(folder)], check=True,
                   capture_output=True)
    return {name: folder / name / "model.json" for name in SHIPPED}


@pytest.fixture(scope="session")
def shipped_runs(shipped, tmp_path_factory):
    """{name: (out dir, step 1's stdout, --full JSON)}: every fixture through the four steps."""
    root = tmp_path_factory.mktemp("shipped_runs")

    def one(name):
        out = root / name
        created = check(run_script("create_keras_model.py", "--model", shipped[name], *CREATE[name], "--out-dir",
                                   out, "--repeat", "1"))
        check(run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "1"))
        check(run_script("run_browser.py", "--out-dir", out, "--backend", "webgl,wasm", "--repeat", "1"))
        check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json"))
        return name, (out, created.stdout, json.loads((out / "full.json").read_text()))
    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, CREATE))


def verdicts(capture):
    return {layer["layer"]: (layer["verdict"], layer.get("reason", "")) for layer in capture["layers"]}


@pytest.mark.parametrize("name", list(CREATE))
def test_every_shipped_model_is_judged_on_every_backend_without_a_false_mismatch(shipped_runs, name):
    out, _, document = shipped_runs[name]
    assert {c["label"] for c in document["captures"]} == LABELS
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    ops = {p["name"]: p["class_name"] for p in plan["points"]}
    for capture in document["captures"]:
        found = verdicts(capture)
        assert set(found) == set(ops), capture["label"]
        # a TensorArray's gather has no error model: the ceiling judges it
        wrong = {k: v for k, v in found.items() if v[0] not in FLOAT32_OK
                 and not (v[0] == "no bound" and ops[k] == "TensorArrayGatherV3")}
        assert not wrong, (capture["label"], wrong)


def test_a_cast_from_int32_and_from_bool_is_captured_as_the_float32_values_it_holds(shipped_runs):
    """tfjs's cpu and WebGL backends hand back an Int32Array (a Uint8Array for bool) as the
    data of a float32 Cast; written as float32 bytes, 9 read as 1.26e-44. Every backend's
    capture of each Cast holds Python's values exactly (a cast of small integers is exact)."""
    from tfjs_parity.capture import Capture
    out, _, _ = shipped_runs["legacy_graph"]
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    casts = [p["name"] for p in plan["points"] if p["class_name"] == "Cast"]
    assert len(casts) == 3, casts  # the uint8 image's, the int32 count's and the bool's
    python = Capture.load(out / "keras_model_python.json")
    files = sorted(out.glob("keras_model_tfjs_*"))
    assert len(files) == 5, files
    for file in files:
        capture = Capture.load(file)
        for name in casts:
            want, got = python.outputs(name)[0], capture.outputs(name)[0]
            assert got.dtype == np.float32 and got.shape == want.shape, (file.name, name)
            assert np.array_equal(got, want), (file.name, name, got.ravel()[:4], want.ravel()[:4])
        assert np.abs(capture.outputs(casts[0])[0]).max() > 1, file.name  # the image, 0..255: not 1e-44


def test_a_uint8_image_input_is_fed_as_tfjs_feeds_it(shipped_runs):
    out, _, _ = shipped_runs["legacy_graph"]
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    image = next(i for i in plan["inputs"] if i["name"] == "image")
    assert image["dtype"] == "int32" and image["declared"] == "uint8"
    values = np.array(json.loads((out / "keras_converted" / "input.json").read_text())["image"]["data"])
    assert values.min() >= 0 and values.max() <= 255 and values.max() > 200  # an image's range, seeded


def test_an_older_converters_fused_conv_without_targs_loads_and_the_plan_says_what_was_filled_in(shipped_runs):
    out, stdout, _ = shipped_runs["legacy_graph"]
    model = json.loads((out / "keras_converted" / "model.json").read_text())
    fused = [n for n in model["modelTopology"]["node"] if n["op"] == "_FusedConv2D"]
    assert fused and not any("TArgs" in n["attr"] for n in fused)  # tfjs runs the file as it was given
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    changes = plan["source"]["normalized"]["changes"]
    assert [(c["op"], c["attr"], c["nodes"]) for c in changes] == [("_FusedConv2D", "TArgs", 1)]
    assert "TArgs of 1 _FusedConv2D node(s) derived" in stdout


def test_integer_min_and_scale_of_a_uint8_weight_decode_as_tfjs_decodes_them(shipped_runs):
    from tfjs_parity.capture import Capture
    out, _, document = shipped_runs["legacy_graph"]
    python = Capture.load(out / "keras_model_python.json")
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    held = [w for p in plan["points"] if p["weights"] for w in python.weights(p["name"])]
    assert any(w.shape == INTEGER_SCALE.shape and np.array_equal(w, INTEGER_SCALE) for w in held)
    quantized = document["quantization"]["weights"]
    assert [(w["dtype"], w["step"], w["within"]) for w in quantized] == [("uint8", 1.0, True)]


def test_a_layers_model_json_without_a_format_is_told_by_its_content(shipped_runs):
    out, stdout, document = shipped_runs["legacy_layers"]
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    assert plan["kind"] == "layers" and [p["name"] for p in plan["points"]] == ["hidden", "head"]
    assert "4 weights quantized (given quantized)" in stdout


def test_a_map_fn_loops_tensor_array_keeps_its_float32_flow_in_the_float64_rewrite(shipped_runs):
    out, _, document = shipped_runs["map_fn"]
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    ops = [p["class_name"] for p in plan["points"]]
    assert ops == ["TensorArrayGatherV3", "MatMul"]  # the flows (TensorArrayV3:1, the scatter's) carry no value
    exact = json.loads((out / "keras_model_float64.json").read_text())
    assert exact["metadata"]["runtime"] == "reference" and "MatMul_output" in exact


def test_an_input_of_unknown_rank_takes_its_shape_from_input_shape_or_input(shipped, shipped_runs, tmp_path):
    out, _, _ = shipped_runs["unknown_rank"]
    plan = json.loads((out / "keras_converted" / "probe_plan.json").read_text())
    assert {i["name"]: i["shape"] for i in plan["inputs"]} == {"x": [None, 4], "state": [1, 3]}
    done = run_script("create_keras_model.py", "--model", shipped["unknown_rank"], "--out-dir", tmp_path / "a")
    assert_one_line_error(done, "input 'state'", "--input-shape state=")
    arrays = tmp_path / "in.npz"
    np.savez(arrays, x=np.ones((2, 4), np.float32), state=np.full((2, 2, 2), 0.25, np.float32))
    check(run_script("create_keras_model.py", "--model", shipped["unknown_rank"], "--input", arrays, "--out-dir",
                     tmp_path / "b", "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", tmp_path / "b", "--repeat", "1"))
    done = check(run_script("compare_outputs.py", "--out-dir", tmp_path / "b", "--full"))
    assert "node/tensorflow" in done.stdout and "MISMATCH" not in done.stdout.upper().replace("MISMATCHES", "")
    done = run_script("create_keras_model.py", "--model", shipped["unknown_rank"], "--input-shape", "nope=1",
                      "--out-dir", tmp_path / "c")
    assert_one_line_error(done, "--input-shape nope=", "no input of that name", "x", "state")


def test_an_error_in_a_given_model_json_names_the_users_path_not_the_sandboxs(shipped, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shipped["legacy_graph"].parent, broken)
    shard = broken / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes()[:-8])  # the last weight's bytes cut short
    done = run_script("create_keras_model.py", "--model", broken / "model.json", "--out-dir", tmp_path / "out")
    assert_one_line_error(done, f"--model {broken / 'model.json'}")
    assert ".sandbox" not in done.stderr


# --- the weight decoder, against tfjs's own ---------------------------------------------------

DECODE_JS = """
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const fs = require('fs');
const [manifestFile, dataFile] = process.argv.slice(2);
const specs = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
const data = fs.readFileSync(dataFile);
const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
const out = {};
for (const [name, tensor] of Object.entries(tf.io.decodeWeights(buffer, specs))) {
  const values = tensor.dataSync();
  const typed = tensor.dtype === 'float32' ? Float32Array.from(values) : Int32Array.from(values);
  out[name] = [tensor.dtype, Buffer.from(typed.buffer).toString('base64')];
}
console.log(JSON.stringify(out));
"""


def test_the_kits_weight_decoder_gives_tfjs_decoders_bits_for_every_encoding(tmp_path):
    """Every encoding a converter has written, in one group: float32, int32 and bool as they
    are, uint8 with integer min and scale, uint8 and uint16 with float ones (on values whose
    float64 product rounds to float32 in both directions), float16, and an int32 weight held
    as uint8 (Math.round: half up)."""
    from tfjs_parity.quantization import decoded_weights
    r = np.random.default_rng(3)
    specs, data = [], b""

    def add(name, dtype, codes, quantization=None):
        nonlocal data
        spec = {"name": name, "shape": list(codes.shape), "dtype": dtype}
        if quantization:
            spec["quantization"] = quantization
        specs.append(spec)
        data += codes.tobytes()
    add("f32", "float32", r.standard_normal((3, 5)).astype("<f4"))
    add("i32", "int32", r.integers(-2 ** 31, 2 ** 31, (7,)).astype("<i4"))
    add("flag", "bool", r.integers(0, 2, (5,)).astype("u1"))
    add("u8_int", "float32", r.integers(0, 256, (4, 4)).astype("u1"), {"dtype": "uint8", "min": -1, "scale": 1})
    add("u8", "float32", r.integers(0, 256, (64,)).astype("u1"),
        {"dtype": "uint8", "min": -0.7310585975646973, "scale": 0.005733792483806610})
    add("u16", "float32", r.integers(0, 2 ** 16, (64,)).astype("<u2"),
        {"dtype": "uint16", "min": -3.1, "scale": 9.46e-05})
    add("f16", "float32", r.standard_normal((9,)).astype("<f2"), {"dtype": "float16"})
    add("i32_u8", "int32", r.integers(0, 256, (16,)).astype("u1"), {"dtype": "uint8", "min": -10, "scale": 0.5})
    (tmp_path / "specs.json").write_text(json.dumps(specs))
    (tmp_path / "w.bin").write_bytes(data)
    (tmp_path / "decode.js").write_text(DECODE_JS)
    done = subprocess.run(["node", str(tmp_path / "decode.js"), str(tmp_path / "specs.json"), str(tmp_path / "w.bin")],
                          cwd=ROOT, capture_output=True, text=True, env={"NODE_PATH": str(ROOT / "node_modules"),
                                                                          "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    tfjs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = {entry["name"]: entry["data"] for entry in decoded_weights(tmp_path, [{"paths": ["w.bin"],
                                                                                 "weights": specs}])[0]}
    assert set(ours) == set(tfjs)
    for name, (dtype, encoded) in tfjs.items():
        mine = ours[name].astype(np.int32) if ours[name].dtype == bool else ours[name]
        assert mine.dtype == (np.float32 if dtype == "float32" else np.int32), name
        assert mine.tobytes() == base64.b64decode(encoded), name


# --- one backend's failure is that backend's ------------------------------------------------

def test_backends_that_fail_mid_run_are_named_with_their_node_and_the_others_are_saved(shipped, tmp_path):
    """tfjs 4.22's Cumsum along axis -1: the cpu backend gives an output of no shape, wasm
    traps ('memory access out of bounds', which names no node: a fresh run finds it), WebGL's
    shader does not compile; tfjs-node's tensorflow backend is right. Step 1 says so before
    anything runs; each failing backend is its own line naming the node; the others are saved,
    nothing half-written stays, and the status says some failed (3) or all did (2)."""
    out = tmp_path / "cumsum"
    created = check(run_script("create_keras_model.py", "--model", shipped["cumsum"], "--out-dir", out,
                               "--repeat", "1"))
    node_name = "'StatefulPartitionedCall/Cumsum' (Cumsum)"
    assert f"foreseen: tfjs's cpu, wasm, webgl backends will fail at node {node_name}" in created.stdout
    done = run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "1")
    assert done.returncode == 3, done
    lines = done.stderr.strip().splitlines()
    assert [line.split(": failed at node ")[0] for line in lines] == ["error: node/cpu", "error: node/wasm"], lines
    assert all("StatefulPartitionedCall/Cumsum (Cumsum): " in line for line in lines), lines
    assert "memory access out of bounds" in lines[1] or "values for an output" in lines[1], lines
    assert "node/tensorflow" in done.stdout and (out / "keras_model_tfjs_node.json").is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    done = run_script("run_browser.py", "--out-dir", out, "--backend", "webgl,wasm", "--repeat", "1")
    assert done.returncode == 2, done  # none saved
    lines = done.stderr.strip().splitlines()
    assert [line.split(": failed at node ")[0] for line in lines] == ["error: browser/webgl", "error: browser/wasm"]
    assert all("StatefulPartitionedCall/Cumsum (Cumsum): " in line for line in lines), lines
    done = check(run_script("compare_outputs.py", "--out-dir", out, "--full"))
    assert "node/tensorflow" in done.stdout


def test_a_fused_conv_with_prelu_written_without_targs_is_judged(tmp_path):
    """tfjs's converter fuses conv + bias + PReLU into one _FusedConv2D (num_args 2); older
    converters wrote it without TArgs (four shipped face models). TensorFlow has no fused PReLU:
    the kit keeps its conv + bias (now one extra input: TArgs [T]) and adds the PReLU."""
    subprocess.run([sys.executable, str(ROOT / "tests" / "graph_zoo.py"), str(tmp_path), "fused_cnn"], check=True,
                   capture_output=True)
    check(run_script("create_keras_model.py", "--model", tmp_path / "fused_cnn.h5", "--as", "graph", "--out-dir",
                     tmp_path / "new", "--repeat", "1"))
    legacy = tmp_path / "legacy"
    shutil.copytree(tmp_path / "new" / "keras_converted", legacy)
    document = json.loads((legacy / "model.json").read_text())
    fused = [n for n in document["modelTopology"]["node"] if n["op"] == "_FusedConv2D"
             and b"Prelu" in b"".join(base64.b64decode(s) for s in n["attr"]["fused_ops"]["list"]["s"])]
    assert fused, "the converter fused no PReLU"
    for node in document["modelTopology"]["node"]:
        node["attr"].pop("TArgs", None)
    (legacy / "model.json").write_text(json.dumps(document))
    document, plan = judged_on_node(legacy / "model.json", tmp_path / "out")
    assert any(c["attr"] == "TArgs" for c in plan["source"]["normalized"]["changes"])  # what step 1 said
    for capture in document["captures"]:
        assert {layer["verdict"] for layer in capture["layers"]} <= FLOAT32_OK, capture["label"]


def judged_on_node(model, out, *create):
    """Step 1 on `model` (with `create`'s arguments), Node's tensorflow and cpu backends and
    compare --full: (the --full JSON, the probe plan)."""
    check(run_script("create_keras_model.py", "--model", model, *create, "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "tensorflow,cpu", "--repeat", "1"))
    check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json"))
    return (json.loads((out / "full.json").read_text()),
            json.loads((out / "keras_converted" / "probe_plan.json").read_text()))


def test_an_op_without_a_float64_kernel_is_kept_float32_in_the_exact_graph(shipped, tmp_path):
    """TensorFlow's NonMaxSuppression takes half or float only: the float64 graph (four shipped
    detectors stopped there) keeps it in float32 between casts; what it selects is not judged,
    the gather after it is, against its bound, from the runtime's own values."""
    document, plan = judged_on_node(shipped["nms"], tmp_path / "nms")
    assert {"GatherV2", "MatMul"} <= {p["class_name"] for p in plan["points"]}
    for capture in document["captures"]:
        assert {layer["verdict"] for layer in capture["layers"]} <= FLOAT32_OK, capture["label"]


def test_a_tensor_list_loop_is_judged(shipped, tmp_path):
    """TensorFlow 2's map_fn: TensorListStack reads a variant handle, which the local exact
    answer must not ask the session for as an array (handtrack's SSD stopped in compare)."""
    document, plan = judged_on_node(shipped["tensor_list"], tmp_path / "tensor_list")
    ops = {p["name"]: p["class_name"] for p in plan["points"]}
    assert "TensorListStack" in ops.values() and "MatMul" in ops.values()
    for capture in document["captures"]:
        for layer in capture["layers"]:  # the stack has no error model: the ceiling judges it
            assert layer["verdict"] in FLOAT32_OK or (layer["verdict"] == "no bound"
                                                      and ops[layer["layer"]] == "TensorListStack"), layer


def test_importing_the_builder_changes_no_environment():
    """pytest imports shipped_zoo for its names: an environment it set (oneDNN off) reached every
    later step and changed TF Python's float32 bits (the study's table no longer matched)."""
    import importlib
    import os
    import shipped_zoo
    before = dict(os.environ)
    importlib.reload(shipped_zoo)
    assert dict(os.environ) == before


def test_a_float_to_bool_cast_is_foreseen_on_wasm_and_judged_a_mismatch_there_only(shipped, tmp_path):
    """handtrack's SSD masks its scores with Select(Cast(area, bool), scores, -1); tfjs 4.22's
    wasm casts float to bool by truncation (tests/repro/wasm_cast_float_to_bool.js), so every
    area below 1 reads false. Step 1 names the Cast for wasm before anything runs; the node
    that reads it is a mismatch on Node's and the browser's wasm, rounding everywhere else."""
    out = tmp_path / "cast_bool"
    created = check(run_script("create_keras_model.py", "--model", shipped["cast_bool"], "--out-dir", out,
                               "--repeat", "1"))
    assert ("foreseen: tfjs's wasm backend will compute wrongly node 'StatefulPartitionedCall/Cast' (Cast): "
            "a float-to-bool Cast") in created.stdout, created.stdout
    check(run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "1"))
    check(run_script("run_browser.py", "--out-dir", out, "--backend", "webgl,wasm", "--repeat", "1"))
    check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json"))
    document = json.loads((out / "full.json").read_text())
    assert {c["label"] for c in document["captures"]} == LABELS
    for capture in document["captures"]:
        found = verdicts(capture)
        if capture["label"].endswith("/wasm"):
            assert found["StatefulPartitionedCall/SelectV2"][0] == "mismatch", (capture["label"], found)
            assert "is -1, exact " in found["StatefulPartitionedCall/SelectV2"][1]
            # the nodes before it, and after it from the runtime's own inputs, are rounding
            assert {found[name][0] for name in found if not name.endswith("/SelectV2")} <= FLOAT32_OK, found
        else:
            assert {verdict for verdict, _ in found.values()} <= FLOAT32_OK, (capture["label"], found)
    # --explain: the SelectV2's reproducer holds the Cast it reads (no point holds a bool), and reproduces alone
    explained = check(run_script("compare_outputs.py", "--out-dir", out, "--explain", "--json", out / "explained.json"))
    repro = {e["capture"]: e["repro"] for e in json.loads((out / "explained.json").read_text())["explanations"]}
    assert repro["node/wasm"]["isolated"]["wrong"] is True and repro["node/wasm"]["healthy"]["wrong"] is False
    assert repro["browser/wasm"]["isolated"]["wrong"] is True
    model = json.loads((Path(repro["node/wasm"]["folder"]) / "model.json").read_text())
    assert sorted(node["op"] for node in model["modelTopology"]["node"] if node["op"] not in ("Const", "Placeholder")) \
        == ["Cast", "SelectV2"]
    assert "the graph holds 2 nodes (StatefulPartitionedCall/SelectV2 (SelectV2), StatefulPartitionedCall/Cast " \
           "(Cast))" in explained.stdout


def test_a_failure_at_a_node_the_plan_does_not_capture_names_that_node(shipped, tmp_path):
    """MediaPipe's attention face mesh makes gather indices with an int32 MatMul, which tfjs
    4.22's wasm refuses; only float32 nodes are captured, so the first point that fails is the
    float Gather after it. Step 1 foresees the MatMul for wasm, and the run names the MatMul
    (its uncaptured producers executed alone, the one failing with the same message), on
    Node's wasm and the browser's; the other backends are saved."""
    out = tmp_path / "int_matmul"
    created = check(run_script("create_keras_model.py", "--model", shipped["int_matmul"], "--out-dir", out,
                               "--repeat", "1"))
    assert "foreseen: tfjs's wasm backend will fail at node 'PartitionedCall/MatMul' (MatMul): an int32 MatMul" \
        in created.stdout, created.stdout
    for script, backends, label in (("run_node.py", "all", "node/wasm"), ("run_browser.py", "webgl,wasm", "browser/wasm")):
        done = run_script(script, "--out-dir", out, "--backend", backends, "--repeat", "1")
        assert done.returncode == 3, done
        assert done.stderr.strip().splitlines() == [
            f"error: {label}: failed at node PartitionedCall/MatMul (MatMul): BatchMatMul for non non-float32 tensors "
            "not yet supported."], done.stderr
    done = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json"))
    labels = {c["label"] for c in json.loads((out / "full.json").read_text())["captures"]}
    assert labels == LABELS - {"node/wasm", "browser/wasm"}
