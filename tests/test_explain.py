"""compare_outputs.py --explain and the reproducer it writes (issue 17), on real models the
tests build and real runtimes: the WASM depthwise bug of tfjs 4.22 (tfjs #6629: a 3x1 kernel
with strides 2 and 'same' padding), and a fault planted behind one flag value."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, check, run_script
from test_own_models import build_with_tf_keras

pytestmark = pytest.mark.slow

DEPTHWISE_6629 = (
    "x = keras.Input((6, 6, 3))\n"
    "y = keras.layers.Dense(3, name='pre')(x)\n"
    "y = keras.layers.DepthwiseConv2D((3, 1), strides=2, padding='same', name='dw')(y)\n"
    "model = keras.Model(x, keras.layers.Dense(2, name='head')(y))")


def explained(out, *extra, env=None):
    done = check(run_script("compare_outputs.py", "--out-dir", out, "--explain", "--json", out / "explained.json",
                            *extra, env=env))
    assert "ydf.readthedocs" not in done.stderr  # a library's banner, held back with the converter's notes
    document = json.loads((out / "explained.json").read_text())
    return done.stdout, {e["capture"]: e for e in document.get("explanations", [])}


def assert_nothing_of_the_kit(folder, names):
    for name in names:
        text = (folder / name).read_text()
        for fragment in ("tfjs_parity", "inference_common", "kitKinds", str(ROOT)):
            assert fragment not in text, (name, fragment)


def run_alone(folder, backend):
    """(first line, RESULT) of `node repro.js BACKEND` in a copy of a reproducer, with plain
    Node and tfjs from npm (the kit's node_modules, found by NODE_PATH only)."""
    done = subprocess.run(["node", "repro.js", backend], cwd=folder, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, NODE_PATH=str(ROOT / "node_modules")))
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0], json.loads(done.stdout.splitlines()[-1][len("RESULT "):])


def trials(explanation):
    return {t["change"]: t for t in explanation["trials"]}


