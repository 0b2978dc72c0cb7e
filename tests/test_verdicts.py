"""Verdicts, closeness, the gate, JSON and HTML: on real captures, and on real runs of models
with faults injected into their weight files."""
import asyncio
import json

import numpy as np
import pytest

from conftest import BROWSER_FILES, NODE_FILES, check, copy_study, corrupt_weight, run_script
from tfjs_parity.capture import Capture

pytestmark = pytest.mark.slow  # the real steps, as subprocesses: see pytest.ini

FLOAT32_OK = {"same bits", "float32 rounding"}


def judged(out_dir, *extra):
    """Run compare_outputs.py --full --json; return (process, {label: capture entry})."""
    done = run_script("compare_outputs.py", "--out-dir", out_dir, "--full", "--json", out_dir / "full.json", *extra)
    assert done.returncode in (0, 1), done
    document = json.loads((out_dir / "full.json").read_text())
    return done, {c["label"]: c for c in document["captures"]}


def verdicts(entry):
    return {layer["layer"]: layer["verdict"] for layer in entry["layers"]}


def test_every_float32_backend_is_float32_rounding_and_f16_is_reduced_precision(matrix):
    done, captures = judged(matrix)
    assert done.returncode == 0 and "float32 rounding" in done.stdout
    assert set(captures) == {"python/tensorflow", "node/tensorflow", "node/cpu", "node/wasm", "browser/webgl",
                             "browser/wasm", "browser/cpu", "browser/webgpu", "browser/webgl/f16"}
    for label, entry in captures.items():
        if label == "browser/webgl/f16":
            assert set(verdicts(entry).values()) == {"reduced precision"}
            assert entry["precision"] == "float16"
        else:
            assert set(verdicts(entry).values()) <= FLOAT32_OK, (label, verdicts(entry))
            assert all(layer["vs_float64"]["max_rel"] < 1e-5 and layer["bound_ratio"] <= 1 for layer in entry["layers"])
    assert set(verdicts(captures["node/tensorflow"]).values()) == {"same bits"}
    assert set(verdicts(captures["python/tensorflow"]).values()) == {"float32 rounding"}


@pytest.fixture(scope="module")
def study_with_f16(default_study, tmp_path_factory):
    out = copy_study(default_study, tmp_path_factory.mktemp("study_f16"),
                     ("keras_model_python.json", "keras_model_float64.json", NODE_FILES["tensorflow"],
                      BROWSER_FILES["webgl"]))
    check(run_script("run_browser.py", "--out-dir", out, "--precision", "f16", "--repeat", "1"))
    return out


def test_study_model_on_f16_is_reduced_precision_then_overflows_from_dense_7(study_with_f16):
    done, captures = judged(study_with_f16)
    f16 = captures["browser/webgl/f16"]
    layers = {layer["layer"]: layer for layer in f16["layers"]}
    for i in range(7):
        assert layers[f"dense_{i}"]["verdict"] == "reduced precision"
        assert 1e-4 < layers[f"dense_{i}"]["vs_float64"]["max_rel"] < 2e-3  # measured: 2.6e-4 to 8.6e-4
    assert [layers[f"dense_{i}"]["verdict"] for i in (7, 8, 9)] == ["overflow"] * 3
    assert "65504" in layers["dense_7"]["reason"]
    assert "browser/webgl/f16: overflow starts at dense_7" in done.stdout
    assert "browser/webgl/f16 loses the answer from dense_7 on (overflow)" in done.stdout
    for label in ("python/tensorflow", "node/tensorflow", "browser/webgl"):
        assert set(verdicts(captures[label]).values()) <= FLOAT32_OK
    assert "browser/webgl is no further from the exact answer than Python" in done.stdout


# --- injected faults: the model's weight file is corrupted, then run for real in Node --------

def with_one_changed(kernel):
    kernel = kernel.copy()
    kernel[2, 3] += 0.25
    return kernel


def with_nan(bias):
    bias = bias.copy()
    bias[0] = np.nan
    return bias


