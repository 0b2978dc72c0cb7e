"""Small defects found in a reading of the code (issue 15), each with the test that would
have caught it. Fast: no TensorFlow, Node or browser."""
import errno
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from tfjs_parity import KitError
from tfjs_parity.capture import Capture
from tfjs_parity.capture_json import encode_tensor
from tfjs_parity.compare import check_same_model, measure
from tfjs_parity.files import write_error
from tfjs_parity.reference import REFERENCE_BACKEND, REFERENCE_RUNTIME
from tfjs_parity.report import to_json
from tfjs_parity.verdict import VERDICTS, LayerResult, RuntimeResult, Verdict


def test_json_report_leaves_out_every_capture_s_inputs():
    metadata = {"runtime": "node", "backend": "cpu", "model_id": "m",
                "inputs": {"x": encode_tensor([1.0, 2.0])}, "input": encode_tensor([3.0])}
    same = measure([1.0], [1.0])
    result = RuntimeResult("node/cpu", "float32", metadata, [LayerResult("d", same, same, 0.0, 0.0,
                                                                         Verdict.ROUNDING, "")])
    document = json.loads(to_json([result], "node/cpu", []))
    assert set(document["captures"][0]["metadata"]) == {"runtime", "backend", "model_id"}


@pytest.mark.parametrize("runtime, backend, script", [
    ("python", "cpu", "create_keras_model.py"),
    (REFERENCE_RUNTIME, REFERENCE_BACKEND, "create_keras_model.py"),
    ("node", "tensorflow", "run_node.py"),
    ("browser", "webgl", "run_browser.py"),
    ("firefox", "webgl", "run_browser.py --browser firefox"),
    ("device", "webgl", "run_browser.py --device"),
])
def test_a_stale_capture_names_the_script_that_makes_it_again(tmp_path, runtime, backend, script):
    good = Capture({"runtime": "python", "backend": "cpu", "model_id": "new"})
    stale = Capture({"runtime": runtime, "backend": backend, "model_id": "old"})
    with pytest.raises(KitError) as raised:
        check_same_model(tmp_path / "no-model-here", [(tmp_path / "a.json", good), (tmp_path / "b.json", stale)])
    assert f"{tmp_path / 'b.json'} is stale" in str(raised.value)
    assert f"run `python {script}` again" in str(raised.value)


def test_allow_mismatch_without_a_limit_is_refused_before_any_report(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "compare_outputs.py"), "--out-dir", str(tmp_path),
                           "--allow-mismatch"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == ("error: --allow-mismatch changes the gate: give --rtol, --atol or --max-ulp "
                                   "with it")


@pytest.mark.parametrize("number, hint", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                          (errno.EACCES, "no permission"), (errno.ENAMETOOLONG, "too long")])
def test_write_errors_are_explained_by_their_errno(tmp_path, number, hint):
    assert hint in str(write_error(tmp_path / "f", OSError(number, "why")))


def test_verdicts_rank_best_to_worst_and_the_worst_wins():
    assert [v.value for v in VERDICTS] == ["same bits", "float32 rounding", "quantized", "no bound", "reduced precision",
                                           "overflow", "mismatch"]
    assert Verdict.worst(["float32 rounding", Verdict.MISMATCH, "same bits"]) is Verdict.MISMATCH
    assert Verdict.worst([Verdict.NO_BOUND, Verdict.ROUNDING]) is Verdict.NO_BOUND
    assert f"{Verdict.REDUCED}" == "reduced precision" and json.dumps(Verdict.OVERFLOW) == '"overflow"'
    with pytest.raises(ValueError):
        Verdict.worst(["fine"])


def test_the_exact_layers_are_keras_classes():
    import inspect

    from tfjs_parity.bounds import REGISTRY
    from tfjs_parity.model import load_keras
    keras = load_keras()
    classes = {name for name, value in inspect.getmembers(keras.layers) if inspect.isclass(value)}
    assert sorted(name for name in REGISTRY if name not in classes) == []


def test_a_folder_that_cannot_be_moved_in_puts_the_old_one_back(tmp_path, monkeypatch):
    """exchange_or_replace_dir where the filesystem cannot exchange: the old folder is moved
    aside first; when the new one then cannot be moved in (another filesystem, found by a
    hostile tester), the old one must come back, not stay hidden under a staging name."""
    from tfjs_parity import files
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    target = tmp_path / "repro"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    with pytest.raises(KitError, match="cannot write"):
        files.exchange_or_replace_dir(tmp_path / "not-there", target)
    assert (target / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repro"]
