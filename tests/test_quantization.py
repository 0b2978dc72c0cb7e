"""Quantized weights (--quantize): zoo models converted with each mode, run for real in TF
Python, every Node backend and browser WebGL; every weight judged against its original, every
backend against the quantized model's exact answer, and the cost checked by numpy here."""
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import assert_one_line_error, check, copy_study, run_script
from tfjs_parity.capture import Capture
from tfjs_parity.paths import find_capture
from tfjs_parity.plan import PLAN_FILE, Plan

pytestmark = pytest.mark.slow

FLOAT32_OK = {"same bits", "float32 rounding"}
# (zoo model, mode, --as, browser too): each mode on the CNN with BatchNorm, the text model and
# MobileNetV2 between them, a graph model among them
RUNS = {
    "cnn-uint8": ("cnn", "uint8", "layers", True),
    "cnn-uint16": ("cnn", "uint16", "layers", False),
    "cnn-float16": ("cnn", "float16", "layers", False),
    "text-float16": ("text", "float16", "layers", True),
    "text-uint8": ("text", "uint8", "layers", False),
    "mobilenet-uint8": ("mobilenet", "uint8", "layers", False),
    "mobilenet-graph-uint16": ("mobilenet", "uint16", "graph", False),
}


def pipeline(model_file, out, mode, kind, browser):
    check(run_script("create_keras_model.py", "--model", model_file, "--as", kind, "--quantize", mode,
                     "--input-count", "4", "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "1"))
    if browser:
        check(run_script("run_browser.py", "--out-dir", out, "--repeat", "1"))
    done = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json",
                            "--html", out / "report.html"))
    return done.stdout, json.loads((out / "full.json").read_text())


@pytest.fixture(scope="session")
def quantized_runs(zoo_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized")

    def one(name):
        model, mode, kind, browser = RUNS[name]
        return name, (root / name, *pipeline(zoo_files[model], root / name, mode, kind, browser))
    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, RUNS))


@pytest.mark.parametrize("name", list(RUNS))
def test_every_weight_is_quantized_and_every_backend_rounds_the_quantized_model(quantized_runs, name):
    out, stdout, document = quantized_runs[name]
    plan = Plan.load(out / "keras_converted" / PLAN_FILE)
    model_json = json.loads((out / "keras_converted" / "model.json").read_text())
    manifest = [w for group in model_json["weightsManifest"] for w in group["weights"]]
    quantized = [w for w in manifest if "quantization" in w]
    assert quantized and all(w["quantization"]["dtype"] == RUNS[name][1] for w in quantized)
    assert set(plan.quantization["weights"]) == {w["name"] for w in quantized}
    rows = document["quantization"]["weights"]
    assert {r["weight"] for r in rows} == set(plan.quantization["weights"])
    # half a step, plus the float32 rounding of k * scale + min: at most 2**-24 of the range (k_max steps)
    k_max = {"uint8": 255, "uint16": 65535, "float16": 0}[RUNS[name][1]]
    assert all(r["within"] and r["largest_error_steps"] <= 0.5 + 2.0 ** -24 * k_max + 1e-9 for r in rows), \
        [r for r in rows if not r["within"] or r["largest_error_steps"] > 0.5 + 2.0 ** -24 * k_max]
    for capture in document["captures"]:
        for layer in capture["layers"]:
            assert layer["verdict"] in FLOAT32_OK, (capture["label"], layer["layer"], layer["reason"])
            assert layer["weights"] in ("", "quantized"), (capture["label"], layer)
        assert any(layer["weights"] == "quantized" for layer in capture["layers"])
    assert "quantization (--quantize" in stdout and "MISMATCH" not in stdout
    assert "quantization's cost" in (out / "report.html").read_text()


@pytest.mark.parametrize("name", ["cnn-uint8", "text-float16", "mobilenet-graph-uint16"])
def test_the_cost_figures_are_numpys_on_the_two_exact_answers(quantized_runs, name):
    out, _, document = quantized_runs[name]
    plan = Plan.load(out / "keras_converted" / PLAN_FILE)
    exact = Capture.load(find_capture(out, "keras_model_float64.json"))  # a big one is safetensors
    original = Capture.load(find_capture(out, "keras_model_unquantized_float64.json"))
    cost = document["quantization"]["cost"]
    by_point = {p["point"]: p["relative"] for p in cost["points"]}
    assert list(by_point) == [p.name for p in plan.points]
    for point in plan.points:
        q = np.concatenate([np.ravel(a) for a in exact.outputs(point.name)]).astype(np.float64)
        u = np.concatenate([np.ravel(a) for a in original.outputs(point.name)]).astype(np.float64)
        expected = np.max(np.abs(q - u)) / np.max(np.abs(u)) if np.max(np.abs(u)) > 0 else 0.0
        assert by_point[point.name] == pytest.approx(expected, rel=1e-9, abs=1e-300), point.name
    assert cost["outputs"]
    for out_figures, entry in zip(cost["outputs"], plan.quantization["outputs"]):
        q = np.asarray(exact.outputs(entry["point"])[entry["index"]], np.float64)
        u = np.asarray(original.outputs(entry["point"])[entry["index"]], np.float64)
        relative = np.abs(q - u) / np.max(np.abs(u))
        assert out_figures["max_relative"] == pytest.approx(relative.max(), rel=1e-9)
        assert out_figures["mean_relative"] == pytest.approx(relative.mean(), rel=1e-9)
        assert q.shape[0] == 4  # --input-count 4
        if q.shape[-1] >= 2:
            assert out_figures["top1_same"] == int(np.sum(q.argmax(-1) == u.argmax(-1)))
            assert out_figures["top1_of"] == q.shape[0] * int(np.prod(q.shape[1:-1]))
    # quantization moves the model, far more than float32 rounding does
    assert max(by_point.values()) > 1e-5