FAULTS = {"one weight changed": ("dense_1/kernel", with_one_changed),
          "transposed kernel": ("dense_1/kernel", lambda kernel: kernel.T.copy()),
          "a NaN": ("dense_1/bias", with_nan)}


def run_faulty(fault, small_study, out):
    """The small study in `out`, with Node's capture made by running a corrupted model."""
    copy_study(small_study, out, ("keras_model_python.json", "keras_model_float64.json", BROWSER_FILES["webgl"]))
    weight, change = FAULTS[fault]
    corrupt_weight(out / "keras_converted", weight, change)
    check(run_script("run_node.py", "--out-dir", out, "--repeat", "1"))
    return out


@pytest.mark.parametrize("fault", list(FAULTS))
def test_injected_fault_is_a_mismatch_at_the_layer_it_is_in(fault, small_study, tmp_path):
    out = run_faulty(fault, small_study, tmp_path)
    done, captures = judged(out, "--rtol", "1e-5")
    node = verdicts(captures["node/tensorflow"])
    assert node["dense_0"] == "same bits"
    assert node["dense_1"] == "mismatch", (fault, node)
    assert done.returncode == 1
    assert "FAILED: node/tensorflow at dense_1: verdict mismatch" in done.stdout
    assert "node/tensorflow: mismatch starts at dense_1" in done.stdout
    limits_only = run_script("compare_outputs.py", "--out-dir", out, "--rtol", "1e-5", "--allow-mismatch")
    assert limits_only.returncode == 1
    assert "FAILED: node/tensorflow exceeds --rtol 1e-05 at dense_1" in limits_only.stdout
    if fault == "a NaN":  # the next layer inherits the NaN: not a fault of its own, and said so
        assert node["dense_2"] == "float32 rounding"
        dense_2 = next(layer for layer in captures["node/tensorflow"]["layers"] if layer["layer"] == "dense_2")
        assert "NaN/inf inherited from its inputs" in dense_2["reason"]


def test_an_output_shaped_differently_is_a_mismatch_there_and_the_report_goes_on(small_study, tmp_path):
    """Issue 17: a runtime that computes another shape at one layer (as tfjs-layers did for
    keepdims pooling) is a mismatch at that layer with both shapes; the layers after it are
    judged on the exact answer it should have fed them, and the rest of the report is there."""
    study = copy_study(small_study, tmp_path, ("keras_model_python.json", "keras_model_float64.json",
                                               NODE_FILES["tensorflow"], BROWSER_FILES["webgl"]))
    node = Capture.load(study / NODE_FILES["tensorflow"])
    node.tensors["dense_1_output"] = [np.concatenate([a, a[:, :1]], axis=1) for a in node.tensors["dense_1_output"]]
    node.save(study / NODE_FILES["tensorflow"])
    done, captures = judged(study)
    assert "dense_1_output[0]: different values = 9, average difference = nan (shape [1, 8] vs [1, 9])" in done.stdout
    layers = {layer["layer"]: layer for layer in captures["node/tensorflow"]["layers"]}
    assert layers["dense_1"]["verdict"] == "mismatch"
    assert layers["dense_1"]["reason"].startswith("output shape [1, 9] here, the exact answer's [1, 8]")
    assert layers["dense_0"]["verdict"] == "same bits" and layers["dense_2"]["verdict"] == "same bits"
    assert "fed the exact answer of dense_1" in layers["dense_2"]["reason"]
    assert set(verdicts(captures["browser/webgl"]).values()) <= {"same bits", "float32 rounding"}


@pytest.mark.parametrize("fault", ["one weight changed", "transposed kernel"])
def test_a_wrong_output_with_right_weights_is_pinned_to_its_layer(fault, small_study, tmp_path):
    """A runtime that reports the right weights but computes with a wrong one: only the
    output check can see it, and the local float64 reference blames that layer alone."""
    out = run_faulty(fault, small_study, tmp_path / "run")
    study = copy_study(out, tmp_path / "study", ("keras_model_python.json", "keras_model_float64.json",
                                                 BROWSER_FILES["webgl"]))
    python = Capture.load(out / "keras_model_python.json")
    node = Capture.load(out / NODE_FILES["tensorflow"])
    for key in node.tensors:
        if key.endswith("_weights"):
            node.tensors[key] = python.tensors[key]
    node.save(study / NODE_FILES["tensorflow"])
    _, captures = judged(study)
    layers = {layer["layer"]: layer for layer in captures["node/tensorflow"]["layers"]}
    assert layers["dense_1"]["verdict"] == "mismatch" and "output[" in layers["dense_1"]["reason"]
    assert layers["dense_0"]["verdict"] == "same bits"
    assert layers["dense_2"]["verdict"] == "float32 rounding"  # right op on wrong inputs: not its fault


