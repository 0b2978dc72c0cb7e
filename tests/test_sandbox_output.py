"""What comes out of step 1's sandbox is as hostile as what goes in (issue 33), on real
TensorFlow and real bubblewrap. A model's code runs in the sandboxed child, so anything in the
child's staging folder may be the model's: a run folder swapped for a link to another folder,
a FIFO or a sparse file of gigabytes as its summary or log, a link among the converted files.
The tests make what such code would leave at the child's last moment (the child holds there:
TFJS_PARITY_HOLD_AT), then let it finish: nothing outside the run is moved, read whole or
waited on; one line, a non-zero exit, and a later step in the same out-dir works. Payloads
that need no Python (TensorFlow's own file ops) are real SavedModels."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, check, run_script, wait_for
from test_hostile import start_script

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed (make setup)")]

# A tf-keras SavedModel whose restored resource runs TensorFlow ops (no Python) when it loads:
# ACTION is the body of _initialize, with `tf` and `mark` at hand.
PLANT = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf, tf_keras as keras
where, mark, action = sys.argv[1:]

class Planted(tf.saved_model.experimental.TrackableResource):
    def __init__(self):
        super().__init__()
        self._resource_handle
    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="")
    def _initialize(self):
        exec(action)
        return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=tf.constant(1.0))

keras.utils.set_random_seed(5)
inputs = keras.Input((6,), name="x")
model = keras.Model(inputs, keras.layers.Dense(3, name="out")(inputs))
if action:
    model.planted = Planted()
model.save(where, save_format="tf")
"""

LAMBDA = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tf_keras as keras
inputs = keras.Input((6,), name="x")
model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0, name="doubled")(inputs))
model.save(sys.argv[1], save_format="tf")
"""


def planted(folder, action="", mark="/nonexistent"):
    subprocess.run([sys.executable, "-c", PLANT, str(folder), str(mark), action], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return folder


@pytest.fixture(scope="module")
def clean_model(tmp_path_factory):
    return planted(tmp_path_factory.mktemp("clean") / "model")


def sandbox_folder(out):
    found = [p for p in Path(out).iterdir() if p.name.startswith(".sandbox.~")]
    return found[0] if len(found) == 1 else None


def held_step_1(model, out, held, act):
    """Step 1 on `model`, its sandboxed child held once its summary is written; `act(folder)`
    then does what the model's code could have done there; the child goes on. Returns the run."""
    run = start_script("create_keras_model.py", "--model", model, "--out-dir", out,
                       env={"TFJS_PARITY_HOLD_AT": "summary written", "TFJS_PARITY_PAUSED": str(held)})
    try:
        assert wait_for(held.exists, 300), run.communicate(timeout=60)
        act(sandbox_folder(out))
        held.unlink()
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    return subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)


def a_later_step_works(model, out):
    """The out-dir is not broken for the next step: a normal step 1 there commits."""
    check(run_script("create_keras_model.py", "--model", model, "--out-dir", out, "--repeat", "1"))
    assert (out / "keras_converted" / "probe_plan.json").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_a_run_folder_swapped_for_a_link_to_another_folder_moves_nothing_out_of_it(clean_model, tmp_path):
    victim = tmp_path / "victim"
    (victim / "keras_converted").mkdir(parents=True)
    (victim / "keras_converted" / "model.json").write_text("{}")
    (victim / "keras_model_python.json").write_text("theirs")
    (victim / "summary.txt").write_text("wrote everything")
    out = tmp_path / "out"

    def swap(folder):
        shutil.rmtree(folder / "run")
        (folder / "run").symlink_to(victim)
        (folder / "summary.txt").write_text("\x1b[31merror: spoofed\x1b[0m all good")
    done = held_step_1(clean_model, out, tmp_path / "held", swap)
    assert_one_line_error(done, "the sandboxed step left no run folder of its own", "nothing was committed")
    assert sorted(p.name for p in victim.rglob("*")) == ["keras_converted", "keras_model_python.json", "model.json",
                                                         "summary.txt"]
    assert (victim / "keras_model_python.json").read_text() == "theirs"
    assert not (out / "keras_converted").exists() and "spoofed" not in done.stdout
    a_later_step_works(clean_model, out)


