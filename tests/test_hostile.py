"""The kit under faults, interruptions and hostile input, done for real: kill -9 at chosen
moments, SIGTERM and Ctrl-C, a full filesystem, outputs aimed at inputs and devices, bad
numbers on the command line. Each expected failure is one line and a non-zero exit; no file
is lost or half-written; no child process outlives the kit."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SMALL_MODEL, assert_one_line_error, check, copy_study, run_script, wait_for
from tfjs_parity.capture import Capture

pytestmark = pytest.mark.slow  # the real steps, as subprocesses: see pytest.ini

STUDY_FILES = ("keras_model_python.json", "keras_model_float64.json")
RUNTIME_FILES = ("keras_model_tfjs_node.json", "keras_model_tfjs_browser.json")


def start_script(script, *args, env=None):
    """Start a kit script in its own session, as a terminal's foreground job would be."""
    return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                            env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def processes_mentioning(text):
    """pids of live processes whose command line holds `text` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def no_orphans_within(text, seconds=5.0):
    wait_for(lambda: not processes_mentioning(text), seconds)
    return processes_mentioning(text)


def model_id(folder):
    return json.loads((folder / "keras_converted" / "probe_plan.json").read_text())["model_id"]


def hidden_entries(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- consistency under kill -9

@pytest.fixture
def good_results(small_study, tmp_path):
    """A folder of whole, consistent results (the small model, Python and Node captures)."""
    return copy_study(small_study, tmp_path / "results", STUDY_FILES + RUNTIME_FILES)


@pytest.mark.parametrize("moment", ["staged", "model committed", "keras_model_python.json committed"])
def test_kill_9_of_create_keras_model_at_each_commit_step_keeps_whole_files_and_names_the_stale_one(
        good_results, moment):
    before = model_id(good_results)
    done = run_script("create_keras_model.py", *SMALL_MODEL, "--seed", "7", "--out-dir", good_results,
                      env={"TFJS_PARITY_KILL_AT": moment})
    assert done.returncode == -signal.SIGKILL
    for name in STUDY_FILES + RUNTIME_FILES:
        Capture.load(good_results / name)  # every capture is whole
    compared = run_script("compare_outputs.py", "--out-dir", good_results)
    if moment == "staged":  # nothing committed: the previous results, untouched and consistent
        assert model_id(good_results) == before
        check(compared)
    else:  # the model is new, some captures are not: the first stale one is named
        assert model_id(good_results) != before
        stale = "keras_model_python.json" if moment == "model committed" else "keras_model_tfjs_node.json"
        script = "create_keras_model.py" if stale == "keras_model_python.json" else "run_node.py"
        assert_one_line_error(compared, f"{good_results / stale} is stale", f"run `python {script}` again")
    if moment != "model committed":
        return
    # the next run clears what the killed one left, and the set is consistent again
    check(run_script("create_keras_model.py", *SMALL_MODEL, "--out-dir", good_results))
    check(run_script("run_node.py", "--out-dir", good_results))
    check(run_script("run_browser.py", "--out-dir", good_results))
    assert hidden_entries(good_results) == []
    check(run_script("compare_outputs.py", "--out-dir", good_results))


def test_kill_9_of_create_keras_model_at_random_moments_never_leaves_a_broken_set(good_results):
    """The real race, sampled: kill -9 after a few delays spread over the step's run."""
    for delay in (1.0, 3.0, 4.5):
        child = start_script("create_keras_model.py", *SMALL_MODEL, "--seed", str(int(delay * 10)),
                             "--out-dir", good_results)
        time.sleep(delay)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        for name in STUDY_FILES:
            Capture.load(good_results / name)
        done = run_script("compare_outputs.py", "--out-dir", good_results)
        assert done.returncode == 0 or (done.returncode == 2 and " is stale: " in done.stderr), done.stderr
        assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- a full filesystem

