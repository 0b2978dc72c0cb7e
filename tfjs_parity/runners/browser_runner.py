"""tfjs in headless Chromium, driven by pyppeteer: serve the page and model on loopback,
run inference_in_browser.html, and take the capture the page uploads (binary, a tensor per
request, to a one-time path of this run's server: nothing big passes through DevTools).

The kit starts Chromium itself (not pyppeteer.launch): as the leader of its own process group
that the kernel kills when the kit dies (processes.start), with a fresh profile folder named
after the kit's pid (a profile left by a killed run is removed by the next one), on
--remote-debugging-port=0; it reads the DevTools address from Chromium's stderr and connects.
Every exit (the end, an error, Ctrl-C, SIGTERM, SIGKILL of the kit) stops the whole group."""
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlencode

from .. import KitError, processes
from ..capture import read_safetensors
from ..files import remove_stale_staging, staging_dir
from ..paths import BROWSER_PAGE, COMMON_JS, NODE_MODULES, WIRE_FILE
from ..progress import Progress
from ..server import PageServer, Uploads
from .node_runner import PROGRESS

NAME = "browser"
SCRIPT = "run_browser.py"
BACKENDS = ("webgl", "wasm", "cpu", "webgpu")
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PAGE_TIMEOUT = 300.0    # seconds a backend's page may take, by default (--timeout)
LAUNCH_TIMEOUT = 30.0   # seconds Chromium may take to announce its DevTools address (--launch-timeout)
# The page's scripts and the wasm binaries, from the kit's own pinned npm packages.
TFJS_FILES = [
    "node_modules/@tensorflow/tfjs/dist/tf.min.js",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
    "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
    "node_modules/@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js",
]

# Chromium resolves no host name at all: every name maps to "not found", and only loopback
# addresses (any 127.x.y.z, ::1, localhost) are left alone. The rules apply to IP literals too
# (tried: `MAP * ~NOTFOUND` alone refuses http://127.0.0.2/), hence an exclusion per shape of
# dotted quad, not `127.*`, which would also let a name like 127.0.0.1.nip.io go to DNS.
_OCTET = ("?", "??", "???")
HOST_RESOLVER_RULES = ", ".join(["MAP * ~NOTFOUND"]
                                + [f"EXCLUDE 127.{a}.{b}.{c}" for a in _OCTET for b in _OCTET for c in _OCTET]
                                + ["EXCLUDE localhost", "EXCLUDE ::1"])  # (tried: "[::1]" is not matched)
# Features that call Google at start or in the background (optimization guide, media router,
# translate, autofill, certificate transparency lists, network time, field trials...).
DISABLED_FEATURES = [
    "OptimizationHints", "OptimizationHintsFetching", "OptimizationGuideModelDownloading",
    "OptimizationTargetPrediction", "OptimizationGuideOnDeviceModel", "MediaRouter", "DialMediaRouteProvider",
    "Translate", "AutofillServerCommunication", "CertificateTransparencyComponentUpdater",
    "InterestFeedContentSuggestions", "NetworkTimeServiceQuerying", "PrivacySandboxSettings4",
    # Chromium 156 preloads the omnibox popup (chrome://omnibox-popup.top-chrome/, twice) even
    # headless: a WebUI renderer that cost 0.85 s of CPU at every launch, all of it beside step 1.
    "WebUIOmniboxPopup", "WebUIOmniboxAimPopup",
]
PREFERENCES = {"alternate_error_pages": {"enabled": False}}  # written into each new profile
NOWHERE = "http://127.0.0.1:1"  # a port Chromium never connects to (one of its "unsafe ports")
ENABLED_FEATURES = ["Vulkan"]  # WebGPU on SwiftShader's Vulkan, below

