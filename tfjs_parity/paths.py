"""Where the kit lives and what its files are called (the original study's names)."""
import hashlib
from pathlib import Path

from .wire import CONVERTED_DIR, INPUT_FILE, MODEL_FILE, WIRE_FILE  # noqa: F401 (the names every side reads: wire.json)

ROOT = Path(__file__).resolve().parent.parent
NODE_SCRIPT = ROOT / "inference_in_node.js"
BROWSER_PAGE = ROOT / "inference_in_browser.html"
COMMON_JS = ROOT / "inference_common.js"
KINDS_JS = sorted((ROOT / "tfjs_parity" / "kinds").glob("*.js"))  # each kind of model's JS half (kinds/)
NODE_MODULES = ROOT / "node_modules"

# Results go beside the kit, not into whatever directory the user happens to be in, so the
# four scripts find each other's files wherever they are started from.
DEFAULT_OUT_DIR = ROOT / "results"


# capture file -> the script that writes it (named in "file not found" errors)
PYTHON_CAPTURE = "keras_model_python.json"
REFERENCE_CAPTURE = "keras_model_float64.json"  # the exact answer: the model in float64
NODE_CAPTURE = "keras_model_tfjs_node.json"
BROWSER_CAPTURE = "keras_model_tfjs_browser.json"
MADE_BY = {
    PYTHON_CAPTURE: "create_keras_model.py",
    REFERENCE_CAPTURE: "create_keras_model.py",
    NODE_CAPTURE: "run_node.py",
    BROWSER_CAPTURE: "run_browser.py",
}


def capture_file_name(runtime, backend, variant=""):
    """The study's names for the study's runs (Node on tensorflow, the browser on WebGL);
    keras_model_tfjs_<runtime>_<backend>[_<variant>].json for every other run, so runs of
    different backends and flags never overwrite each other."""
    if runtime == "python":
        return PYTHON_CAPTURE
    study = {("node", "tensorflow"): NODE_CAPTURE, ("browser", "webgl"): BROWSER_CAPTURE}
    if not variant and (runtime, backend) in study:
        return study[(runtime, backend)]
    name = f"keras_model_tfjs_{runtime}_{backend}" + (f"_{variant}" if variant else "")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        # many --flags: keep the start readable, hash the tail (the capture's metadata keeps every flag)
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
        name = name.encode("utf-8")[:MAX_NAME_BYTES - len(digest) - 1].decode("utf-8", "ignore") + "-" + digest
    return name + ".json"


# File names stop at 255 bytes on most filesystems; a staging name adds about 40 to a capture's.
MAX_NAME_BYTES = 160


CAPTURE_SUFFIXES = (".json", ".safetensors")


def find_capture(out_dir, name):
    """The capture called `name` (a .json name) in `out_dir`, as JSON or as safetensors:
    whichever exists (the kit never leaves both); the .json path when neither does."""
    for suffix in CAPTURE_SUFFIXES:
        path = Path(out_dir) / Path(name).with_suffix(suffix)
        if path.is_file():
            return path
    return Path(out_dir) / name


def extra_captures(out_dir, skip):
    """Every keras_model_tfjs_* capture in `out_dir` not named in `skip` (.json names), sorted."""
    skip_stems = {Path(name).stem for name in skip}
    found = [p for suffix in CAPTURE_SUFFIXES for p in Path(out_dir).glob(f"keras_model_tfjs_*{suffix}")]
    return sorted(p for p in found if p.stem not in skip_stems)
