"""What the page needs, and nothing else: the page, its scripts, the wire contract, tfjs from
the kit's own pinned npm packages, and the converted model's files; and reading back what
the page uploaded. Shared by every browser runner (Chromium, Firefox, devices)."""
import json
from pathlib import Path

from .. import KitError
from ..capture import read_safetensors
from ..paths import BROWSER_PAGE, COMMON_JS, KINDS_JS, NODE_MODULES, ROOT, WIRE_FILE

# The page's scripts and the wasm binaries, from the kit's own pinned npm packages.
TFJS_FILES = [
    "node_modules/@tensorflow/tfjs/dist/tf.min.js",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
    "node_modules/@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js",
]


def check_servable(model_json):
    """`model_json` as a Path, once the model and tfjs's files are there to be served;
    KitError naming what is missing (or a symlink, which is never served) otherwise."""
    check_tfjs_files()
    return check_model(model_json)


def check_tfjs_files():
    missing = [name for name in TFJS_FILES if not (NODE_MODULES.parent / name).is_file()]
    if missing:
        raise KitError(f"{missing[0]} is missing; run `make setup`")


def check_model(model_json):
    model_json = Path(model_json)
    if not model_json.is_file():
        raise KitError(f"{model_json} not found; run `python create_keras_model.py` first")
    if model_json.parent.is_symlink() or model_json.is_symlink():
        link = model_json.parent if model_json.parent.is_symlink() else model_json
        raise KitError(f"{link} is a symlink: the browser is served no file reached through a symlink; "
                       "copy the converted model there instead")
    return model_json


def read_upload(uploads, backend, device=None):
    """The capture `uploads` staged for `backend` (of `device`), checked to be of that
    backend; KitError otherwise (the staged file is then removed)."""
    staged = uploads.take(backend, device)
    try:
        capture = read_safetensors(staged)
        if capture.metadata.get("backend") != backend:
            raise KitError(f"asked the browser for backend {backend} but the capture says "
                           f"{capture.metadata.get('backend')}")
    except KitError:
        Path(staged).unlink(missing_ok=True)
        raise
    return capture


def routes_for(model_json):
    """What the page needs, and nothing else: the page, its scripts, tfjs, and the model files."""
    return dict(page_routes(), **model_routes(model_json))


def page_routes():
    """The page, its scripts and tfjs."""
    routes = {"/inference_in_browser.html": BROWSER_PAGE, "/inference_common.js": COMMON_JS,
              f"/{WIRE_FILE.parent.name}/{WIRE_FILE.name}": WIRE_FILE}
    for kind_js in KINDS_JS:
        routes[f"/{kind_js.relative_to(ROOT)}"] = kind_js
    for name in TFJS_FILES:
        routes[f"/{name}"] = NODE_MODULES.parent / name
    return routes


def model_routes(model_json):
    """The converted model's files (probe_plan.json and input.json included), under /model/."""
    routes = {}
    folder = Path(model_json).parent
    try:  # the weight files the manifest names, whatever their names (older converters wrote no .bin)
        manifest = json.loads(Path(model_json).read_text()).get("weightsManifest") or []
        named = {name for group in manifest for name in group.get("paths", []) if isinstance(name, str)}
    except (OSError, ValueError, AttributeError, TypeError):
        named = set()
    for file in sorted(folder.iterdir()):
        if (file.suffix in (".json", ".bin") or file.name in named) and not file.is_symlink() and file.is_file():
            routes[f"/model/{file.name}"] = file
    return routes