CHROMIUM_FLAGS = [
    "--headless",
    # as root (CI, containers) Chromium's sandbox refuses to start; for anyone else it stays on
    *(["--no-sandbox"] if os.geteuid() == 0 else []),
    # WebGL 2 with float32 render targets on the CPU, through SwiftShader: no GPU needed.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    # Headless shows nothing: compositing its frames on SwiftShader was 0.35 s of CPU and a
    # third of Chromium's page faults at each start (WebGL and WebGPU still run on SwiftShader).
    "--disable-gpu-compositing",
    # WebGPU on SwiftShader's Vulkan. With --enable-unsafe-webgpu alone an earlier Chromium
    # build initialised the backend and computed zeros (the self-test catches that).
    "--enable-unsafe-webgpu", "--enable-features=" + ",".join(ENABLED_FEATURES), "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    # A closed network: Chromium calls no one. --disable-background-networking alone still let
    # it ask accounts.google.com, update.googleapis.com and clients2.google.com at start.
    f"--host-resolver-rules={HOST_RESOLVER_RULES}", "--no-proxy-server",
    # Two callers ask Google anyway (the names then fail to resolve, but the requests start):
    # the account check (accounts.google.com/ListAccounts, as Debian's build has API keys) and
    # the component updater's on-demand fetches (update.googleapis.com, the optimization
    # guide's model manifest, despite --disable-component-update). Both are pointed at port 1
    # of loopback, a port Chromium refuses to use (ERR_UNSAFE_PORT): no socket is even opened.
    f"--gaia-url={NOWHERE}", f"--component-updater=url-source={NOWHERE}",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--no-default-browser-check", "--no-pings", "--disable-domain-reliability",
    "--disable-client-side-phishing-detection", "--disable-default-apps", "--disable-extensions",
    "--disable-component-extensions-with-background-pages", "--disable-breakpad", "--metrics-recording-only",
    "--disable-field-trial-config", "--no-service-autorun",
    "--disable-features=" + ",".join(DISABLED_FEATURES),
    # What pyppeteer used to add: no keyring, no throttling of a page, no small /dev/shm.
    "--password-store=basic", "--use-mock-keychain", "--disable-dev-shm-usage", "--enable-automation",
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows", "--disable-hang-monitor", "--disable-popup-blocking",
    "--disable-prompt-on-repost", "--hide-scrollbars", "--mute-audio",
]
# Switches the kit sets itself, per launch: one given again would take the kit's place.
OWN_SWITCHES = ("--user-data-dir", "--remote-debugging-port", "--remote-debugging-pipe", "--remote-debugging-address")
_DEVTOOLS = re.compile(r"^DevTools listening on (ws://(?:127\.\d+\.\d+\.\d+|\[::1\]):\d+/devtools/browser/[\w-]+)\s*$")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def find_chromium():
    """CHROME_PATH when set, else the first Chromium or Chrome on PATH; KitError when none."""
    return find_browser("CHROME_PATH", BROWSER_NAMES, "Chromium",
                        "run `make setup` (installs Debian's chromium) or set CHROME_PATH")


def find_browser(variable, names, what, hint):
    """The executable the environment `variable` names, else the first of `names` on PATH;
    KitError (saying `hint`) when none."""
    explicit = os.environ.get(variable)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise KitError(f"{variable}={explicit} is not an executable file")
        return explicit
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise KitError(f"no {what} found (looked for {', '.join(names)}); {hint}")


def chromium_switches(extra=()):
    """The kit's switches, then `extra`; --enable-features and --disable-features given in
    `extra` are merged into the kit's (Chromium reads only the last of each)."""
    features = {"--enable-features": list(ENABLED_FEATURES), "--disable-features": list(DISABLED_FEATURES)}
    rest = []
    for switch in extra:
        name, _, value = switch.partition("=")
        if name in OWN_SWITCHES:
            raise KitError(f"--chromium-arg={switch}: the kit sets {name} itself (each run gets its own)")
        if name in features:
            features[name] += [feature for feature in value.split(",") if feature]
        else:
            rest.append(switch)
    own = []
    for switch in CHROMIUM_FLAGS:
        name = switch.partition("=")[0]
        own.append(f"{name}={','.join(dict.fromkeys(features[name]))}" if name in features else switch)
    return own + rest


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
    for name in TFJS_FILES:
        routes[f"/{name}"] = NODE_MODULES.parent / name
    return routes