@pytest.fixture
def small_filesystem(tmp_path):
    """A 1 MiB tmpfs where the machine allows mounting one (root here); otherwise None."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


FULL_DISK_WRAPPER = """
import errno, os, runpy, sys
import tfjs_parity.files as files
real = files.os.replace
def full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
files.os.replace = full
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_full_disk_is_one_line_and_leaves_nothing(small_filesystem, good_results, tmp_path):
    if small_filesystem is not None:  # a real full filesystem: the weights alone do not fit
        done = run_script("create_keras_model.py", "--units", "300", "--out-dir", small_filesystem)
        folder = small_filesystem
    else:  # no mount allowed: the fault injected where every file is renamed into place
        folder = good_results
        done = subprocess.run([sys.executable, "-c", FULL_DISK_WRAPPER, str(ROOT / "create_keras_model.py"),
                               *SMALL_MODEL, "--out-dir", folder], cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert_one_line_error(done, "cannot write", "No space left on device")
    assert hidden_entries(folder) == []


# ---------------------------------------------------------------- interruptions and orphans

@pytest.fixture
def long_node_run(good_results):
    """run_node.py busy timing for a minute, with its Node child found."""
    child = start_script("run_node.py", "--out-dir", good_results, "--repeat", "100000000", "--budget", "60")
    marker = str(good_results)
    assert wait_for(lambda: any("inference_in_node.js" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                                for p in processes_mentioning(marker) if p != child.pid), 60)
    yield child, marker
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def test_kill_9_of_run_node_leaves_no_node_behind(long_node_run):
    child, marker = long_node_run
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert no_orphans_within(marker) == []


@pytest.mark.parametrize("signum, status, word", [(signal.SIGTERM, 143, "terminated"),
                                                  (signal.SIGINT, 130, "interrupted")])
def test_sigterm_or_ctrl_c_of_run_node_is_one_line_and_stops_node(long_node_run, signum, status, word):
    child, marker = long_node_run
    os.killpg(child.pid, signum)  # a terminal's Ctrl-C goes to the whole foreground group
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == status
    assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith(word), stderr
    assert no_orphans_within(marker) == []


def test_ctrl_c_of_create_keras_model_is_one_line_and_exit_130(tmp_path):
    out, paused = tmp_path / "out", tmp_path / "paused"
    child = start_script("create_keras_model.py", *SMALL_MODEL, "--out-dir", out,
                         env={"TFJS_PARITY_PAUSE_AT": "model built", "TFJS_PARITY_PAUSED": paused})
    assert wait_for(paused.exists, 120), child.communicate()  # TensorFlow imported, the model built
    os.killpg(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert stderr.strip().startswith("interrupted") and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists() or (hidden_entries(out) == [] and not list(out.glob("keras_model_*")))


# ---------------------------------------------------------------- outputs that would destroy something

@pytest.mark.parametrize("target, fragment", [
    ("keras_model_tfjs_node.json", "one of the captures being compared"),
    ("keras_model_python.json", "one of the captures being compared"),
    ("fifo", "a device, FIFO or socket"),
    ("folder", "a folder"),
    ("/dev/null", "a device, FIFO or socket"),
    ("link", "a symlink"),
])
def test_json_and_html_refuse_to_overwrite_an_input_or_a_non_regular_file(good_results, target, fragment):
    os.mkfifo(good_results / "fifo")
    (good_results / "folder").mkdir()
    (good_results / "link").symlink_to(good_results / "keras_model_tfjs_node.json")
    path = Path(target) if target.startswith("/") else good_results / target
    before = {p.name: p.read_bytes() for p in good_results.glob("keras_model_*")}
    for flag in ("--json", "--html"):
        done = run_script("compare_outputs.py", "--out-dir", good_results, flag, path)
        assert_one_line_error(done, flag, fragment)
    assert {p.name: p.read_bytes() for p in good_results.glob("keras_model_*")} == before
    assert stat_kind(good_results / "fifo") == "fifo"


def stat_kind(path):
    import stat
    return "fifo" if stat.S_ISFIFO(os.lstat(path).st_mode) else "other"


def test_out_dir_that_cannot_be_a_folder_or_written_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    for script in ("create_keras_model.py", "run_node.py", "run_browser.py"):
        assert_one_line_error(run_script(script, "--out-dir", tmp_path / "a_file"), "is not a folder")
        assert_one_line_error(run_script(script, "--out-dir", "/proc/no/such"), "--out-dir /proc/no/such")
    if os.geteuid() == 0:  # root writes through permissions: a read-only mount shows it instead
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)])
        if done.returncode != 0:
            return
    else:
        read_only.chmod(0o555)
    try:
        assert_one_line_error(run_script("create_keras_model.py", "--out-dir", read_only), "cannot write there")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(read_only)])


