"""Step 1's sandbox for a user's model (issue 20, item 1), on real TensorFlow and real
bubblewrap: planted SavedModels that write on load write nothing outside the run, their
attempt is named in one line and stays under 1 GiB; a normal model gives the same captures
in the sandbox as with --trust-model; signals, time and memory limits are one line and
leave no process behind; where the sandbox cannot start, step 1 says so and names
--trust-model. Only "bwrap unavailable" is simulated (a PATH without it, or a bind bwrap
cannot make)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, check, run_script
from test_hostile import hidden_entries, no_orphans_within, processes_mentioning, start_script, wait_for
from test_hostile_files import PEAK_LIMIT_MIB, run_step_1
from tfjs_parity.capture import Capture
from tfjs_parity.sandbox import BREAK

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed (make setup)")

# A tf-keras SavedModel with a tracked resource: tf-keras restores it on load and runs its
# initializer. WHAT says what the initializer does: write MARK itself (tf.io.write_file) or call
# a tf.function that writes it; "none" is the normal model, without the resource.
PLANT = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf, tf_keras as keras
where, mark, what = sys.argv[1:]

@tf.function
def write_mark():
    tf.io.write_file(mark, "planted")

class Planted(tf.saved_model.experimental.TrackableResource):
    def __init__(self):
        super().__init__()
        self._resource_handle  # created now (not initialized: nothing is written while saving)
    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="")
    def _initialize(self):
        if what == "initializer":
            tf.io.write_file(mark, "planted")
        elif what == "function":
            write_mark()
        return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=tf.constant(1.0))

keras.utils.set_random_seed(5)
inputs = keras.Input((6,), name="x")
hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
if what != "none":
    model.planted = Planted()
model.save(where, save_format="tf")
assert not os.path.exists(mark), "the mark was written while saving"
"""


def planted(folder, what, mark):
    subprocess.run([sys.executable, "-c", PLANT, str(folder), str(mark), what], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return folder


def fresh_mark():
    """A path in the system's /tmp whose folder does not exist yet (the write would create it)."""
    return Path(tempfile.gettempdir()) / f"tfjs_parity_mark_{uuid.uuid4().hex}" / "MARK"


@pytest.fixture(scope="module")
def clean_model(tmp_path_factory):
    """The same SavedModel, without the planted resource."""
    folder = tmp_path_factory.mktemp("clean")
    return planted(folder / "model", "none", folder / "never")


# ---------------------------------------------------------------- planted writes

@needs_bwrap
@pytest.mark.slow
@pytest.mark.parametrize("what", ["initializer", "function"])
def test_a_savedmodel_writing_to_tmp_on_load_writes_nothing_and_is_named(tmp_path, what):
    mark = fresh_mark()
    model = planted(tmp_path / "model", what, mark)
    try:
        done, peak, appeared = run_step_1("--model", model, tmp=tmp_path)
        assert_one_line_error(done, f"the model tried to write {mark} (outside the run): refused by the sandbox",
                              "nothing was written outside the run")
        assert not mark.parent.exists()
        assert appeared == set() and not (tmp_path / "out").exists()
        assert peak < PEAK_LIMIT_MIB, peak
    finally:
        shutil.rmtree(mark.parent, ignore_errors=True)


@needs_bwrap
@pytest.mark.slow
def test_a_savedmodel_writing_beside_itself_is_refused_read_only_and_named(tmp_path):
    """Outside /tmp's like, the filesystem is read-only: the write fails inside, and is named."""
    mark = tmp_path / "model" / "MARK"
    model = planted(tmp_path / "model", "initializer", mark)
    done, peak, appeared = run_step_1("--model", model, tmp=tmp_path)
    assert_one_line_error(done, f"the model tried to write {mark} (outside the run): refused by the sandbox "
                                "(read-only)")
    assert not mark.exists() and not (tmp_path / "out").exists() and appeared == set()
    assert peak < PEAK_LIMIT_MIB, peak


@pytest.mark.slow
def test_trust_model_runs_it_unsandboxed_as_before(tmp_path):
    mark = fresh_mark()
    model = planted(tmp_path / "model", "initializer", mark)
    try:
        done = check(run_script("create_keras_model.py", "--model", model, "--trust-model", "--repeat", "1",
                                "--out-dir", tmp_path / "out"))
        assert done.stdout.startswith(f"wrote {tmp_path / 'out'}/keras_converted/")
        assert mark.read_text() == "planted"  # what trusting a model means: it ran as it would anywhere
    finally:
        shutil.rmtree(mark.parent, ignore_errors=True)


# ---------------------------------------------------------------- a normal model, sandboxed

@needs_bwrap
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["layers", "graph"])
def test_a_normal_model_gives_the_same_captures_in_the_sandbox(clean_model, tmp_path, kind):
    outs = {}
    for way, extra in (("sandbox", []), ("trusted", ["--trust-model"])):
        outs[way] = tmp_path / way
        done = check(run_script("create_keras_model.py", "--model", clean_model, "--as", kind, *extra,
                                "--repeat", "1", "--out-dir", outs[way]))
        assert done.stderr == "" and done.stdout.startswith(f"wrote {outs[way]}/keras_converted/")
        assert hidden_entries(outs[way]) == []  # the sandbox's staging folder is gone
    if kind == "layers":  # the converter writes a graph's node attributes in no fixed order, sandbox or not
        plans = [json.loads((out / "keras_converted" / "probe_plan.json").read_text()) for out in outs.values()]
        assert plans[0]["model_id"] == plans[1]["model_id"]  # the same converted model, byte for byte
    for name in ("keras_model_python.json", "keras_model_float64.json"):
        ours, theirs = (Capture.load(out / name) for out in outs.values())
        assert sorted(ours.tensors) == sorted(theirs.tensors)
        for key in ours.tensors:
            for a, b in zip(ours.tensors[key], theirs.tensors[key]):
                np.testing.assert_array_equal(a, b, err_msg=f"{name} {key}")