def test_a_weight_planted_beyond_half_a_step_is_a_mismatch_there(quantized_runs, tmp_path):
    source, _, _ = quantized_runs["cnn-uint8"]
    out = copy_study(source, tmp_path / "planted", captures=("keras_model_python.json", "keras_model_float64.json",
                                                              "keras_model_unquantized_float64.json"))
    model_dir = out / "keras_converted"
    document = json.loads((model_dir / "model.json").read_text())
    group = document["weightsManifest"][0]
    assert len(group["paths"]) == 1
    shard = model_dir / group["paths"][0]
    data = bytearray(shard.read_bytes())
    offset = 0
    for weight in group["weights"]:
        size = int(np.prod(weight["shape"])) * {"uint8": 1, "uint16": 2, "float16": 2}.get(
            weight.get("quantization", {}).get("dtype"), 4)
        if weight["name"].endswith("kernel") and weight.get("quantization", {}).get("dtype") == "uint8":
            target = weight["name"]
            data[offset] = (data[offset] + 40) % 256  # 40 steps of its grid away
            break
        offset += size
    shard.write_bytes(bytes(data))
    check(run_script("run_node.py", "--out-dir", out, "--repeat", "1"))
    check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json"))
    document = json.loads((out / "full.json").read_text())
    plan = Plan.load(model_dir / PLAN_FILE)
    point = next(name for name, names in plan.quantization["points"].items() if target in names)
    node = next(c for c in document["captures"] if c["label"] == "node/tensorflow")
    layer = next(entry for entry in node["layers"] if entry["layer"] == point)
    assert layer["verdict"] == "mismatch" and layer["weights"] == "mismatch", layer
    assert "steps of its uint8 grid" in layer["reason"]
    python = next(c for c in document["captures"] if c["label"] == "python/tensorflow")
    assert all(entry["verdict"] in FLOAT32_OK for entry in python["layers"])  # Python read the weights before
    assert not next(r for r in document["quantization"]["weights"] if r["weight"] == target)["within"]


def test_a_quantized_model_json_is_read_as_such(quantized_runs, tmp_path):
    source, _, _ = quantized_runs["text-uint8"]
    out = tmp_path / "bare"
    check(run_script("create_keras_model.py", "--model", source / "keras_converted" / "model.json", "--out-dir", out,
                     "--repeat", "1"))
    plan = Plan.load(out / "keras_converted" / PLAN_FILE)
    assert plan.quantization["given"] == "given quantized" and not plan.quantization["original"]
    ours = json.loads((source / "keras_converted" / "model.json").read_text())["weightsManifest"]
    theirs = json.loads((out / "keras_converted" / "model.json").read_text())["weightsManifest"]
    assert ours == theirs  # the user's own quantized weights, byte for byte
    for group in ours:
        for name in group["paths"]:
            assert (out / "keras_converted" / name).read_bytes() == (source / "keras_converted" / name).read_bytes()
    check(run_script("run_node.py", "--out-dir", out, "--repeat", "1"))
    done = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json"))
    assert "no unquantized model to measure its cost against" in done.stdout
    document = json.loads((out / "full.json").read_text())
    for capture in document["captures"]:
        assert all(entry["verdict"] in FLOAT32_OK for entry in capture["layers"]), capture["label"]
    again = run_script("create_keras_model.py", "--model", source / "keras_converted" / "model.json", "--quantize",
                       "uint8", "--out-dir", tmp_path / "again")
    assert_one_line_error(again, "quantized already", "drop --quantize")


def test_a_pattern_matching_no_weight_is_one_line_naming_it(zoo_files, tmp_path):
    done = run_script("create_keras_model.py", "--model", zoo_files["cnn"], "--quantize", "uint8=nothing/*",
                      "--out-dir", tmp_path / "out")
    assert_one_line_error(done, "--quantize uint8=nothing/*", "matches no float32 weight")
    assert not (tmp_path / "out" / "keras_converted").exists()
    bad = run_script("create_keras_model.py", "--model", zoo_files["cnn"], "--quantize", "int4",
                     "--out-dir", tmp_path / "out")
    assert_one_line_error(bad, "--quantize int4", "float16, uint8, uint16")


def test_a_pattern_quantizes_only_the_weights_it_names(zoo_files, tmp_path):
    out = tmp_path / "some"
    check(run_script("create_keras_model.py", "--model", zoo_files["cnn"], "--quantize", "uint8=*/kernel",
                     "--quantize", "float16=conv2d/bias", "--out-dir", out, "--repeat", "1"))
    manifest = json.loads((out / "keras_converted" / "model.json").read_text())["weightsManifest"]
    dtypes = {w["name"]: w.get("quantization", {}).get("dtype") for g in manifest for w in g["weights"]}
    assert dtypes["conv2d/bias"] == "float16" and dtypes["conv2d/kernel"] == "uint8"
    assert dtypes["batch_normalization/gamma"] is None