def test_many_flags_give_a_bounded_file_name_and_keep_every_flag(good_results):
    chosen = {f"WEBGL_PACK_{name}": True for name in ("ARRAY_OPERATIONS", "BINARY_OPERATIONS", "CLIP",
                                                      "CONV2DTRANSPOSE", "DEPTHWISECONV", "IMAGE_OPERATIONS",
                                                      "NORMALIZATION", "REDUCE", "UNARY_OPERATIONS")}
    chosen.update(TOPOLOGICAL_SORT_CACHE_MAX_ENTRIES=50000, CPU_HANDOFF_SIZE_THRESHOLD=128)
    flags = [f"--flag={name}={str(value).lower()}" for name, value in chosen.items()]
    done = check(run_script("run_node.py", "--out-dir", good_results, "--backend", "cpu", "--repeat", "1", *flags))
    written = Path(done.stdout.split("wrote ", 1)[1].split(" (", 1)[0])
    assert written.is_file() and len(written.name) <= 170
    capture = Capture.load(written)
    assert capture.metadata["flags"] == chosen
    check(run_script("compare_outputs.py", "--out-dir", good_results))


# ---------------------------------------------------------------- usage

@pytest.mark.parametrize("script, args, fragment", [
    ("compare_outputs.py", ["--rtol", "-1"], "--rtol"),
    ("compare_outputs.py", ["--rtol", "nan"], "--rtol"),
    ("compare_outputs.py", ["--max-ulp", "-5"], "--max-ulp"),
    ("run_node.py", ["--flag", "WEBGL_PACK=1e999"], "--flag"),
    ("create_keras_model.py", ["--seed", str(2 ** 64)], "--seed"),
    ("create_keras_model.py", ["--input-seed", "-1"], "--input-seed"),
])
def test_bad_numbers_are_refused_by_their_flag(script, args, fragment, tmp_path):
    done = run_script(script, "--out-dir", tmp_path, *args)
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_model_too_big_for_this_machine_is_refused_before_tensorflow_runs(tmp_path):
    done = run_script("create_keras_model.py", "--units", "100000", "--out-dir", tmp_path)
    assert_one_line_error(done, "--units 100000", "GiB")


# ---------------------------------------------------------------- diagnosis and usability

def test_compare_of_named_files_uses_their_folder_and_lists_python_once(good_results, tmp_path):
    done = check(run_script("compare_outputs.py", good_results / "keras_model_python.json",
                            good_results / "keras_model_tfjs_node.json", "--full"))
    assert "tfjs python" not in done.stdout
    assert done.stdout.count("tf.Keras Python vs tfjs node/tensorflow") == 1


def test_gate_fails_on_a_one_ulp_weight_change_that_the_limits_allow(good_results):
    path = good_results / "keras_model_tfjs_node.json"
    capture = Capture.load(path)
    kernel = capture.tensors["dense_1_weights"][0]
    kernel[0, 0] = np.nextafter(kernel[0, 0], np.float32(np.inf))
    capture.save(path)
    done = run_script("compare_outputs.py", "--out-dir", good_results, "--rtol", "0.5")
    assert done.returncode == 1 and "verdict mismatch" in done.stdout, done.stdout
    assert "np.int64" not in done.stdout and f"{float(kernel[0, 0]):.9g}" in done.stdout
    check(run_script("compare_outputs.py", "--out-dir", good_results, "--rtol", "0.5", "--allow-mismatch"))


def test_a_closed_pipe_is_not_a_traceback(good_results):
    done = subprocess.run(f"{sys.executable} compare_outputs.py --out-dir {good_results} --full | head -1",
                          shell=True, cwd=ROOT, capture_output=True, text=True)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def _edit_capture(path, change):
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("name, change, fragment", [
    ("keras_model_float64.json",
     lambda d: d["dense_1_weights"].__setitem__(0, {"dtype": "float32", "shape": [2, 2], "data": [0, 0, 0, 0]}),
     "dense_1_weights[0] has shape"),
    ("keras_model_tfjs_node.json",
     lambda d: d["metadata"]["inputs"].__setitem__("input", {"dtype": "float32", "shape": [1, 3], "data": [1, 1, 1]}),
     "input 'input' has shape [1, 3]"),
    ("keras_model_tfjs_node.json", lambda d: d["dense_2_output"].append(d["dense_2_output"][0]),
     "dense_2_output has 1 tensors in python/tensorflow but 2"),
])
def test_full_refuses_a_capture_that_does_not_fit_the_model_in_one_line(good_results, name, change, fragment):
    _edit_capture(good_results / name, change)
    done = run_script("compare_outputs.py", "--out-dir", good_results, "--full")
    assert_one_line_error(done, fragment)