# ---------------------------------------------------------------- signals and limits

def paused_sandbox(model, tmp_path, *args):
    """Step 1 on `model` started, and paused in the sandbox once the model is built."""
    out, paused = tmp_path / "out", tmp_path / "paused"
    child = start_script("create_keras_model.py", "--model", model, "--out-dir", out, *args,
                         env={"TFJS_PARITY_PAUSE_AT": "model built", "TFJS_PARITY_PAUSED": paused})
    assert wait_for(paused.exists, 180), child.communicate()
    assert processes_mentioning("--in-sandbox") != []
    return child, out


def nothing_left(out):
    return not out.exists() or (hidden_entries(out) == [] and not list(out.glob("keras_*")))


@needs_bwrap
@pytest.mark.slow
@pytest.mark.parametrize("signum, status, word", [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated")])
def test_a_signal_stops_the_sandbox_in_one_line(clean_model, tmp_path, signum, status, word):
    child, out = paused_sandbox(clean_model, tmp_path)
    os.killpg(child.pid, signum)  # a terminal's Ctrl-C goes to the whole foreground group
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == status, stderr
    assert stderr.strip().startswith(word) and len(stderr.strip().splitlines()) == 1, stderr
    assert no_orphans_within("--in-sandbox") == []
    assert nothing_left(out)


@needs_bwrap
@pytest.mark.slow
def test_kill_9_of_step_1_leaves_no_sandbox_running(clean_model, tmp_path):
    child, _ = paused_sandbox(clean_model, tmp_path)
    os.kill(child.pid, signal.SIGKILL)  # the kit alone: bwrap and the step die with it
    child.communicate(timeout=30)
    assert no_orphans_within("--in-sandbox") == []


@needs_bwrap
@pytest.mark.slow
@pytest.mark.parametrize("limit, fragment", [
    (["--sandbox-timeout", "0.5"], "did not finish within 0.5 s in the sandbox (--sandbox-timeout)"),
    # TensorFlow alone holds more than 300 MiB once imported, before the model is built
    (["--sandbox-memory", "300"], "used more than 300 MiB in the sandbox (--sandbox-memory)"),  # before the pause
])
def test_time_and_memory_limits_are_one_line(clean_model, tmp_path, limit, fragment):
    """Paused at 'model built', the step never ends by itself: the limit ends it, whenever it is met."""
    out = tmp_path / "out"
    child = start_script("create_keras_model.py", "--model", clean_model, "--out-dir", out, *limit,
                         env={"TFJS_PARITY_PAUSE_AT": "model built", "TFJS_PARITY_PAUSED": tmp_path / "paused"})
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, stderr
    assert stderr.strip().splitlines() == [f"error: the model {fragment}: stopped; nothing was committed"]
    assert no_orphans_within("--in-sandbox") == []
    assert nothing_left(out)


# ---------------------------------------------------------------- no sandbox

def test_no_bwrap_is_one_line_naming_trust_model(tmp_path):
    model = tmp_path / "model.h5"
    model.write_bytes(b"not read: the sandbox is checked first")
    done = run_script("create_keras_model.py", "--model", model, "--out-dir", tmp_path / "out",
                      env={"PATH": str(tmp_path / "no-bwrap-here")})
    assert_one_line_error(done, "cannot sandbox --model: bubblewrap (bwrap) is not installed", "--trust-model")
    assert not (tmp_path / "out").exists()


@needs_bwrap
def test_a_sandbox_that_cannot_start_is_one_line_naming_trust_model(tmp_path):
    model = tmp_path / "model.h5"
    model.write_bytes(b"not read: bwrap fails before the step starts")
    done = run_script("create_keras_model.py", "--model", model, "--out-dir", tmp_path / "out", env={BREAK: "1"})
    assert_one_line_error(done, "cannot sandbox --model: the sandbox did not start (bwrap: ", "--trust-model")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--trust-model"], "--trust-model is for --model"),
    (["--sandbox-timeout", "5"], "the study's model runs without it"),
    (["--model", "m.h5", "--trust-model", "--sandbox-memory", "500"], "--trust-model runs without it"),
])
def test_sandbox_flags_out_of_place_are_one_line(tmp_path, args, fragment):
    done = run_script("create_keras_model.py", *args, "--out-dir", tmp_path / "out")
    assert_one_line_error(done, fragment)