@pytest.fixture(scope="module")
def depthwise(tmp_path_factory):
    """The tfjs #6629 model, captured on every Node backend and on Chromium's wasm."""
    folder = tmp_path_factory.mktemp("depthwise")
    model = build_with_tf_keras(folder, DEPTHWISE_6629, "dw.h5")
    out = folder / "out"
    check(run_script("create_keras_model.py", "--model", model, "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "1"))
    check(run_script("run_browser.py", "--out-dir", out, "--backend", "wasm", "--repeat", "1"))
    stdout, explanations = explained(out)
    return out, stdout, explanations


def test_explain_names_the_backends_that_avoid_the_wasm_depthwise_bug_and_no_flag_does(depthwise):
    out, stdout, explanations = depthwise
    assert set(explanations) == {"node/wasm", "browser/wasm"}, stdout  # the healthy backends have nothing to explain
    for label, others in (("node/wasm", {"tensorflow", "cpu"}), ("browser/wasm", {"webgl", "cpu", "webgpu"})):
        explanation = explanations[label]
        assert explanation["point"] == "dw" and explanation["class"] == "DepthwiseConv2D"
        tried = trials(explanation)
        assert tried["WASM_HAS_SIMD_SUPPORT=false"]["verdict"] == "mismatch"  # the bug is in both wasm builds
        assert not tried["WASM_HAS_SIMD_SUPPORT=false"]["workaround"]
        for backend in others:
            assert tried[f"backend {backend}"]["workaround"], (label, tried[f"backend {backend}"])
    assert "workaround: backend tensorflow (await tf.setBackend('tensorflow'))" in stdout
    assert "explain node/wasm: first mismatch at dw (DepthwiseConv2D)" in stdout


def test_the_reproducer_reproduces_alone_with_plain_node_and_tfjs(depthwise, tmp_path):
    out, stdout, explanations = depthwise
    folder = out / "repro" / "dw-node-wasm"
    assert explanations["node/wasm"]["repro"]["folder"] == str(folder)
    assert explanations["node/wasm"]["repro"]["isolated"]["wrong"] is True
    assert "reproduces in isolation" in stdout
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "case.json", "package.json", "repro.html",
                                                        "repro.js"]
    assert_nothing_of_the_kit(folder, ("repro.js", "repro.html", "README.md", "package.json"))
    alone = tmp_path / "alone"
    shutil.copytree(folder, alone)

    def run(backend):
        return run_alone(alone, backend)

    line, wrong = run("wasm")
    assert wrong["wrong"] and wrong["ratio"] > 1e3 and "WRONG" in line and "max error" in line and "bound" in line
    case = json.loads((alone / "case.json").read_text())
    expected = np.concatenate([np.ravel(e["data"]) for e in case["expected"]])
    assert wrong["expected"] == pytest.approx(expected[wrong["index"]], rel=0, abs=0)
    line, right = run("cpu")
    assert not right["wrong"] and right["ratio"] <= 1 and "correct within float32 rounding" in line


def test_a_file_where_the_repro_folder_goes_is_refused_before_the_trials_and_a_second_explain_says_replaced(depthwise, tmp_path):
    out, _, _ = depthwise
    mine = tmp_path / "out"
    shutil.copytree(out, mine, ignore=lambda folder, names: [n for n in names if "browser" in n or n in
                                                             ("repro", "explained.json")])
    (mine / "repro").write_text("mine\n")
    before = sorted(p.name for p in mine.iterdir())
    done = run_script("compare_outputs.py", "--out-dir", mine, "--explain")
    assert_one_line_error(done, f"cannot write {mine / 'repro'}", "a file is in the way")
    assert (mine / "repro").read_text() == "mine\n"
    assert sorted(p.name for p in mine.iterdir()) == before
    assert "explain node/wasm" not in done.stdout  # refused before the trials ran, not after them
    # a second --explain over a reproducer the user added to (npm install) says it replaced it
    (mine / "repro").unlink()
    shutil.copytree(out / "repro" / "dw-node-wasm", mine / "repro" / "dw-node-wasm")
    (mine / "repro" / "dw-node-wasm" / "node_modules").mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid: the owner of what a killed --explain left behind
    for folder in (mine, mine / "repro"):
        (folder / f".explain.~{dead.pid}~left").mkdir()
    stdout, _ = explained(mine)
    assert [p.name for p in mine.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in (mine / "repro").iterdir() if p.name.startswith(".")] == []
    assert f"repro: replaced (the earlier one and anything added to it, node_modules too, is gone) " \
           f"{mine / 'repro' / 'dw-node-wasm'}/" in stdout
    assert not (mine / "repro" / "dw-node-wasm" / "node_modules").exists()


def test_a_file_where_the_reproducer_folder_goes_is_refused_before_the_trials(depthwise, tmp_path):
    out, _, _ = depthwise
    mine = tmp_path / "out"
    shutil.copytree(out, mine, ignore=lambda folder, names: [n for n in names if "browser" in n or n in
                                                             ("repro", "explained.json")])
    (mine / "repro").mkdir()
    (mine / "repro" / "dw-node-wasm").write_text("my notes\n")
    done = run_script("compare_outputs.py", "--out-dir", mine, "--explain")
    assert_one_line_error(done, f"cannot write {mine / 'repro' / 'dw-node-wasm'}", "a file is in the way")
    assert "explain node/wasm" not in done.stdout
    assert (mine / "repro" / "dw-node-wasm").read_text() == "my notes\n"
    assert sorted(p.name for p in (mine / "repro").iterdir()) == ["dw-node-wasm"]


@pytest.fixture(scope="module")
def depthwise_graph(tmp_path_factory):
    """The tfjs #6629 model with a relu, converted as a graph model (the converter fuses them:
    FusedDepthwiseConv2dNative, an op only tfjs has), captured on Node's wasm and cpu."""
    folder = tmp_path_factory.mktemp("depthwise_graph")
    model = build_with_tf_keras(folder, DEPTHWISE_6629.replace("padding='same'", "padding='same', activation='relu'"),
                                "dw.h5")
    out = folder / "out"
    check(run_script("create_keras_model.py", "--model", model, "--as", "graph", "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "wasm,cpu", "--repeat", "1"))
    stdout, explanations = explained(out)
    return out, stdout, explanations


def test_a_graph_node_s_reproducer_is_the_node_alone_and_reproduces_with_plain_node_and_tfjs(depthwise_graph,
                                                                                              tmp_path):
    """Issue 32: the mismatching node as a one-node graph model (its constants as weights, a
    Placeholder for what another node computed, fed what this runtime fed it); copied
    elsewhere and run with tfjs from npm only, wrong on wasm and right on cpu."""
    out, stdout, explanations = depthwise_graph
    assert list(explanations) == ["node/wasm"], stdout
    explanation = explanations["node/wasm"]
    assert explanation["class"] == "FusedDepthwiseConv2dNative" and trials(explanation)["backend cpu"]["workaround"]
    folder = Path(explanation["repro"]["folder"])
    assert folder.parent == out / "repro" and folder.name.endswith("-node-wasm")
    assert explanation["repro"]["isolated"]["wrong"] is True and explanation["repro"]["healthy"]["wrong"] is False
    assert "reproduces in isolation (node repro.js, wasm" in stdout
    document = json.loads((folder / "model.json").read_text())
    ops = sorted(node["op"] for node in document["modelTopology"]["node"])
    assert ops == ["Const", "FusedDepthwiseConv2dNative", "Placeholder"], ops  # the node, its kernel, what fed it
    assert [w["name"] for w in document["weightsManifest"][0]["weights"]] == \
        [n["name"] for n in document["modelTopology"]["node"] if n["op"] == "Const"]
    assert_nothing_of_the_kit(folder, ("repro.js", "repro.html", "README.md", "package.json", "model.json"))
    alone = tmp_path / "alone"
    shutil.copytree(folder, alone)
    results = {backend: run_alone(alone, backend) for backend in ("wasm", "cpu")}
    assert results["wasm"][1]["wrong"] and results["wasm"][1]["ratio"] > 1e3 and "WRONG" in results["wasm"][0]
    assert "(FusedDepthwiseConv2dNative) on tfjs wasm" in results["wasm"][0]
    assert not results["cpu"][1]["wrong"] and "correct within float32 rounding" in results["cpu"][0]


def test_a_file_where_a_graph_model_s_repro_folder_goes_is_refused_before_the_trials(depthwise_graph, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(depthwise_graph[0], out, ignore=lambda folder, names: [n for n in names
                                                                          if n in ("repro", "explained.json")])
    (out / "repro").write_text("mine\n")
    done = run_script("compare_outputs.py", "--out-dir", out, "--explain")
    assert_one_line_error(done, f"cannot write {out / 'repro'}", "a file is in the way")
    assert (out / "repro").read_text() == "mine\n" and "explain node/wasm" not in done.stdout


def test_the_browser_reproducer_runs_in_chromium(depthwise):
    out, stdout, explanations = depthwise
    repro = explanations["browser/wasm"]["repro"]
    assert repro["folder"] == str(out / "repro" / "dw-browser-wasm")
    assert repro["isolated"]["wrong"] is True and repro["healthy"]["wrong"] is False
    assert "repro.html in Chromium" in stdout


def test_a_webkit_capture_is_explained_in_webkit_and_its_reproducer_runs_there(depthwise, tmp_path):
    """The same WASM bug in WebKit (Safari's engine): --explain reruns the capture in WebKit
    (its flags, its backends: no WebGPU there) and runs the reproducer page in WebKit too."""
    out = tmp_path / "out"
    shutil.copytree(depthwise[0], out, ignore=lambda folder, names: [n for n in names if "browser" in n
                                                                     or n in ("repro", "explained.json")])
    check(run_script("run_browser.py", "--browser", "webkit", "--out-dir", out, "--backend", "wasm", "--repeat", "1"))
    stdout, explanations = explained(out)
    explanation = explanations["webkit/wasm"]
    assert explanation["point"] == "dw"
    tried = trials(explanation)
    assert tried["WASM_HAS_SIMD_SUPPORT=false"]["verdict"] == "mismatch"
    assert tried["backend webgl"]["workaround"] and tried["backend cpu"]["workaround"]
    assert "backend webgpu" not in tried  # WebKit here has none
    repro = explanation["repro"]
    assert repro["folder"] == str(out / "repro" / "dw-webkit-wasm")
    assert repro["isolated"]["wrong"] is True and repro["healthy"]["wrong"] is False
    assert "repro.html in WebKit" in stdout


def test_a_fault_behind_one_flag_value_is_traced_to_that_flag(tmp_path):
    """TFJS_PARITY_PLANTED_FAULT: node/wasm is wrong at its first Dense only while
    WASM_HAS_SIMD_SUPPORT is true. --explain must name that flag's other value, and say the
    reproducer (the layer alone, no fault there) does not reproduce in isolation."""
    model = build_with_tf_keras(tmp_path, (
        "x = keras.Input((4,)); y = keras.layers.Dense(3, name='first')(x)\n"
        "model = keras.Model(x, keras.layers.Dense(2, name='second')(y))"), "m.h5")
    out = tmp_path / "out"
    env = {"TFJS_PARITY_PLANTED_FAULT": "WASM_HAS_SIMD_SUPPORT=true"}
    check(run_script("create_keras_model.py", "--model", model, "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "wasm,cpu", "--repeat", "1", env=env))
    stdout, explanations = explained(out, env=env)
    assert list(explanations) == ["node/wasm"], stdout
    explanation = explanations["node/wasm"]
    assert explanation["point"] == "first"
    tried = trials(explanation)
    assert tried["WASM_HAS_SIMD_SUPPORT=false"]["workaround"] is True
    assert tried["WASM_HAS_SIMD_SUPPORT=false"]["verdict"] in ("float32 rounding", "same bits")
    assert "workaround: WASM_HAS_SIMD_SUPPORT=false (tf.env().set('WASM_HAS_SIMD_SUPPORT', false)" in stdout
    assert explanation["repro"]["isolated"]["wrong"] is False
    assert "does NOT reproduce in isolation" in stdout


def test_explain_with_nothing_wrong_says_so_and_writes_nothing(tmp_path):
    model = build_with_tf_keras(tmp_path, "x = keras.Input((4,)); model = keras.Model(x, keras.layers.Dense(2)(x))",
                                "m.h5")
    out = tmp_path / "out"
    check(run_script("create_keras_model.py", "--model", model, "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "cpu", "--repeat", "1"))
    stdout, explanations = explained(out)
    assert explanations == {}
    assert "explain: no capture has a mismatch; nothing to explain" in stdout
    assert not (out / "repro").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
