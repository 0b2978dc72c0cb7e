"""The one command (`make run`: python -m tfjs_parity.study) and the steps it starts beside
step 1, which read the model only once told it is there (--wait-for-model)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import (ROOT, SMALL_MODEL, assert_one_line_error, check, copy_study, leftovers, run_module,
                      run_script)
from test_hostile import model_id, no_orphans_within, processes_mentioning, wait_for

from tfjs_parity.capture import Capture
from tfjs_parity.paths import find_capture

pytestmark = pytest.mark.slow  # the real steps, as subprocesses: see pytest.ini


FIREFOX = ("run_browser.py", "--browser", "firefox", "--backend", "webgl,cpu")
WEBKIT = ("run_browser.py", "--browser", "webkit", "--backend", "webgl,cpu")


def assert_same_bits(one, other, names):
    """Each capture `names` of folder `one` holds the very bits of the same one in `other`."""
    for name in names:
        a, b = Capture.load(one / name), Capture.load(other / name)
        assert list(a.tensors) == list(b.tensors), name
        for key in a.tensors:
            assert all(x.tobytes() == y.tobytes() for x, y in zip(a.tensors[key], b.tensors[key])), (name, key)


def start_waiting(script, out, *args, env=None):
    return subprocess.Popen([sys.executable, str(ROOT / script), "--out-dir", str(out), *args, "--wait-for-model"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=dict(os.environ, **(env or {})))


def test_the_one_command_prints_each_step_then_the_study_report_exactly(study_run):
    out, done = study_run
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"wrote {out}/keras_converted/"), lines[0]
    assert lines[1].startswith(f"wrote {out}/keras_model_tfjs_node.json (node/tensorflow"), lines[1]
    assert lines[2].startswith(f"wrote {out}/keras_model_tfjs_browser.json (browser/webgl"), lines[2]
    assert lines[3] == ""
    expected = (ROOT / "tests" / "data" / "original_study_report.txt").read_text()
    assert "\n".join(lines[4:]).strip() == expected.strip()
    assert done.stderr == ""


def test_steps_started_before_the_model_read_the_one_they_are_told_of(small_study, tmp_path):
    """Node and the browser start while an older model is still in the folder; step 1 then
    replaces it; told to go on, both capture the new one (a step that had read the model
    before the line would hold the old model's id, and compare would call it stale)."""
    out = copy_study(small_study, tmp_path / "results")
    old = model_id(out)
    waiting = [start_waiting(script, out, *args)
               for script, *args in (("run_node.py",), ("run_browser.py",), FIREFOX, WEBKIT)]
    try:
        check(run_script("create_keras_model.py", "--depth", "2", "--units", "5", "--out-dir", out))
        assert model_id(out) != old
        for child in waiting:
            stdout, stderr = child.communicate("\n", timeout=300)
            assert child.returncode == 0, stderr
    finally:
        for child in waiting:
            child.kill()
            child.wait()
    for name in ("keras_model_tfjs_node.json", "keras_model_tfjs_browser.json", "keras_model_tfjs_firefox_webgl.json",
                 "keras_model_tfjs_firefox_cpu.json", "keras_model_tfjs_webkit_webgl.json",
                 "keras_model_tfjs_webkit_cpu.json"):
        assert Capture.load(find_capture(out, name)).metadata["model_id"] == model_id(out)
    check(run_script("compare_outputs.py", "--out-dir", out))
    assert leftovers(out) == []


@pytest.mark.parametrize("step", [("run_node.py",), ("run_browser.py",), FIREFOX, WEBKIT],
                         ids=["node", "chromium", "firefox", "webkit"])
def test_a_waiting_step_whose_stdin_ends_stops_with_one_line(tmp_path, step, request):
    """...and leaves nothing in TMPDIR but the kit's private profiles folder (Chromium, stopped
    without closing by itself, leaves its singleton folder there: the kit removes it)."""
    temp = Path(tempfile.mkdtemp(dir="/tmp"))  # short: Chromium's socket path must fit in 108 bytes
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    child = start_waiting(*step[:1], tmp_path / "out", *step[1:], env={"TMPDIR": str(temp)})
    browser = "firefox" if "firefox" in step else "webkit" if "webkit" in step else "chromium"
    if browser == "webkit":  # its MiniBrowser is up (its command line holds no profile: its HOME is one)
        assert wait_for(lambda: processes_mentioning("webkit2gtk-4.1/MiniBrowser")
                        and any(temp.glob(f"tfjs_parity-webkit-*/.webkit-profile.~{child.pid}~*")), 60)
    elif step[0] == "run_browser.py":  # its browser is up and waiting
        assert wait_for(lambda: processes_mentioning(f".{browser}-profile.~{child.pid}~"), 60)
    stdout, stderr = child.communicate("", timeout=120)
    done = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    assert_one_line_error(done, "--wait-for-model", "create_keras_model.py")
    assert no_orphans_within(f"~{child.pid}~") == []
    assert leftovers(tmp_path) == []
    left = [p for p in temp.iterdir()]
    assert [p.name for p in left] in ([], [f"tfjs_parity-{browser}-{os.getuid()}"]), left
    assert all(list(p.iterdir()) == [] for p in left), left  # the profiles folder, empty


def test_the_one_command_stops_every_step_when_step_1_dies(small_study, tmp_path):
    """Step 1 killed (SIGKILL) as it commits: the run says so and ends 128 + 9; Node and
    Chromium, started beside it, are stopped; the results that were there are untouched."""
    out = copy_study(small_study, tmp_path / "results",
                     ("keras_model_python.json", "keras_model_float64.json", "keras_model_tfjs_node.json"))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    done = run_module("tfjs_parity.study", "--out-dir", out, env={"TFJS_PARITY_KILL_AT": "staged"})
    assert done.returncode == 128 + signal.SIGKILL, done
    assert done.stderr.strip() == "error: create_keras_model.py was killed by SIGKILL", done.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert no_orphans_within(str(out)) == [] and no_orphans_within("tfjs_parity-chromium") == []


def signalled_study(out, *signals):
    """(exit status, stderr's lines) of the one command sent `signals` ((signal, seconds
    after the last), ...) once step 1 has built its model (held there until the first signal)
    and Chromium is starting beside it."""
    paused = out.parent / f"{out.name}.paused"
    child = subprocess.Popen([sys.executable, "-m", "tfjs_parity.study", "--out-dir", str(out)], cwd=ROOT,
                             env=dict(os.environ, TFJS_PARITY_PAUSE_AT="model built", TFJS_PARITY_PAUSED=str(paused)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert wait_for(lambda: paused.exists() and processes_mentioning(f"run_browser.py --out-dir {out}"), 120)
    for signum, after in signals:
        time.sleep(after)
        child.send_signal(signum)
    _, stderr = child.communicate(timeout=60)
    return child.returncode, stderr.strip().splitlines()


def test_ctrl_c_stops_the_one_command_with_one_line(tmp_path):
    code, lines = signalled_study(tmp_path, (signal.SIGINT, 0))
    assert code == 130, lines
    assert len(lines) == 1 and lines[0].startswith("interrupted (Ctrl-C)"), lines
    assert no_orphans_within(str(tmp_path)) == [] and no_orphans_within("tfjs_parity-chromium") == []
    assert not list(tmp_path.glob("keras_model_*")) and leftovers(tmp_path) == []


def test_a_failing_step_2_is_its_own_one_line_and_no_report(tmp_path):
    """No Node on PATH: step 2 says so in one line; steps 1 and 3 still report what they
    wrote; step 4, started up beside them, is stopped without a word (and no report)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    done = run_module("tfjs_parity.study", "--out-dir", tmp_path,
                      env={"PATH": str(tmp_path / "nowhere"), "CHROME_PATH": os.environ.get("CHROME_PATH", chromium)})
    assert done.returncode == 2, done
    assert done.stderr.strip() == "error: Node.js (`node`) not found on PATH; install Node 18 or newer, then run " \
                                  "`make setup`", done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "keras_converted" in lines[0] and "keras_model_tfjs_browser.json" in lines[1], lines
    assert no_orphans_within(str(tmp_path)) == []


@pytest.mark.parametrize("stdin", ["ended", "closed"])
def test_compare_told_nothing_stops_with_one_line(tmp_path, stdin):
    command = f"{sys.executable} {ROOT / 'compare_outputs.py'} --out-dir {tmp_path} --wait-for-captures"
    done = subprocess.run(["bash", "-c", ("exec 0<&-; " if stdin == "closed" else "") + command],
                          input="" if stdin == "ended" else None, capture_output=True, text=True, timeout=60)
    assert_one_line_error(done, "--wait-for-captures: stdin ended", "run_node.py or run_browser.py")


def test_a_reader_that_stops_early_ends_the_one_command_quietly(tmp_path):
    """`... | head -1`: the run still ends 0, and no step says it was stopped."""
    done = subprocess.run(["bash", "-o", "pipefail", "-c",
                           f"{sys.executable} -m tfjs_parity.study --out-dir {tmp_path} | head -1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.startswith(f"wrote {tmp_path}/keras_converted/")
    assert no_orphans_within(str(tmp_path)) == []


def test_sigterm_then_ctrl_c_while_it_stops_is_still_one_line(tmp_path):
    code, lines = signalled_study(tmp_path, (signal.SIGTERM, 0), (signal.SIGINT, 0.2))
    assert code == 128 + signal.SIGTERM, lines
    assert len(lines) == 1 and lines[0].startswith("terminated (SIGTERM)"), lines
    assert no_orphans_within(str(tmp_path)) == [] and leftovers(tmp_path) == []


def test_an_error_a_library_makes_of_a_swallowed_signal_is_that_signal(tmp_path):
    """SIGTERM inside an import that swallows it and then fails otherwise (jax, half-imported
    under tensorflowjs, raised AttributeError): one 'terminated' line and 143, no traceback."""
    script = tmp_path / "step.py"
    script.write_text("import os, signal\nfrom tfjs_parity.cli import run_main\n\n"
                      "def main():\n    try:\n        os.kill(os.getpid(), signal.SIGTERM)\n"
                      "    except BaseException:\n        pass  # a library swallowing it\n"
                      "    raise AttributeError('partially initialized module')\n\nrun_main(main)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 128 + signal.SIGTERM and len(lines) == 1, done
    assert lines[0].startswith("terminated (SIGTERM)"), lines


@pytest.mark.parametrize("kind", ["layers", "graph"])
def test_the_one_command_on_your_model_gives_the_captures_and_verdicts_of_its_steps_one_by_one(zoo_files, kind,
                                                                                                tmp_path):
    """python -m tfjs_parity.study --model PATH (issue 34): the zoo's CNN (a SavedModel), as a
    layers model and as a graph model: every capture bit for bit the one the four steps make
    one by one, the same verdicts, and the full verdict report."""
    model = zoo_files["cnn"]
    overlapped, one_by_one = tmp_path / "overlapped", tmp_path / "one_by_one"
    done = check(run_module("tfjs_parity.study", "--model", model, "--as", kind, "--out-dir", overlapped))
    check(run_script("create_keras_model.py", "--model", model, "--as", kind, "--out-dir", one_by_one))
    check(run_script("run_node.py", "--out-dir", one_by_one))
    check(run_script("run_browser.py", "--out-dir", one_by_one))
    verdicts = []
    for folder in (overlapped, one_by_one):
        check(run_script("compare_outputs.py", "--out-dir", folder, "--full", "--json", folder / "full.json"))
        document = json.loads((folder / "full.json").read_text())
        verdicts.append({c["label"]: [layer["verdict"] for layer in c["layers"]] for c in document["captures"]})
    names = sorted(p.name for p in overlapped.glob("keras_model_*.json"))
    assert names == sorted(p.name for p in one_by_one.glob("keras_model_*.json")) and len(names) == 4, names
    assert_same_bits(overlapped, one_by_one, names)
    assert verdicts[0] == verdicts[1] and set(verdicts[0]) == {"python/tensorflow", "node/tensorflow", "browser/webgl"}
    assert "vs float64" in done.stdout and "verdict" in done.stdout  # the full report, not only the study's table
    assert leftovers(overlapped) == []


def test_the_one_command_on_a_model_that_is_not_there_ends_with_step_1_s_line(tmp_path):
    done = run_module("tfjs_parity.study", "--model", tmp_path / "nowhere.h5", "--out-dir", tmp_path / "out")
    assert_one_line_error(done, "--model", "nowhere.h5", "not found")
    assert not list((tmp_path / "out").glob("keras_model_*"))


MATRIX_STEPS = [("run_node.py", "--backend", "all"), ("run_browser.py", "--backend", "all"),
                ("run_browser.py", "--precision", "f16"),
                ("run_browser.py", "--browser", "firefox", "--backend", "webgl,wasm,cpu"),
                ("run_browser.py", "--browser", "webkit", "--backend", "all")]


def test_the_overlapped_matrix_gives_the_numbers_and_verdicts_of_its_steps_one_by_one(tmp_path):
    """make matrix (python -m tfjs_parity.study --matrix): every capture bit for bit the one
    the steps make run one after the other (make matrix's old way), the same verdicts; the
    output in a fixed order, step by step, then the report."""
    overlapped, one_by_one = tmp_path / "overlapped", tmp_path / "one_by_one"
    done = check(run_module("tfjs_parity.study", "--matrix", "--out-dir", overlapped))
    check(run_script("create_keras_model.py", "--out-dir", one_by_one))
    for script, *args in MATRIX_STEPS:
        check(run_script(script, "--out-dir", one_by_one, *args))
    check(run_script("compare_outputs.py", "--out-dir", one_by_one, "--json", one_by_one / "report.json"))
    names = sorted(p.name for p in overlapped.glob("keras_model_*.json"))
    assert names == sorted(p.name for p in one_by_one.glob("keras_model_*.json")) and len(names) == 16, names
    assert_same_bits(overlapped, one_by_one, names)
    import json
    reports = [json.loads((folder / "report.json").read_text()) for folder in (overlapped, one_by_one)]
    verdicts = [{c["label"]: [layer["verdict"] for layer in c["layers"]] for c in r["captures"]} for r in reports]
    assert verdicts[0] == verdicts[1]
    written = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("wrote ")]
    order = ["keras_converted/", "keras_model_tfjs_node.json", "keras_model_tfjs_node_cpu.json",
             "keras_model_tfjs_node_wasm.json", "keras_model_tfjs_browser.json", "keras_model_tfjs_browser_wasm.json",
             "keras_model_tfjs_browser_cpu.json", "keras_model_tfjs_browser_webgpu.json",
             "keras_model_tfjs_browser_webgl_f16.json", "keras_model_tfjs_firefox_webgl.json",
             "keras_model_tfjs_firefox_wasm.json", "keras_model_tfjs_firefox_cpu.json",
             "keras_model_tfjs_webkit_webgl.json", "keras_model_tfjs_webkit_wasm.json", "keras_model_tfjs_webkit_cpu.json"]
    assert [Path(w).name + ("/" if w.endswith("/") else "") for w in written[:len(order)]] == order, written
    assert "********** tf.Keras Python vs tfjs Browser **********" in done.stdout
    assert done.stdout.rstrip().endswith(f"wrote {overlapped / 'report.html'} (open it in a browser)")
    assert leftovers(overlapped) == []


def test_a_failing_run_ends_the_matrix_with_its_line_and_no_report(tmp_path):
    """No Node: the matrix stops at its first run, says why in one line, and the browsers and
    step 4 waiting for their turn are stopped without a word."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    done = run_module("tfjs_parity.study", "--matrix", "--out-dir", tmp_path,
                      env={"PATH": str(tmp_path / "nowhere"), "CHROME_PATH": os.environ.get("CHROME_PATH", chromium)})
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == ["error: Node.js (`node`) not found on PATH; install Node 18 or "
                                                "newer, then run `make setup`"], done.stderr
    assert not (tmp_path / "report.json").exists()
    assert no_orphans_within(str(tmp_path)) == [] and no_orphans_within("tfjs_parity-chromium") == []