def model_routes(model_json):
    """The converted model's files (probe_plan.json and input.json included), under /model/."""
    routes = {}
    for file in sorted(Path(model_json).parent.iterdir()):
        if file.suffix in (".json", ".bin") and not file.is_symlink() and file.is_file():
            routes[f"/model/{file.name}"] = file
    return routes


def run(job):
    """Run the tfjs model at job.model_json in one headless Chromium, once per backend (each in
    a fresh page); return {backend: Capture (backed by a file in job.out_dir) or the KitError
    that backend raised}.

    job.flags are tfjs flags set before the backend starts; job.metadata is added to each
    capture's; job.options: "chromium_args", extra switches added after the kit's own;
    "timeout", the seconds each backend's page may take; "launch_timeout", Chromium's start.

    With job.go (a runs.Go): Chromium starts at once, and the first backend's page loads tfjs,
    starts its backend and self-tests it, then waits for go's line before the model is served
    and read (NoModel when stdin ends instead); the timeout counts from then.

    The model's folder is served from its parent (the results folder): a model file reached
    through a symlink below it is refused, and so is a model folder that is a symlink."""
    go, backends, staging_dir = job.go, job.backends, job.out_dir
    timeout = job.options.get("timeout", PAGE_TIMEOUT)
    launch_timeout = job.options.get("launch_timeout", LAUNCH_TIMEOUT)
    if go is None:
        model_json = check_servable(job.model_json)
    else:
        check_tfjs_files()
        model_json = Path(job.model_json)
    switches = chromium_switches(job.options.get("chromium_args", ()))
    executable = find_chromium()
    page = {"model": "model/model.json", "flags": json.dumps(job.flags or {}), "repeat": job.repeat,
            "budget": job.budget, "metadata": json.dumps(job.metadata or {})}
    import pyppeteer  # noqa: F401 (before Chromium starts: its import takes a moment)
    _quiet_libraries()
    uploads = Uploads(staging_dir, backends)
    caught = []  # a signal that stopped the run, raised again once everything is cleaned up
    try:
        with PageServer(page_routes() if go else routes_for(model_json), uploads,
                        roots=[model_json.parent.parent]) as server, \
                Chromium(executable, switches, launch_timeout) as chromium:
            async def model_ready():
                while not go.arrived():
                    await asyncio.sleep(0.01)
                if not go.wait():
                    raise NoModel(str(go.missing()))
                server.add_routes(model_routes(check_model(model_json)))
            return _run_async(_run_pages(chromium, server, uploads, backends, page, timeout,
                                         model_ready if go else None), chromium, caught)
    finally:
        if caught:
            _raise_again(caught[0])


