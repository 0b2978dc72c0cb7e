"""The four scripts end to end on the real runtimes: TensorFlow, tfjs-node, headless Chromium."""
import json
import re
import shutil

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, check, leftovers, run_script
from tfjs_parity.capture import Capture
from tfjs_parity.compare import compare_captures

pytestmark = pytest.mark.slow  # the real steps, as subprocesses: see pytest.ini

LINE = re.compile(r"^dense_\d+_(weights|output)\[\d\]: different values = \d+, average difference = \S+$")


def load(folder, name):
    return Capture.load(folder / name)


def test_python_capture_holds_every_layer_and_the_ones_input(small_study):
    capture = load(small_study, "keras_model_python.json")
    assert capture.layer_names == ["dense_0", "dense_1", "dense_2"]
    assert [a.shape for a in capture.tensors["dense_0_weights"]] == [(8, 8), (8,)]
    assert capture.tensors["dense_2_output"][0].shape == (1, 8)
    assert capture.metadata["inputs"]["input"]["data"] == [1.0] * 8
    assert capture.metadata["versions"]["tf_keras"].startswith("2.")
    kernel = capture.tensors["dense_0_weights"][0]
    assert kernel.min() >= -1 and kernel.max() <= 1 and kernel.std() > 0.3  # RandomUniform(-1, 1)
    model_json = json.loads((small_study / "keras_converted" / "model.json").read_text())
    assert model_json["format"] == "layers-model"


def test_node_runs_tensorflow_natively_and_matches_python_bit_for_bit(small_study):
    python, node = load(small_study, "keras_model_python.json"), load(small_study, "keras_model_tfjs_node.json")
    assert node.metadata["runtime"] == "node" and node.metadata["backend"] == "tensorflow"
    assert node.metadata["versions"]["tensorflow"] == python.metadata["versions"]["tensorflow"]  # one TensorFlow
    assert node.metadata["inputs"] == python.metadata["inputs"]
    assert compare_captures(python, node).identical


def test_browser_runs_webgl_with_the_same_weights_and_close_outputs(small_study):
    python, browser = load(small_study, "keras_model_python.json"), load(small_study, "keras_model_tfjs_browser.json")
    assert browser.metadata["backend"] == "webgl"
    assert browser.metadata["renderer"]  # SwiftShader here; the real GPU elsewhere
    assert browser.metadata["precision_flags"]["WEBGL_RENDER_FLOAT32_ENABLED"] is True
    for layer in python.layer_names:
        for ours, theirs in zip(python.tensors[f"{layer}_weights"], browser.tensors[f"{layer}_weights"]):
            np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_allclose(browser.tensors[f"{layer}_output"][0], python.tensors[f"{layer}_output"][0],
                                   rtol=1e-5, atol=1e-5)


def test_compare_outputs_prints_the_two_study_blocks(small_study):
    done = check(run_script("compare_outputs.py", "--out-dir", small_study))
    blocks = done.stdout.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["********** tf.Keras Python vs tfjs Node **********",
                                                   "********** tf.Keras Python vs tfjs Browser **********"]
    for block in blocks:
        lines = block.splitlines()[1:]
        assert len(lines) == 3 * 3 and all(LINE.match(line) for line in lines), lines
    assert all(line.endswith("different values = 0, average difference = 0.0")
               for line in blocks[0].splitlines()[1:])  # Node runs Python's own TensorFlow


def test_default_study_reproduces_the_original_table_exactly(default_study):
    """The acceptance target: the original study's printed report, line for line
    (tests/data/original_study_report.txt is copied from its README)."""
    done = check(run_script("compare_outputs.py", "--out-dir", default_study))
    expected = (ROOT / "tests" / "data" / "original_study_report.txt").read_text()
    assert done.stdout.strip() == expected.strip()


# --- bad input: one clear line, a non-zero exit, and nothing half-written --------------

@pytest.mark.parametrize("missing, script", [("keras_model_tfjs_node.json", "run_node.py"),
                                             ("keras_model_tfjs_browser.json", "run_browser.py")])
