"""tfjs under Node (@tensorflow/tfjs-node): run inference_in_node.js and read its capture."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import KitError
from ..capture import Capture
from ..paths import NODE_MODULES, NODE_SCRIPT

NAME = "node"
BACKENDS = ("tensorflow", "cpu", "wasm")


def run(model_json, backends=("tensorflow",), flags=None, repeat=10, timeout=300):
    """Run the tfjs model at `model_json` under Node, one fresh process per backend; return
    {backend: Capture or the KitError that backend raised}."""
    node = shutil.which("node")
    if node is None:
        raise KitError("Node.js (`node`) not found on PATH; install Node 18 or newer, then run `make setup`")
    if not (NODE_MODULES / "@tensorflow" / "tfjs-node").is_dir():
        raise KitError(f"{NODE_MODULES}/@tensorflow/tfjs-node is missing; run `make setup`")
    if not Path(model_json).is_file():
        raise KitError(f"{model_json} not found; run `python create_keras_model.py` first")
    results = {}
    for backend in backends:
        try:
            results[backend] = _run_one(node, model_json, backend, flags or {}, repeat, timeout)
        except KitError as error:
            results[backend] = error
    return results


def _run_one(node, model_json, backend, flags, repeat, timeout):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    with tempfile.TemporaryDirectory(prefix="tfjs_parity_node_") as tmp:
        out = Path(tmp) / "capture.json"
        command = [node, str(NODE_SCRIPT), "--model", str(model_json), "--out", str(out), "--backend", backend,
                   "--flags", json.dumps(flags), "--repeat", str(repeat)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise KitError(f"{NODE_SCRIPT.name} on backend {backend} did not finish within {timeout} s") from None
        if done.returncode != 0:
            raise KitError(f"{NODE_SCRIPT.name} failed: {_last_error_line(done.stderr)}")
        capture = Capture.load(out)
    if capture.metadata.get("backend") != backend:
        raise KitError(f"asked Node for backend {backend} but the capture says {capture.metadata.get('backend')}")
    return capture


def _last_error_line(stderr):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    line = (errors or lines or ["(no output)"])[-1]
    return line[len("error:"):].strip() if line.startswith("error:") else line