class Chromium:
    """One headless Chromium: its own process group (processes.start), a fresh profile
    folder, and the DevTools address it announced; a context manager that stops the group
    and removes the profile on every exit."""

    def __init__(self, executable, switches, launch_timeout=LAUNCH_TIMEOUT):
        self.executable, self.switches, self.launch_timeout = executable, list(switches), launch_timeout
        self.process = self.profile = self.endpoint = None
        self.closing = False  # Browser.close was sent: Chromium is ending on its own
        self.tail = deque(maxlen=20)  # Chromium's last stderr lines, for an error message
        self._announced = threading.Event()
        self._reader = None

    @property
    def name(self):
        explicit = os.environ.get("CHROME_PATH")
        return f"CHROME_PATH={explicit}" if explicit else self.executable

    def __enter__(self):
        try:
            self.profile = new_profile()
            command = [self.executable, "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
                       *self.switches, "about:blank"]
            try:
                self.process = processes.start(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.PIPE, text=True, errors="replace")
            except (OSError, subprocess.SubprocessError) as error:
                raise KitError(f"could not start {self.name}: {getattr(error, 'strerror', None) or error}") from None
            self._reader = threading.Thread(target=self._read_stderr, name="chromium-stderr", daemon=True)
            self._reader.start()
            self.endpoint = self._wait_for_endpoint()
        except BaseException:
            self.close(grace=0)
            raise
        return self

    def __exit__(self, *exc):
        self.close(grace=5 if self.closing and exc[0] is None else 0)

    def _read_stderr(self):
        """Drain Chromium's stderr for as long as it runs (a full pipe would stall it), keeping
        the last lines, and note the DevTools address when it is announced."""
        try:
            for line in self.process.stderr:
                line = line.rstrip("\n")
                match = _DEVTOOLS.match(line)
                if match and self.endpoint is None:
                    self.endpoint = match[1]
                    self._announced.set()
                elif line.strip():
                    self.tail.append(line.strip())
        except (OSError, ValueError):
            pass  # the pipe closed under us: the kit is stopping
        finally:
            self._announced.set()

    def _wait_for_endpoint(self):
        deadline = time.monotonic() + self.launch_timeout
        self._announced.wait(self.launch_timeout)
        if self.endpoint is not None:
            return self.endpoint
        # stderr ended without the address: Chromium exited (or closed its stderr and hangs)
        try:
            status = self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            status = None
        if status is None:
            self.close(grace=0)
            raise KitError(f"{self.name} did not start within {self.launch_timeout:g} s (no DevTools address "
                           f"announced; stopped it){self._last_words()}; raise --launch-timeout if it is just slow")
        raise KitError(f"{self.name} exited at once with status {_status(status)}{self._last_words()}")

    def _last_words(self):
        if self._reader is not None:
            self._reader.join(1)
        # a FATAL line says why; D-Bus complaints (there is no session bus here) never do
        lines = [line for line in self.tail if ":FATAL:" in line] or [line for line in self.tail if "dbus" not in line]
        return f"; its last output: {one_line(lines[-1])}" if lines else "; it printed nothing"

    def exited(self, wait=0.0):
        """None while Chromium runs (after waiting up to `wait` s for it to end: its DevTools
        connection closes a moment before the process is gone); else a sentence saying how it
        ended, with its last output."""
        if self.process is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(wait)
        if self.process.poll() is None:
            return None
        return f"Chromium exited with status {_status(self.process.returncode)}{self._last_words()}"

    def kill(self):
        """Stop the whole group now (on a signal: nothing graceful)."""
        if self.process is not None:
            processes.stop(self.process)

    def close(self, grace):
        """Let Chromium finish closing for up to `grace` seconds (after Browser.close: its
        logs are then complete), stop its whole group, and remove its profile."""
        with _signals_deferred():  # a second Ctrl-C must not cut the cleanup short
            if self.process is not None:
                if grace:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(grace)
                processes.stop(self.process)
                if self._reader is not None:
                    self._reader.join(2)
                with contextlib.suppress(OSError):
                    self.process.stderr.close()
            if self.profile is not None:
                remove_profile(self.profile)
                self.profile = None


