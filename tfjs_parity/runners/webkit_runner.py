"""WebKit here (Safari's engine, as WebKitGTK): its WebDriver (WebKitWebDriver, Debian's
webkit2gtk-driver) started on loopback with its MiniBrowser on its own virtual display;
the page runs each backend and uploads each capture like a phone's (session.run_in), saved
as keras_model_tfjs_webkit_<backend>. WebKitGTK's real version goes into each capture (its
User-Agent claims a Safari it is not)."""
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .. import KitError, processes
from ..files import remove_stale_staging, staging_dir
from ..wire import BROWSER_BACKENDS
from .browsers import LAUNCH_TIMEOUT, PAGE_TIMEOUT, VirtualDisplay, find_browser, profiles_folder
from .session import run_in
from .webdriver import WebDriverError, WebDriverSession, request

NAME = "webkit"
SCRIPT = "run_browser.py --browser webkit"
BACKENDS = tuple(b for b in BROWSER_BACKENDS if b != "webgpu")  # the page's, but WebGPU (LACKS)
CHOSEN_BY = "--browser webkit"
SETUP_HINT = "run `make setup-webkit` (installs Debian's webkit2gtk-driver and xvfb) or set WEBKIT_WEBDRIVER"
# MiniBrowser, WebKitGTK's own browser, beside its library (webkit2gtk-driver's dependencies)
MINIBROWSER_GLOB = ("/usr/lib/*/webkit2gtk-4.1/MiniBrowser", "/usr/lib/*/webkit2gtk-4.0/MiniBrowser",
                    "/usr/libexec/webkit2gtk-4.1/MiniBrowser")

# WebKit calls no one: every request but loopback's goes to a proxy on a port nothing listens on
# (loopback itself is never proxied), and no name is prefetched. MiniBrowser's own switches: the
# proxy settings of WebKit's network session (WebKitNetworkProxySettings).
OFF_THE_NETWORK = ["--proxy=http://127.0.0.1:1", "--ignore-host=127.0.0.0/8", "--ignore-host=localhost",
                   "--ignore-host=::1", "--enable-dns-prefetching=false"]
# WebKitGTK 2.50 (Debian 12) has WebGPU as a feature, off; turned on (MiniBrowser
# --features=+WebGPU) navigator.gpu is null on an http://127.0.0.1 page: no implementation here.
LACKS = {"webgpu": "WebKitGTK here has no WebGPU (navigator.gpu is null even with its WebGPU feature on); "
                   "Safari on a Mac has it: run_browser.py --device"}


@dataclass
class Options:
    timeout: float = PAGE_TIMEOUT            # seconds each backend's page may take
    launch_timeout: float = LAUNCH_TIMEOUT   # seconds WebKit, its driver and display may take to start


def options(args):
    return Options(args.timeout, args.launch_timeout)


def run(job):
    """Every backend of `job` in one WebKit page, each capture uploaded (session.run_in):
    yields (backend, Capture | KitError) as each arrives."""
    return run_in(WebKit(job.option("launch_timeout", LAUNCH_TIMEOUT)), job, NAME)


def installed():
    """KitError unless WebKitWebDriver, MiniBrowser and Xvfb are here."""
    find_browser("WEBKIT_WEBDRIVER", ("WebKitWebDriver",), "WebKitWebDriver", SETUP_HINT)
    find_minibrowser()
    VirtualDisplay(hint=SETUP_HINT)


def find_minibrowser():
    explicit = os.environ.get("WEBKIT_MINIBROWSER")
    if explicit:
        return find_browser("WEBKIT_MINIBROWSER", (), "MiniBrowser", SETUP_HINT)
    for pattern in MINIBROWSER_GLOB:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found and os.access(found[0], os.X_OK):
            return str(found[0])
    raise KitError(f"no WebKitGTK MiniBrowser found (looked for {', '.join(MINIBROWSER_GLOB)}); {SETUP_HINT}")


class WebKit(WebDriverSession):
    """WebKitWebDriver on a free loopback port and its MiniBrowser, both on a virtual display
    of their own with a fresh HOME (WebKit's caches and data), in their own process groups;
    a WebDriverSession on it. Everything stopped and removed on close."""

    def __init__(self, launch_timeout=LAUNCH_TIMEOUT):
        self.driver_path = find_browser("WEBKIT_WEBDRIVER", ("WebKitWebDriver",), "WebKitWebDriver", SETUP_HINT)
        self.minibrowser = find_minibrowser()
        capabilities = {"browserName": "MiniBrowser",
                        "webkitgtk:browserOptions": {"binary": self.minibrowser, "args": ["--automation", *OFF_THE_NETWORK]}}
        super().__init__("http://127.0.0.1:0", capabilities, launch_timeout, name="WebKit")
        self.display = VirtualDisplay(launch_timeout, hint=SETUP_HINT)
        self.driver = self.home = None

    def start(self):
        self.home = staging_dir(_webkit_folder(), "webkit-profile")
        os.chmod(self.home, 0o700)
        self.display.start()
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        env = dict(os.environ, DISPLAY=self.display.name, HOME=str(self.home), TMPDIR=str(self.home),
                   XDG_CACHE_HOME=str(self.home / "cache"), XDG_DATA_HOME=str(self.home / "data"),
                   XDG_CONFIG_HOME=str(self.home / "config"), XDG_RUNTIME_DIR=str(self.home),
                   GSETTINGS_BACKEND="memory", NO_AT_BRIDGE="1")
        try:
            with open(self.home / "webkit.log", "wb") as log:
                self.driver = processes.start([self.driver_path, f"--port={port}", "--host=127.0.0.1"],
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        except (OSError, subprocess.SubprocessError) as error:
            raise KitError(f"could not start {self.driver_path}: {getattr(error, 'strerror', None) or error}") \
                from None
        deadline = time.monotonic() + self.launch_timeout
        while True:
            ended = self._driver_ended()
            if ended:
                raise KitError(ended)
            try:
                request(self.endpoint, "GET", "/status", timeout=2.0)
                break
            except WebDriverError:
                if time.monotonic() > deadline:
                    raise KitError(f"{self.driver_path} did not answer on {self.endpoint} within "
                                   f"{self.launch_timeout:g} s; raise --launch-timeout if it is just slow") from None
                time.sleep(0.05)
        try:
            super().start()
        except WebDriverError as error:
            ended = self._driver_ended()
            raise KitError(f"WebKit (MiniBrowser, through {self.driver_path}) did not start: "
                           + (ended or f"{error}; raise --launch-timeout if it is just slow")) from None

    def _driver_ended(self):
        if self.driver is None or self.driver.poll() is None:
            return None
        try:
            lines = [line for line in (self.home / "webkit.log").read_text(errors="replace").splitlines()
                     if line.strip()]
        except OSError:
            lines = []
        return f"WebKitWebDriver exited with status {self.driver.returncode}" + (f" ({lines[-1][:200]})" if lines else "")

    def alive(self):
        return self._driver_ended() or super().alive()

    def close(self):
        try:
            if self.driver is not None and self.driver.poll() is None:
                super().close()
        finally:
            if self.driver is not None:
                processes.stop(self.driver, grace=1.0)
            self.display.stop()
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)
                self.home = None

    def metadata(self):
        version = self.described.get("browserVersion")
        return dict(super().metadata(), engine={"name": "WebKitGTK", "version": version if isinstance(version, str)
                                                else None})


def _webkit_folder():
    folder = profiles_folder("WebKit")
    remove_stale_staging(folder)
    return folder


def _free_port():
    """A port free on 127.0.0.1 now (WebKitWebDriver takes no port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