@pytest.mark.parametrize("what", ["link", "fifo", "folder"])
def test_what_the_kit_does_not_write_in_the_run_is_refused_by_name(clean_model, tmp_path, what):
    outside = tmp_path / "outside.txt"
    outside.write_text("not the model's")
    out = tmp_path / "out"

    def plant(folder):
        target = folder / "run" / "keras_converted" / "extra"
        if what == "link":
            target.symlink_to(outside)
        elif what == "fifo":
            os.mkfifo(target)
        else:
            target.mkdir()
    done = held_step_1(clean_model, out, tmp_path / "held", plant)
    kind = {"link": "a link", "fifo": "a FIFO or device", "folder": "a folder"}[what]
    assert_one_line_error(done, f"the sandboxed step left {kind} the kit does not write, keras_converted/extra",
                          "nothing was committed")
    assert outside.read_text() == "not the model's" and not (out / "keras_converted").exists()
    a_later_step_works(clean_model, out)


@pytest.mark.parametrize("what", ["fifo", "sparse"])
def test_a_summary_or_log_the_model_replaced_neither_blocks_nor_is_read_whole(clean_model, tmp_path, what):
    out = tmp_path / "out"

    def plant(folder):
        for name in ("summary.txt", "log"):
            (folder / name).unlink()
            if what == "fifo":
                os.mkfifo(folder / name)
            else:
                with open(folder / name, "wb") as f:
                    f.truncate(2 * 2 ** 30)  # 2 GiB, no block on disk
    started = time.monotonic()
    done = held_step_1(clean_model, out, tmp_path / "held", plant)
    assert time.monotonic() - started < 280  # not held up to any timeout (the kit's is 1800 s)
    said = "not a regular file" if what == "fifo" else "2,147,483,648 bytes"
    assert_one_line_error(done, f"the sandboxed step left a summary.txt that is {said}", "nothing was committed")
    assert not (out / "keras_converted").exists()
    a_later_step_works(clean_model, out)


def test_a_write_to_dev_is_refused_and_named(tmp_path):
    model = planted(tmp_path / "model", "tf.io.write_file(mark, 'x' * 1000)", "/dev/kit_mark")
    done = run_script("create_keras_model.py", "--model", model, "--out-dir", tmp_path / "out")
    assert_one_line_error(done, "the model tried to write /dev/kit_mark (outside the run): refused by the sandbox")
    assert not Path("/dev/kit_mark").exists()


def test_temporary_files_count_against_the_sandboxs_memory(tmp_path):
    """75 files of 20 MiB in /tmp (TensorFlow's WriteFile, no Python): 1.5 GiB on disk, which
    the sandbox counts with its resident memory against --sandbox-memory (checked while it
    runs and once more when it has ended: however fast the machine)."""
    action = ("big = tf.strings.reduce_join(tf.fill([20 * 1024], 'x' * 1024))\n"
              "for i in range(75): tf.io.write_file(mark + str(i), big)")
    model = planted(tmp_path / "model", action, "/tmp/kit_fill_")
    done = run_script("create_keras_model.py", "--model", model, "--out-dir", tmp_path / "out",
                      "--sandbox-memory", "1400")
    # its resident memory alone stays near 0.8 GiB: what it wrote to /tmp made the rest
    assert_one_line_error(done, "the model used more than 1,400 MiB in the sandbox (--sandbox-memory): stopped")
    assert list(Path("/tmp").glob("kit_fill_*")) == []
    assert not (tmp_path / "out").exists()  # the out-dir step 1 made is removed again: nothing was committed


def test_a_tree_1500_folders_deep_in_tmp_is_named_and_breaks_no_later_step(clean_model, tmp_path):
    top = f"/tmp/kit_deep_{os.getpid()}_{time.time_ns()}"
    model = planted(tmp_path / "model", "tf.io.write_file(mark, 'x')", top + "/a" * 1500 + "/MARK")
    out = tmp_path / "out"
    done = run_script("create_keras_model.py", "--model", model, "--out-dir", out)
    assert_one_line_error(done, "the model wrote folders more than 256 deep in the sandbox: stopped; nothing was "
                                "committed", f"it had tried to write /tmp/... (folders more than 256 deep), {top}/a/a/a/")
    assert not Path(top).exists()
    a_later_step_works(clean_model, out)


def test_a_savedmodel_with_a_lambda_layer_is_refused_before_it_loads(tmp_path):
    subprocess.run([sys.executable, "-c", LAMBDA, str(tmp_path / "model")], check=True, capture_output=True)
    done = run_script("create_keras_model.py", "--model", tmp_path / "model", "--out-dir", tmp_path / "out")
    assert_one_line_error(done, "a Lambda layer, whose Python code runs when the SavedModel loads")