def profiles_folder(browser="Chromium"):
    """The folder that holds this user's `browser` profiles, private to them."""
    folder = Path(tempfile.gettempdir()) / f"tfjs_parity-{browser.lower()}-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise KitError(f"cannot create {folder} (for {browser}'s profiles): {error.strerror or error}") from None
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise KitError(f"{folder} (for {browser}'s profiles) is not a private folder of this user; remove it")
    return folder


def new_profile():
    """A fresh profile folder named with the kit's pid, after removing those of runs that are
    gone (killed with SIGKILL), and stopping any Chromium left running on one (a CHROME_PATH
    wrapper that forks Chromium instead of exec'ing it escapes the parent-death signal)."""
    folder = profiles_folder()
    before = {entry.path: _singleton_folder(entry.path) for entry in os.scandir(folder)}
    remove_stale_staging(folder)
    gone = before.keys() - {entry.path for entry in os.scandir(folder)}
    if gone:
        _kill_processes_using(gone)
        for path in gone:
            if before[path] is not None:
                shutil.rmtree(before[path], ignore_errors=True)
    profile = staging_dir(folder, "chromium-profile")
    os.chmod(profile, 0o700)
    # A navigation that fails to resolve a name would have Chromium probe DNS (google.com,
    # through 8.8.8.8) to word its error page: off, as no switch turns it off.
    try:
        (profile / "Default").mkdir(mode=0o700)
        (profile / "Default" / "Preferences").write_text(json.dumps(PREFERENCES))
    except OSError as error:
        shutil.rmtree(profile, ignore_errors=True)
        raise KitError(f"cannot write Chromium's profile in {folder}: {error.strerror or error}") from None
    return profile


def remove_profile(profile):
    """Remove a Chromium profile, and the folder Chromium made in TMPDIR for its singleton
    socket (Chromium removes it when it closes by itself, not when it is killed)."""
    singleton = _singleton_folder(profile)
    shutil.rmtree(profile, ignore_errors=True)
    if singleton is not None:
        shutil.rmtree(singleton, ignore_errors=True)


def _singleton_folder(profile):
    """The org.chromium.Chromium.* folder (this user's, in the temporary folder) that the
    profile's SingletonSocket link points into; None when there is none."""
    try:
        folder = Path(os.readlink(Path(profile) / "SingletonSocket")).parent
        info = os.lstat(folder)
    except OSError:
        return None
    if not folder.name.startswith("org.chromium.Chromium.") or not stat.S_ISDIR(info.st_mode) \
            or info.st_uid != os.getuid() or folder.parent != Path(tempfile.gettempdir()):
        return None
    return folder


def _kill_processes_using(profiles):
    """SIGKILL every process of this user whose command line names one of `profiles`."""
    wanted = [f"--user-data-dir={profile}".encode() for profile in profiles]
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            with open(os.path.join(entry.path, "cmdline"), "rb") as f:
                arguments = f.read().split(b"\0")
            if any(argument in wanted for argument in arguments):
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


async def connect(endpoint):
    """pyppeteer.connect(browserWSEndpoint=endpoint), without its busy wait: pyppeteer 1.0.2
    sends its first command at once and, until the WebSocket is open, retries it with
    asyncio.sleep(0), about 28,000 turns of the loop at each start (a core's worth of CPU,
    beside step 1 in `make run`). Here the WebSocket opens first; its error, if any, is raised."""
    from pyppeteer.browser import Browser
    from pyppeteer.connection import Connection
    connection = Connection(endpoint, asyncio.get_running_loop(), 0)
    while not connection._connected:
        if connection._recv_fut.done():  # it ended without ever opening
            connection._recv_fut.result()  # its error (refused, a bad handshake)
            raise ConnectionError("the DevTools WebSocket closed as it opened")
        await asyncio.sleep(0.005)
    contexts = (await connection.send("Target.getBrowserContexts")).get("browserContextIds", [])
    return await Browser.create(connection, contexts, False, {"width": 800, "height": 600}, None,
                                lambda: connection.send("Browser.close"))


class NoModel(KitError):
    """--wait-for-model: stdin ended before the model was ready; no backend can run."""


async def _run_pages(chromium, server, uploads, backends, page, timeout, model_ready=None):
    """Each backend's page in turn; the first waits for `model_ready()` (when given) once
    started up, before it reads the model."""
    import pyppeteer
    import websockets
    results = {}
    try:
        browser = await asyncio.wait_for(connect(chromium.endpoint),
                                         chromium.launch_timeout)
    except (asyncio.TimeoutError, OSError, pyppeteer.errors.PyppeteerError,
            websockets.exceptions.WebSocketException) as error:
        raise KitError(f"could not connect to {chromium.name} at {chromium.endpoint}: "
                       f"{one_line(str(error)) or type(error).__name__}") from None
    try:
        for backend in backends:
            query = urlencode(dict(page, backend=backend, upload=uploads.path(backend),
                                   **({"wait": 1} if model_ready else {})))
            try:
                try:
                    await _capture_page(chromium, browser, f"{server.url}/inference_in_browser.html?{query}", backend,
                                        timeout, model_ready)
                    model_ready = None  # the model is there: the next backends' pages read it at once
                except (pyppeteer.errors.PyppeteerError, ConnectionError, OSError) as error:
                    # a crashed page or browser, a dropped DevTools connection
                    ended = chromium.exited(wait=1.0)
                    raise KitError(f"backend {backend}: " + (ended or f"the page failed ({one_line(str(error))})")) \
                        from None
                if uploads.completed(backend) is None:
                    raise KitError(f"backend {backend}: the page finished but its capture did not arrive")
                results[backend] = read_upload(uploads, backend)
            except NoModel:
                raise
            except KitError as error:
                results[backend] = error
                if chromium.exited():  # the browser is gone: the other backends cannot run
                    for other in backends:
                        results.setdefault(other, error)
                    break
    finally:
        if chromium.exited() is None:
            chromium.closing = True  # Browser.close: Chromium ends by itself and completes its logs
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(browser.disconnect(), 2)
    return results


async def _capture_page(chromium, browser, url, backend, timeout, model_ready=None):
    import pyppeteer
    deadline = time.monotonic() + timeout
    crashed = asyncio.get_running_loop().create_future()
    page = await _guarded(chromium, browser.newPage(), backend)
    console = []
    with Progress(f"browser/{backend}") as progress:
        def on_console(message):
            if not message.args:
                return  # the browser's own log (a failed resource load, an intervention), not the page's
            match = PROGRESS.match(message.text)
            if match:
                progress.update(int(match[1]), int(match[2]))
            else:
                console.append(one_line(message.text))
        page.on("console", on_console)
        page.on("pageerror", lambda error: console.append(f"page error: {one_line(str(error))}"))
        # the page's renderer died (pyppeteer says so as an "error" event, raised if none listens)
        page.on("error", lambda error: crashed.done() or crashed.set_result(str(error)))

        def remaining_ms():
            return max(1, int((deadline - time.monotonic()) * 1000))

        def said():
            return f"; its console said: {' | '.join(console[-5:])}" if console else "; its console said nothing"

        async def finished():
            nonlocal deadline
            await page.goto(url, timeout=remaining_ms())
            if model_ready is not None:  # started up: the page waits for the model (its query says wait)
                await page.waitForFunction("window.kitWaiting === true || window.kitResult !== undefined",
                                           timeout=remaining_ms())
                if await page.evaluate("window.kitResult === undefined"):
                    await model_ready()
                    deadline = time.monotonic() + timeout
                    await page.evaluate("window.kitGo()")
            await page.waitForFunction("window.kitResult !== undefined", timeout=remaining_ms())
            return await page.evaluate("window.kitResult")
        try:
            result = await _guarded(chromium, finished(), backend, crashed)
        except pyppeteer.errors.TimeoutError:
            raise KitError(f"backend {backend}: the page did not finish within {timeout:g} s (--timeout)"
                           + said()) from None
        except _PageCrashed:
            raise KitError(f"backend {backend}: the page crashed (its renderer process died){said()}") from None
        finally:
            if chromium.exited() is None:  # else nothing answers (pyppeteer would wait for ever)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(page.close(), 5)
    if not result.get("ok"):
        raise KitError(f"in the browser: {one_line(str(result.get('error')))}")


class _PageCrashed(Exception):
    pass


async def _guarded(chromium, awaitable, backend, crashed=None):
    """Await `awaitable`, unless Chromium ends first (KitError saying how) or `crashed` (a
    future: the page's renderer died) is set first (_PageCrashed). pyppeteer alone can miss a
    browser that died: a DevTools call of it may then wait for ever."""
    work = asyncio.ensure_future(awaitable)
    ended = asyncio.ensure_future(_ended(chromium))
    try:
        await asyncio.wait([work, ended] + ([crashed] if crashed is not None else []),
                           return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        if ended.done():
            raise KitError(f"backend {backend}: {chromium.exited(wait=1.0)}")
        raise _PageCrashed()
    finally:
        for future in (work, ended):
            if not future.done():
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await future


async def _ended(chromium, every=0.1):
    while chromium.exited() is None:
        await asyncio.sleep(every)


def _run_async(coroutine, chromium, caught):
    """Run `coroutine` to its end in a new event loop and return its result. A SIGINT, SIGTERM
    or SIGHUP meanwhile stops Chromium at once, cancels the coroutine, is noted in `caught`
    (run() raises it again once all is cleaned up) and ends this with _Interrupted."""
    loop = asyncio.new_event_loop()
    # pyppeteer leaves tasks behind when the browser goes away under it; their errors are not news
    loop.set_exception_handler(lambda loop, context: None)
    task = loop.create_task(coroutine)

    def on_signal(signum):
        if not caught:
            caught.append(signum)
            chromium.kill()
            task.cancel()
    handled = []
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):  # nohup's SIGHUP stays ignored
                handled.append((signum, signal.getsignal(signum)))
                loop.add_signal_handler(signum, on_signal, signum)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if not caught:
            raise
        raise _Interrupted() from None
    finally:
        try:
            _finish_tasks(loop)
        finally:
            # give the caller's handlers back; a signal in between waits (blocked) and reaches them
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [signum for signum, _ in handled])
            try:
                for signum, handler in handled:
                    loop.remove_signal_handler(signum)
                    signal.signal(signum, handler)
                loop.close()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if caught:
            raise _Interrupted()


