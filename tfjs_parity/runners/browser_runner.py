"""tfjs in headless Chromium, driven by pyppeteer: serve the page and model on loopback,
run inference_in_browser.html, and take the capture the page uploads (binary, a tensor per
request, to a one-time path of this run's server: nothing big passes through DevTools)."""
import asyncio
import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlencode

from .. import KitError
from ..capture import read_safetensors
from ..paths import BROWSER_PAGE, COMMON_JS, NODE_MODULES
from ..progress import Progress
from ..server import PageServer, Uploads
from .node_runner import PROGRESS

NAME = "browser"
BACKENDS = ("webgl", "wasm", "cpu", "webgpu")
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# The page's scripts and the wasm binaries, from the kit's own pinned npm packages.
TFJS_FILES = [
    "node_modules/@tensorflow/tfjs/dist/tf.min.js",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
    "node_modules/@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js",
]

CHROMIUM_FLAGS = [
    # as root (CI, containers) Chromium's sandbox refuses to start; for anyone else it stays on
    *(["--no-sandbox"] if os.geteuid() == 0 else []),
    # WebGL 2 with float32 render targets on the CPU, through SwiftShader: no GPU needed.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    # WebGPU on SwiftShader's Vulkan. With --enable-unsafe-webgpu alone an earlier Chromium
    # build initialised the backend and computed zeros (the self-test catches that).
    "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    # A closed network: stop Chromium calling home at start (it retries refused hosts).
    "--disable-background-networking", "--no-first-run", "--disable-component-update", "--disable-sync",
]


def find_chromium():
    """CHROME_PATH when set, else the first Chromium or Chrome on PATH; KitError when none."""
    explicit = os.environ.get("CHROME_PATH")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise KitError(f"CHROME_PATH={explicit} is not an executable file")
        return explicit
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise KitError("no Chromium found (looked for " + ", ".join(BROWSER_NAMES) +
                   "); run `make setup` (installs Debian's chromium) or set CHROME_PATH")


def routes_for(model_json):
    """What the page needs, and nothing else: the page, its scripts, tfjs, and the model files."""
    model_dir = Path(model_json).parent
    routes = {"/inference_in_browser.html": BROWSER_PAGE, "/inference_common.js": COMMON_JS}
    for name in TFJS_FILES:
        routes[f"/{name}"] = NODE_MODULES.parent / name
    for file in sorted(model_dir.iterdir()):
        if file.is_file() and file.suffix in (".json", ".bin"):
            routes[f"/model/{file.name}"] = file
    return routes


def run(model_json, staging_dir, backends=("webgl",), flags=None, repeat=10, budget=10.0, metadata=None,
        chromium_args=(), timeout=300):
    """Run the tfjs model at `model_json` in one headless Chromium, once per backend (each in
    a fresh page); return {backend: Capture (backed by a file in `staging_dir`) or the
    KitError that backend raised}.

    `flags` are tfjs flags set before the backend starts; `metadata` is added to each
    capture's; `chromium_args` extra Chromium switches, added after the kit's own."""
    if not Path(model_json).is_file():
        raise KitError(f"{model_json} not found; run `python create_keras_model.py` first")
    missing = [name for name in TFJS_FILES if not (NODE_MODULES.parent / name).is_file()]
    if missing:
        raise KitError(f"{missing[0]} is missing; run `make setup`")
    chromium = find_chromium()
    page = {"model": "model/model.json", "flags": json.dumps(flags or {}), "repeat": repeat, "budget": budget,
            "metadata": json.dumps(metadata or {})}
    return asyncio.run(_run(chromium, CHROMIUM_FLAGS + list(chromium_args), model_json, staging_dir, backends,
                            page, timeout))


async def _run(chromium, switches, model_json, staging_dir, backends, page, timeout):
    import pyppeteer
    results = {}
    uploads = Uploads(staging_dir, backends)
    with PageServer(routes_for(model_json), uploads) as server:
        try:
            browser = await pyppeteer.launch(executablePath=chromium, headless=True, args=switches,
                                             handleSIGINT=False, handleSIGTERM=False, handleSIGHUP=False)
        except Exception as error:
            raise KitError(f"could not start {chromium}: {error}") from None
        try:
            for backend in backends:
                query = urlencode(dict(page, backend=backend, upload=uploads.path(backend)))
                staged = None
                try:
                    try:
                        await _capture_page(browser, f"{server.url}/inference_in_browser.html?{query}", backend,
                                            timeout)
                    except pyppeteer.errors.PyppeteerError as error:  # a crashed page, a navigation timeout
                        raise KitError(f"backend {backend}: the page failed ({error})") from None
                    if uploads.completed(backend) is None:
                        raise KitError(f"backend {backend}: the page finished but its capture did not arrive")
                    staged = uploads.take(backend)
                    capture = read_safetensors(staged)
                    if capture.metadata.get("backend") != backend:
                        raise KitError(f"asked the browser for backend {backend} but the capture says "
                                       f"{capture.metadata.get('backend')}")
                    results[backend] = capture
                except KitError as error:
                    results[backend] = error
                    if staged is not None:
                        Path(staged).unlink(missing_ok=True)
        finally:
            await browser.close()
    return results


async def _capture_page(browser, url, backend, timeout):
    import pyppeteer
    page = await browser.newPage()
    console = []
    with Progress(f"browser/{backend}") as progress:
        def on_console(message):
            match = PROGRESS.match(message.text)
            if match:
                progress.update(int(match[1]), int(match[2]))
            else:
                console.append(message.text)
        page.on("console", on_console)
        page.on("pageerror", lambda error: console.append(f"page error: {error}"))
        try:
            await page.goto(url)
            try:
                await page.waitForFunction("window.kitResult !== undefined", timeout=timeout * 1000)
            except pyppeteer.errors.TimeoutError:
                raise KitError(f"backend {backend}: the page did not finish within {timeout} s; its console said: "
                               + " | ".join(console[-5:])) from None
            result = await page.evaluate("window.kitResult")
        finally:
            await page.close()
    if not result.get("ok"):
        raise KitError(f"in the browser: {result.get('error')}")