# --- the gate on good captures -------------------------------------------------------------

@pytest.mark.parametrize("limits, code, message", [
    (["--rtol", "1e-5"], 0, "PASSED: every capture within --rtol 1e-05"),
    (["--rtol", "1e-9"], 1, "FAILED: python/tensorflow exceeds --rtol 1e-09 at dense_"),
    (["--atol", "1e-12"], 1, "FAILED: python/tensorflow exceeds --atol 1e-12 at dense_"),
    (["--max-ulp", "0"], 1, "FAILED: python/tensorflow exceeds --max-ulp 0 at dense_"),
    (["--max-ulp", "1e9"], 0, "PASSED"),
])
def test_gate_exit_codes(small_study, tmp_path, limits, code, message):
    study = copy_study(small_study, tmp_path, ("keras_model_python.json", "keras_model_float64.json",
                                               NODE_FILES["tensorflow"], BROWSER_FILES["webgl"]))
    done = run_script("compare_outputs.py", "--out-dir", study, *limits)
    assert done.returncode == code, done
    assert done.stdout.strip().splitlines()[-1].startswith(message)


def test_gate_fails_f16_against_a_float32_tolerance(matrix):
    done = run_script("compare_outputs.py", "--out-dir", matrix, "--rtol", "1e-5")
    assert done.returncode == 1 and "FAILED: browser/webgl/f16 exceeds --rtol 1e-05 at dense_0" in done.stdout


def test_missing_reference_names_the_script_that_makes_it(small_study, tmp_path):
    study = copy_study(small_study, tmp_path, ("keras_model_python.json", NODE_FILES["tensorflow"],
                                               BROWSER_FILES["webgl"]))
    done = run_script("compare_outputs.py", "--out-dir", study, "--full")
    assert done.returncode == 2 and "keras_model_float64.json not found" in done.stderr
    assert "create_keras_model.py" in done.stderr


# --- the HTML report, rendered in the headless browser ---------------------------------------

def test_html_report_renders_self_contained_with_chart_and_verdicts(matrix, tmp_path):
    page = tmp_path / "report.html"
    check(run_script("compare_outputs.py", "--out-dir", matrix, "--html", page))
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    rendered = asyncio.run(_render(page, tmp_path / "report.png"))
    assert rendered["errors"] == []
    assert rendered["polylines"] == 9  # one line per capture: all finite on the small model
    assert "compute in reduced precision" in rendered["banner"]
    assert rendered["cells"] == 9 * 3 and rendered["band"] == 1
    assert (tmp_path / "report.png").stat().st_size > 10_000


async def _render(page_path, screenshot):
    import pyppeteer
    from tfjs_parity.runners.chromium import Chromium, chromium_switches, find_chromium
    with Chromium(find_chromium(), chromium_switches()) as chromium:  # the kit's own launch: no orphans
        browser = await pyppeteer.connect(browserWSEndpoint=chromium.endpoint)
        try:
            return await _inspect(browser, page_path, screenshot)
        finally:
            await browser.close()


async def _inspect(browser, page_path, screenshot):
    page = await browser.newPage()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.setViewport({"width": 1150, "height": 1400})
    await page.goto(page_path.as_uri())
    await page.screenshot({"path": str(screenshot), "fullPage": True})
    found = await page.evaluate("""() => ({
        polylines: document.querySelectorAll('svg polyline').length,
        band: document.querySelectorAll('svg polygon').length,
        cells: document.querySelectorAll('td.v').length,
        banner: document.querySelector('.banner').textContent})""")
    return dict(found, errors=errors)
