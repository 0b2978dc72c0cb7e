"""tfjs under Node (@tensorflow/tfjs-node): run inference_in_node.js, which writes its
capture straight to a safetensors file, and read it back (lazily)."""
import json
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .. import KitError, processes
from ..capture import read_safetensors
from ..files import staging_file
from ..paths import NODE_MODULES, NODE_SCRIPT
from ..progress import PROGRESS_LINE, Progress
from ..wire import NODE_BACKENDS

NAME = "node"
SCRIPT = "run_node.py"
BACKENDS = NODE_BACKENDS  # wire.json's, which inference_in_node.js checks --backend against
TIMEOUT = 300  # seconds a backend's Node may take, from when the model is there


@dataclass
class Options:
    timeout: float = TIMEOUT  # seconds a backend's Node may take, from when the model is there


def run(job):
    """Run the tfjs model at job.model_json under Node, one fresh process per backend; yield
    (backend, Capture backed by a file in job.out_dir, or the KitError that backend raised)
    as each ends.

    With job.go (a steps.ReadySignal): the first backend's Node starts at once and reads the model only
    once go's line arrives (KitError when it does not); the timeout counts from then."""
    node = shutil.which("node")
    if node is None:
        raise KitError("Node.js (`node`) not found on PATH; install Node 18 or newer, then run `make setup`")
    if not (NODE_MODULES / "@tensorflow" / "tfjs-node").is_dir():
        raise KitError(f"{NODE_MODULES}/@tensorflow/tfjs-node is missing; run `make setup`")
    go = job.go
    if go is None and not Path(job.model_json).is_file():
        raise KitError(f"{job.model_json} not found; run `python create_keras_model.py` first")
    for backend in job.backends:
        try:
            result = _run_one(node, job, backend, go)
        except KitError as error:
            result = error
        if go is not None:
            if not go.wait():  # no model: nothing to run on any backend
                raise go.missing()
            go = None  # the model is there: the next backends start as usual
        yield backend, result


def _run_one(node, job, backend, go=None):
    model_json, staging_dir, timeout = job.model_json, job.out_dir, job.option("timeout", TIMEOUT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    fd, out = staging_file(staging_dir, f"node_{backend}", ".safetensors")
    os.close(fd)
    command = [node, str(NODE_SCRIPT), "--model", str(model_json), "--out", out, "--backend", backend,
               "--flags", json.dumps(job.flags or {}), "--metadata", json.dumps(job.metadata or {}),
               "--repeat", str(job.repeat), "--budget", str(job.budget), "--repeat-check", str(job.repeat_check),
               *(["--wait"] if go else [])]
    lines, timed_out = [], threading.Event()
    try:
        with Progress(f"node/{backend}") as progress:
            # its own process group, dying with the kit: an interrupted kit leaves no Node behind
            child = processes.start(command, stdin=subprocess.PIPE if go else subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
                                    env=env)

            def stop():
                timed_out.set()
                processes.stop(child)
            watchdog = threading.Timer(timeout, stop)
            if go is None:
                watchdog.start()
            else:
                threading.Thread(target=_release, args=(go, child, watchdog), daemon=True).start()
            try:
                for line in child.stderr:  # progress lines as they come; the rest for errors
                    match = PROGRESS_LINE.match(line.strip())
                    if match:
                        progress.update(int(match[1]), int(match[2]))
                    else:
                        lines.append(line)
                child.wait()
            finally:
                watchdog.cancel()
                processes.stop(child)
                child.stderr.close()
        if timed_out.is_set():
            raise KitError(f"{NODE_SCRIPT.name} on backend {backend} did not finish within {timeout} s")
        if child.returncode < 0:  # a crash of Node itself (an abort in a native kernel, a signal)
            said = _last_error_line("".join(lines))
            raise KitError(f"{NODE_SCRIPT.name} crashed ({signal.Signals(-child.returncode).name})"
                           + ("" if said == "(no output)" else f"; its last words: {said}"))
        if child.returncode != 0:
            said = _last_error_line("".join(lines))  # the run's own 'failed at node X (Op): ...', else tfjs's words
            if said.startswith("failed: "):  # it could not say where (a WASM trap): a fresh Node finds the point
                said = _locate(node, job, backend, timeout) or said
            raise KitError(said if said.startswith("failed") else f"{NODE_SCRIPT.name} failed: {said}")
        capture = read_safetensors(out)
    except BaseException:
        Path(out).unlink(missing_ok=True)
        raise
    if capture.metadata.get("backend") != backend:
        Path(out).unlink(missing_ok=True)
        raise KitError(f"asked Node for backend {backend} but the capture says {capture.metadata.get('backend')}")
    return capture


def _locate(node, job, backend, timeout):
    """'failed at node X (Op): ...' from a fresh Node in locate mode (each point executed
    alone, from the first), or None when it finds none within `timeout`."""
    command = [node, str(NODE_SCRIPT), "--model", str(job.model_json), "--out", os.devnull, "--backend", backend,
               "--flags", json.dumps(job.flags or {}), "--locate"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    child = processes.start(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, errors="replace", env=env)
    try:
        _, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        processes.stop(child)
    said = _last_error_line(stderr)
    return said if said.startswith("failed at ") else None


def _release(go, child, watchdog):
    """Once `go`'s line arrives, pass it on to the waiting Node and start its clock; when
    stdin ends instead, close Node's (it then stops with an error)."""
    arrived = go.wait()
    try:
        if arrived:
            child.stdin.write("\n")
        child.stdin.close()
    except (OSError, ValueError):
        return  # Node is gone already
    if arrived:
        watchdog.start()


def _last_error_line(stderr):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    line = (errors or lines or ["(no output)"])[-1]
    return line[len("error:"):].strip() if line.startswith("error:") else line
