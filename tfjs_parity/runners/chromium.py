"""Chromium, started by the kit itself (not pyppeteer.launch): found on this machine, with the
switches that give WebGL and WebGPU on SwiftShader and keep it off the network, as the leader
of its own process group that the kernel kills when the kit dies (processes.start), with a
fresh profile folder named after the kit's pid (a profile left by a killed run is removed by
the next one), on --remote-debugging-port=0; the DevTools address is read from its stderr.
Every exit (the end, an error, Ctrl-C, SIGTERM, SIGKILL of the kit) stops the whole group.
(A little over 350 lines: a third is the switch list, each switch with its reason.)"""
import asyncio
import contextlib
import json
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

from .. import KitError, processes
from ..files import remove_stale_staging, staging_dir
from .browsers import LAUNCH_TIMEOUT, Browser, find_browser, one_line, profiles_folder  # noqa: F401 (one_line: theirs)

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
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


def find_chromium():
    """CHROME_PATH when set, else the first Chromium or Chrome on PATH; KitError when none."""
    return find_browser("CHROME_PATH", BROWSER_NAMES, "Chromium",
                        "run `make setup` (installs Debian's chromium) or set CHROME_PATH")


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


class Chromium(Browser):
    """One headless Chromium: its own process group (processes.start), a fresh profile
    folder, and the DevTools address it announced; a context manager that stops the group
    and removes the profile on every exit. A Browser (browsers.py): open(url) opens a tab
    through DevTools' HTTP endpoint; browser_runner drives its pages over DevTools instead."""

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
        self.start()
        return self

    def start(self):
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

    def open(self, url):
        """A new tab on `url`, through DevTools' HTTP endpoint (PUT /json/new)."""
        import urllib.parse
        import urllib.request
        http = self.endpoint.replace("ws://", "http://", 1).split("/devtools/")[0]
        request = urllib.request.Request(f"{http}/json/new?{urllib.parse.quote(url, safe='')}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=self.launch_timeout) as response:
                response.read(65536)
        except OSError as error:
            raise KitError(f"{self.name} did not open the page: {one_line(error)}") from None

    def alive(self):
        return self.exited()

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

    def close(self, grace=0):
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
                # a helper that outlived its group (a zygote's child, under load) could write
                # the profile again after it is removed: every process naming it is killed
                # first, and the removal is repeated while the folder is back (bounded)
                for _ in range(3):
                    _kill_processes_using([self.profile])
                    remove_profile(self.profile)
                    if not os.path.lexists(self.profile):
                        break
                self.profile = None


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


def _status(returncode):
    if returncode is not None and returncode < 0:
        return f"{returncode} (killed by {signal.Signals(-returncode).name})"
    return str(returncode)


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
