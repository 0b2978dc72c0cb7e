"""tfjs in headless Chromium, driven by pyppeteer: serve the page and model on loopback,
run inference_in_browser.html, and take the capture from the page itself."""
import asyncio
import os
import shutil
from pathlib import Path

from .. import KitError
from ..capture import Capture
from ..paths import BROWSER_PAGE, COMMON_JS, NODE_MODULES
from ..server import PageServer

NAME = "browser"
BACKENDS = ("webgl",)
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TFJS_BUNDLE = "node_modules/@tensorflow/tfjs/dist/tf.min.js"

CHROMIUM_FLAGS = [
    "--no-sandbox",  # the kit may run as root (CI, containers), where the sandbox refuses to start
    # WebGL 2 with float32 render targets on the CPU, through SwiftShader: no GPU needed.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
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
    """What the page needs, and nothing else: the page, its script, tfjs, and the model files."""
    model_dir = Path(model_json).parent
    routes = {
        "/inference_in_browser.html": BROWSER_PAGE,
        "/inference_common.js": COMMON_JS,
        f"/{TFJS_BUNDLE}": NODE_MODULES.parent / TFJS_BUNDLE,
    }
    for file in sorted(model_dir.iterdir()):
        if file.is_file() and file.suffix in (".json", ".bin"):
            routes[f"/model/{file.name}"] = file
    return routes


def run(model_json, backend="webgl", chromium_args=(), timeout=300):
    """Run the tfjs model at `model_json` in headless Chromium on `backend`; return its Capture.

    `chromium_args` are extra Chromium switches, added after the kit's own."""
    if not Path(model_json).is_file():
        raise KitError(f"{model_json} not found; run `python create_keras_model.py` first")
    if not (NODE_MODULES.parent / TFJS_BUNDLE).is_file():
        raise KitError(f"{TFJS_BUNDLE} is missing; run `make setup`")
    chromium = find_chromium()
    return asyncio.run(_run(chromium, CHROMIUM_FLAGS + list(chromium_args), model_json, backend, timeout))


async def _run(chromium, flags, model_json, backend, timeout):
    import pyppeteer
    with PageServer(routes_for(model_json)) as server:
        try:
            browser = await pyppeteer.launch(executablePath=chromium, headless=True, args=flags,
                                             handleSIGINT=False, handleSIGTERM=False, handleSIGHUP=False)
        except Exception as error:
            raise KitError(f"could not start {chromium}: {error}") from None
        try:
            page = await browser.newPage()
            console = []
            page.on("console", lambda message: console.append(message.text))
            page.on("pageerror", lambda error: console.append(f"page error: {error}"))
            await page.goto(f"{server.url}/inference_in_browser.html?backend={backend}&model=model/model.json")
            try:
                await page.waitForFunction("window.kitResult !== undefined", timeout=timeout * 1000)
            except pyppeteer.errors.TimeoutError:
                raise KitError(f"the page did not finish within {timeout} s; its console said: "
                               + " | ".join(console[-5:])) from None
            result = await page.evaluate("window.kitResult")
        finally:
            await browser.close()
    if not result.get("ok"):
        raise KitError(f"in the browser: {result.get('error')}")
    capture = Capture.from_json(result["capture"], source="the browser's capture")
    if capture.metadata.get("backend") != backend:
        raise KitError(f"asked the browser for backend {backend} but the capture says {capture.metadata.get('backend')}")
    return capture