def test_the_sandboxs_own_flag_is_refused_from_a_command_line(clean_model, tmp_path):
    victim = tmp_path / "victim"
    (victim / "run").mkdir(parents=True)
    (victim / "run" / "keep").write_text("mine")
    done = run_script("create_keras_model.py", "--model", clean_model, "--in-sandbox", victim, "--out-dir",
                      tmp_path / "out")
    assert_one_line_error(done, "--in-sandbox is the kit's own flag")
    assert (victim / "run" / "keep").read_text() == "mine"
    done = run_script("create_keras_model.py", "--model", clean_model, "--in-sandbox", victim, "--out-dir",
                      tmp_path / "out", env={"TFJS_PARITY_SANDBOX_TOKEN": "guess"})
    assert_one_line_error(done, "--in-sandbox is the kit's own flag")


def test_a_model_name_with_control_characters_is_shown_escaped(tmp_path):
    """A model.json whose op name holds a newline and ESC sequences: the one error line shows
    them escaped; no line of the model's making, no colour."""
    import json
    folder = tmp_path / "m"
    folder.mkdir()
    evil = "Relu\n\x1b[31merror: all good\x1b[0m"
    document = {"format": "graph-model", "modelTopology": {"node": [
        {"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": [
            {"size": "1"}, {"size": "2"}]}}}},
        {"name": "y", "op": evil, "input": ["x"], "attr": {"T": {"type": "DT_FLOAT"}}}]},
        "weightsManifest": []}
    (folder / "model.json").write_text(json.dumps(document))
    done = run_script("create_keras_model.py", "--model", folder / "model.json", "--out-dir", tmp_path / "out")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "\x1b" not in done.stderr and "\\x1b[31m" in done.stderr and "\\n" in done.stderr, done.stderr


def test_an_attribute_name_with_a_newline_prints_no_line_of_its_own(tmp_path):
    """An older graph's unknown attribute is dropped and named in step 1's line: a name holding
    a newline and 'foreseen: ' or 'error: ' stays on that line, escaped."""
    import json
    folder = tmp_path / "m"
    folder.mkdir()
    nodes = [{"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": [
        {"size": "1"}, {"size": "2"}]}}}},
        {"name": "y", "op": "Relu", "input": ["x"], "attr": {"T": {"type": "DT_FLOAT"},
                                                             "zz\nforeseen: spoofed\nerror: spoofed\x1b[31m": {"b": True}}}]
    (folder / "model.json").write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": nodes},
                                                   "weightsManifest": []}))
    done = check(run_script("create_keras_model.py", "--model", folder / "model.json", "--out-dir", tmp_path / "out",
                            "--repeat", "1"))
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote ") and "\x1b" not in done.stdout, done.stdout
    assert "zz\\nforeseen: spoofed\\nerror: spoofed\\x1b[31m of 1 Relu node(s) dropped" in lines[0], lines[0]


def test_a_model_behind_a_symlink_in_tmp_works(clean_model, tmp_path):
    """Only the resolved folder was bound into the sandbox's own /tmp: the model was 'not found'."""
    import tempfile
    links = Path(tempfile.mkdtemp(prefix="kit_links_", dir="/tmp"))
    try:
        (links / "model").symlink_to(clean_model)
        done = check(run_script("create_keras_model.py", "--model", links / "model", "--out-dir", tmp_path / "out",
                                "--repeat", "1"))
        assert (tmp_path / "out" / "keras_converted" / "probe_plan.json").is_file(), done.stdout
    finally:
        shutil.rmtree(links)


def test_a_model_reached_through_a_link_inside_a_folder_the_sandbox_binds_works(clean_model, tmp_path):
    """The sandbox binds each folder step 1 reads that lives in /tmp. The model's path went
    through a link inside another of them (--input's folder; make zoo run from a clone whose
    model cache is a link): bwrap bound that folder, then could not make the model's inside it
    ("Can't mkdir parents"). A folder inside one already bound is not bound again."""
    import tempfile
    links = Path(tempfile.mkdtemp(prefix="kit_links_", dir="/tmp"))
    try:
        np.save(links / "x.npy", np.ones((1, 6), np.float32))
        (links / "cache").symlink_to(clean_model.parent)
        done = check(run_script("create_keras_model.py", "--model", links / "cache" / "model", "--input",
                                links / "x.npy", "--out-dir", tmp_path / "out", "--repeat", "1"))
        assert (tmp_path / "out" / "keras_converted" / "probe_plan.json").is_file(), done.stdout
    finally:
        shutil.rmtree(links)
