"""Shared helpers: run the kit's scripts for real, as a user would, in a scratch folder."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # zoo.py, the user-like models
from zoo import ZOO  # noqa: E402

SMALL_MODEL = ["--depth", "3", "--units", "8"]  # the small model: fast, same code paths

# The tests send Ctrl-C (SIGINT) to the kit's scripts as a terminal does to its foreground
# command, whose SIGINT is never ignored. When pytest itself runs as a background job of a
# non-interactive shell (`make test &`, `nohup ... &`), it starts with SIGINT ignored, and
# every script it starts would inherit that and run on through the test's Ctrl-C. A handler
# here (not SIG_IGN) gives each child the default disposition back, as a terminal would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def wait_for(condition, timeout=60.0, step=0.02):
    """The condition's first true value within `timeout` seconds (else its last value): for
    waiting on a state a program reports, never on a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def run_script(script, *args, env=None, timeout=600):
    """Run one of the kit's top-level scripts with this Python; return the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def check(done):
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def assert_one_line_error(done, *fragments):
    """An expected failure: exit 2 and one 'error:' line holding each fragment, no traceback."""
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in done.stderr


def leftovers(folder):
    """Temporary files a failed write might have left behind."""
    return sorted(p.name for p in Path(folder).rglob("*") if p.name.startswith(".") or p.suffix == ".tmp")


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """The three captures of the small model, made by the real scripts on the real runtimes."""
    out = tmp_path_factory.mktemp("small_study")
    check(run_script("create_keras_model.py", *SMALL_MODEL, "--out-dir", out))
    check(run_script("run_node.py", "--out-dir", out))
    check(run_script("run_browser.py", "--out-dir", out))
    return out


def run_module(module, *args, env=None, timeout=600):
    """Run `python -m module` of the kit (the one command: tfjs_parity.study)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def study_run(tmp_path_factory):
    """(folder, CompletedProcess) of the one command, `make run`'s: the original study's
    model through Python, Node and the browser, steps overlapped."""
    out = tmp_path_factory.mktemp("default_study")
    return out, check(run_module("tfjs_parity.study", "--out-dir", out))


@pytest.fixture(scope="session")
def default_study(study_run):
    """The original study's model (the defaults), through Python, Node and the browser."""
    return study_run[0]


NODE_FILES = {"tensorflow": "keras_model_tfjs_node.json", "cpu": "keras_model_tfjs_node_cpu.json",
              "wasm": "keras_model_tfjs_node_wasm.json"}
BROWSER_FILES = {"webgl": "keras_model_tfjs_browser.json", "wasm": "keras_model_tfjs_browser_wasm.json",
                 "cpu": "keras_model_tfjs_browser_cpu.json", "webgpu": "keras_model_tfjs_browser_webgpu.json"}
F16_FILE = "keras_model_tfjs_browser_webgl_f16.json"


def copy_study(source, target, captures=("keras_model_python.json", "keras_model_float64.json")):
    """A new folder holding `source`'s converted model and the given captures."""
    shutil.copytree(source / "keras_converted", target / "keras_converted")
    for name in captures:
        shutil.copy(source / name, target / name)
    return target


@pytest.fixture(scope="session")
def matrix(small_study, tmp_path_factory):
    """The small model on every backend, plus WebGL with float16 textures."""
    out = copy_study(small_study, tmp_path_factory.mktemp("matrix"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "3"))
    check(run_script("run_browser.py", "--out-dir", out, "--backend", "all", "--repeat", "3"))
    check(run_script("run_browser.py", "--out-dir", out, "--precision", "f16", "--repeat", "3"))
    return out


def corrupt_weight(model_dir, weight_name, change):
    """Apply `change` (array -> array) to one weight in the converted model's shard file."""
    manifest = json.loads((model_dir / "model.json").read_text())["weightsManifest"]
    assert len(manifest) == 1 and len(manifest[0]["paths"]) == 1
    shard = model_dir / manifest[0]["paths"][0]
    data = np.frombuffer(shard.read_bytes(), dtype="<f4").copy()
    offset = 0
    for weight in manifest[0]["weights"]:
        size = int(np.prod(weight["shape"]))
        if weight["name"] == weight_name:
            data[offset:offset + size] = change(data[offset:offset + size].reshape(weight["shape"])).ravel()
            shard.write_bytes(data.astype("<f4").tobytes())
            return
        offset += size
    raise AssertionError(f"no weight {weight_name}")


@pytest.fixture(scope="session")
def zoo_files(tmp_path_factory):
    """Every zoo model, saved as its user would (.h5, SavedModel, Keras 3 .keras)."""
    folder = tmp_path_factory.mktemp("zoo")
    subprocess.run([sys.executable, str(ROOT / "tests" / "zoo.py"), str(folder)], check=True, capture_output=True)
    return {name: folder / file for name, file in ZOO.items()}


def run_pipeline(model_file, out):
    """Steps 1 to 4 on `model_file`, as a user runs them; the --full JSON result."""
    check(run_script("create_keras_model.py", "--model", model_file, "--out-dir", out, "--repeat", "1"))
    check(run_script("run_node.py", "--out-dir", out, "--backend", "all", "--repeat", "1"))
    check(run_script("run_browser.py", "--out-dir", out, "--repeat", "1"))
    done = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "full.json"))
    return done, json.loads((out / "full.json").read_text())


@pytest.fixture(scope="session")
def zoo_runs(zoo_files, tmp_path_factory):
    """{name: (out dir, compare's stdout, --full JSON)} for every zoo model; two at a time."""
    root = tmp_path_factory.mktemp("zoo_runs")

    def one(name):
        done, document = run_pipeline(zoo_files[name], root / name)
        return name, (root / name, done.stdout, document)
    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, ZOO))