class _Interrupted(BaseException):
    """A signal stopped the run; run() raises the signal again after cleaning up."""


def _finish_tasks(loop, wait=3.0):
    """Cancel what is left (pyppeteer's reader, callbacks) and let it end, for `wait` s at most."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.wait(pending, timeout=wait))
    with contextlib.suppress(BaseException):
        loop.run_until_complete(loop.shutdown_asyncgens())


def _raise_again(signum):
    """Deliver `signum` to this process again, now that the handlers are the caller's: Ctrl-C
    becomes KeyboardInterrupt, SIGTERM whatever the caller made of it (cli: Terminated)."""
    signal.raise_signal(signum)
    raise KitError(f"interrupted by {signal.Signals(signum).name}")  # a handler that did not raise


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends, then deliver the first one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held, previous = [], {}
    for signum in SIGNALS:
        handler = signal.getsignal(signum)
        if handler not in (signal.SIG_IGN, None):
            previous[signum] = signal.signal(signum, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signal.raise_signal(held[0])


def _quiet_libraries():
    """pyppeteer and websockets log a dropped connection as an error; the kit reports what
    happened itself, in one line."""
    for name in ("pyppeteer", "websockets"):
        logger = logging.getLogger(name)
        logger.propagate = False
        if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
            logger.addHandler(logging.NullHandler())


def _status(returncode):
    if returncode is not None and returncode < 0:
        return f"{returncode} (killed by {signal.Signals(-returncode).name})"
    return str(returncode)


def one_line(text, limit=300):
    """`text` on one line, at most `limit` characters, nothing that a terminal would take
    as a command (text from a page or a device is theirs, not ours): for a message."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