def test_a_missing_study_capture_is_named_with_its_script_and_the_rest_compares(small_study, tmp_path, missing,
                                                                                script):
    """compare takes what the folder has (issue 19): the block of the capture there, and one
    line naming the missing one and the script that makes it."""
    for name in ("keras_model_python.json", "keras_model_tfjs_node.json", "keras_model_tfjs_browser.json"):
        if name != missing:
            shutil.copy(small_study / name, tmp_path / name)
    done = check(run_script("compare_outputs.py", "--out-dir", tmp_path))
    assert done.stdout.strip().splitlines()[-1] == f"(the study's full table also needs {missing} (`python {script}`))"
    present = "Browser" if missing.endswith("node.json") else "Node"
    assert done.stdout.count("**********") == 2 and f"tf.Keras Python vs tfjs {present}" in done.stdout


def test_capture_of_another_model_is_named_stale_or_by_the_first_layer_that_differs(small_study, tmp_path):
    check(run_script("create_keras_model.py", "--depth", "3", "--units", "9", "--out-dir", tmp_path))
    shutil.copy(small_study / "keras_model_tfjs_node.json", tmp_path)
    shutil.copy(small_study / "keras_model_tfjs_browser.json", tmp_path)
    assert_one_line_error(run_script("compare_outputs.py", "--out-dir", tmp_path),
                          f"{tmp_path / 'keras_model_tfjs_node.json'} is stale", "run `python run_node.py` again")
    for name in ("keras_model_tfjs_node.json", "keras_model_tfjs_browser.json"):  # captures from before model ids
        document = json.loads((tmp_path / name).read_text())
        del document["metadata"]["model_id"]
        (tmp_path / name).write_text(json.dumps(document))
    assert_one_line_error(run_script("compare_outputs.py", "--out-dir", tmp_path),
                          "layer dense_0:", "[9, 9]", "[8, 8]")


def test_no_node_is_one_clear_line(small_study, tmp_path):
    shutil.copytree(small_study / "keras_converted", tmp_path / "keras_converted")
    done = run_script("run_node.py", "--out-dir", tmp_path, env={"PATH": str(tmp_path / "empty")})
    assert_one_line_error(done, "Node.js")
    assert not (tmp_path / "keras_model_tfjs_node.json").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("env, fragment", [({"CHROME_PATH": "/nonexistent/chromium"}, "CHROME_PATH"),
                                           ({"PATH": "/nonexistent", "CHROME_PATH": ""}, "no Chromium found")])
def test_no_chromium_is_one_clear_line(small_study, tmp_path, env, fragment):
    shutil.copytree(small_study / "keras_converted", tmp_path / "keras_converted")
    assert_one_line_error(run_script("run_browser.py", "--out-dir", tmp_path, env=env), fragment)
    assert not (tmp_path / "keras_model_tfjs_browser.json").exists() and leftovers(tmp_path) == []


def test_webgl_that_does_not_initialise_is_an_error_not_a_cpu_fallback(small_study, tmp_path):
    # A Chromium with no GPU and no software rasterizer has no WebGL: tfjs would fall back to
    # its cpu backend; the kit must refuse that result.
    shutil.copytree(small_study / "keras_converted", tmp_path / "keras_converted")
    done = run_script("run_browser.py", "--out-dir", tmp_path, "--chromium-arg=--disable-gpu",
                      "--chromium-arg=--disable-software-rasterizer")
    assert_one_line_error(done, "backend webgl did not initialise", "cpu")
    assert not (tmp_path / "keras_model_tfjs_browser.json").exists() and leftovers(tmp_path) == []


def test_missing_model_names_the_script_that_makes_it(tmp_path):
    for script in ("run_node.py", "run_browser.py"):
        assert_one_line_error(run_script(script, "--out-dir", tmp_path), "model.json not found",
                              "create_keras_model.py")


def test_scripts_explain_themselves():
    for script in ("create_keras_model.py", "run_node.py", "run_browser.py", "compare_outputs.py"):
        done = check(run_script(script, "--help"))
        assert "--out-dir" in done.stdout and "Step" in done.stdout
