"""Any WebDriver endpoint (Selenium Grid, a device cloud, chromedriver, WebKitWebDriver):
run_browser.py --webdriver URL --capabilities JSON_OR_FILE, repeatable. The kit serves the
page as in device mode (session.py: a fresh token, the allowlist, --listen for a remote
browser), asks each endpoint for a session with its capabilities passed untouched, opens the
page there, takes the uploads and ends the sessions. Each session's captures are named from
what it says it is (platformName, browserName, browserVersion); a session refused, an
endpoint that hangs or dies, a session that never uploads is one line, and the others go on."""
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import KitError
from ..capture import SafetensorsTensors
from ..wire import BROWSER_BACKENDS
from .browsers import LAUNCH_TIMEOUT, PAGE_TIMEOUT, one_line
from .session import DEVICE_NAME_LIMIT, DeviceSession, page_parameters
from .webdriver import MAX_ANSWER, WebDriverSession, shown

NAME = "webdriver"
SCRIPT = "run_browser.py --webdriver"
BACKENDS = BROWSER_BACKENDS  # the page's, on any browser
CHOSEN_BY = "--webdriver"
FLAGS = ("webdriver", "capabilities", "listen")  # --listen: device_runner's flag, read here too
MAX_SESSIONS = 8


@dataclass
class Options:
    sessions: list = field(default_factory=list)  # [(endpoint URL, capabilities dict)]
    listen: Optional[tuple] = None                # where the kit serves the page (a remote browser must reach it)
    timeout: float = PAGE_TIMEOUT                 # seconds each backend's page may take
    launch_timeout: float = LAUNCH_TIMEOUT        # seconds a session may take to start


def add_arguments(parser):
    group = parser.add_argument_group("any WebDriver endpoint (Selenium Grid, a device cloud, chromedriver)")
    group.add_argument("--webdriver", action="append", default=[], metavar="URL",
                       help="a WebDriver endpoint to ask for a session (repeatable: one session each, at once)")
    group.add_argument("--capabilities", action="append", default=[], type=parse_capabilities,
                       metavar="JSON_OR_FILE",
                       help="the capabilities of each --webdriver's session, in order, passed untouched (a JSON "
                            "object, or a file holding one); one for all when given once")


def parse_capabilities(text):
    """argparse type: a JSON object, or the path of a regular file holding one (at most
    MAX_ANSWER bytes: capabilities are a small object, and a megabyte is not one)."""
    import argparse
    source = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        try:
            if not path.is_file():
                raise OSError(0, "not a regular file" if path.exists() else "No such file or directory")
            with open(path, "rb") as file:
                data = file.read(MAX_ANSWER + 1)
            if len(data) > MAX_ANSWER:
                raise OSError(0, f"more than {MAX_ANSWER:,} bytes")
            source = data.decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise argparse.ArgumentTypeError(f"{text[:200]!r}: not a JSON object, nor a file that can be read "
                                             f"({getattr(error, 'strerror', None) or error})") from None
    elif len(text) > MAX_ANSWER:
        raise argparse.ArgumentTypeError(f"capabilities of more than {MAX_ANSWER:,} bytes")

    def constant(name):
        raise ValueError(f"{name} is not JSON")
    try:
        value = json.loads(source, parse_constant=constant)
    except (ValueError, RecursionError):
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: not valid JSON") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: capabilities are a JSON object")
    return value


def options(args):
    from .webdriver import check_endpoint
    if not args.webdriver:
        raise KitError("--capabilities goes with --webdriver URL")
    if len(args.webdriver) > MAX_SESSIONS:
        raise KitError(f"--webdriver: at most {MAX_SESSIONS} sessions in one run")
    for url in args.webdriver:
        check_endpoint(url)
    capabilities = args.capabilities or [{}]
    if len(capabilities) == 1:
        capabilities = capabilities * len(args.webdriver)
    if len(capabilities) != len(args.webdriver):
        raise KitError(f"--capabilities: give one for every --webdriver ({len(args.webdriver)}), or one for all "
                       f"(got {len(capabilities)})")
    return Options(list(zip(args.webdriver, capabilities)), getattr(args, "listen", None), args.timeout,
                   args.launch_timeout)


def session_name(described, fallback):
    """A short, file-name-safe name from what a session says it is: 'linux-chrome-156',
    'mac-safari-18', 'android-chrome-131'."""
    platform = described.get("platformName") or ""
    browser = described.get("browserName") or ""
    # the major version, and the minor one where the major alone says little (WebKitGTK 2.50)
    version = re.match(r"(\d+)(?:\.(\d+))?", str(described.get("browserVersion") or ""))
    number = "" if not version else version[1] if int(version[1]) >= 10 or not version[2] \
        else f"{version[1]}.{version[2]}"
    parts = [str(platform), str(browser), number]
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(p for p in parts if p).lower()).strip("-")
    return slug[:DEVICE_NAME_LIMIT].rstrip("-") or fallback


class _Remote:
    """One --webdriver session of the run: its Browser, the device id its page carries, its
    name, and how it ended."""

    def __init__(self, number, endpoint, capabilities, launch_timeout):
        self.browser = WebDriverSession(endpoint, capabilities, launch_timeout,
                                        name=f"session {number} at {shown(endpoint)}")
        self.device_id = secrets.token_hex(4)
        self.name = f"session-{number}"
        self.failed = None  # a sentence, once it cannot go on
        self.done = set()
        self.abandoned = False  # the run stopped waiting for its start: a session that comes later is ended

    def start(self):
        try:
            self.browser.start()
            self.name = session_name(self.browser.described, self.name)
        except KitError as error:
            self.failed = f"no session: {error}"
        if self.abandoned:
            self.browser.close()


def run(job):
    """Every backend of `job` in every session of job.options.sessions at once; yield
    (backend, Capture) for each capture as it arrives, and (the backends, KitError) once for
    a session that did not give them all."""
    remotes = [_Remote(n, endpoint, capabilities, job.option("launch_timeout", LAUNCH_TIMEOUT))
               for n, (endpoint, capabilities) in enumerate(job.option("sessions", []), 1)]
    if not remotes:
        raise KitError("--webdriver: no endpoint given")
    timeout = job.option("timeout", PAGE_TIMEOUT)
    session = DeviceSession(job.model_json, job.out_dir, job.backends, page_parameters(job),
                            job.option("listen", None) or ("127.0.0.1", 0), max_devices=len(remotes))
    starting = []
    with session:
        try:
            starting = [threading.Thread(target=remote.start, daemon=True) for remote in remotes]
            began = time.monotonic()
            for thread in starting:
                thread.start()
            launch_timeout = job.option("launch_timeout", LAUNCH_TIMEOUT)
            for remote, thread in zip(remotes, starting):  # each request is bounded: this is a second guard
                thread.join(max(0.0, launch_timeout + 5 - (time.monotonic() - began)))
                if thread.is_alive():
                    remote.abandoned = True
                    remote.failed = f"no session within {launch_timeout:g} s (--launch-timeout)"
            _unique_names(remotes)
            for remote in remotes:
                if remote.failed is None:
                    try:
                        remote.browser.open(f"{session.url}&device={remote.device_id}")
                    except KitError as error:
                        remote.failed = f"did not open the page: {error}"
            yield from _arrivals(session, remotes, job, timeout)
        finally:
            for remote in remotes:  # a session still starting (a stop meanwhile) is ended once it comes
                remote.abandoned = True
            late = time.monotonic() + job.option("launch_timeout", LAUNCH_TIMEOUT) + 5
            for thread in starting:
                thread.join(max(0.0, late - time.monotonic()))
            closing = [threading.Thread(target=remote.browser.close, daemon=True) for remote in remotes]
            for thread in closing:
                thread.start()
            for thread in closing:
                thread.join(10)
    for remote in remotes:
        missing = [backend for backend in job.backends if backend not in remote.done]
        if missing:
            yield ",".join(missing), KitError(f"{remote.name} ({shown(remote.browser.endpoint)}): "
                                              f"{remote.failed or 'no capture arrived'}")


def _unique_names(remotes):
    """Two sessions that say the same (two Grid nodes of one browser) get -2, -3... after the first."""
    seen = {}
    for remote in remotes:
        if remote.failed is None:
            seen[remote.name] = seen.get(remote.name, 0) + 1
            if seen[remote.name] > 1:
                remote.name = f"{remote.name}-{seen[remote.name]}"


def _arrivals(session, remotes, job, timeout):
    by_id = {remote.device_id: remote for remote in remotes}
    running = [remote for remote in remotes if remote.failed is None]
    if not running:
        return

    def alive():
        """None while some session may still upload; a sentence once every one is done or gone."""
        for remote in running:
            if remote.failed is None and len(remote.done) < len(job.backends):
                ended = remote.browser.alive()
                if ended:
                    remote.failed = ended
        if all(remote.failed is not None or len(remote.done) == len(job.backends) for remote in running):
            return "every session is done or gone"
        return None
    deadline = time.monotonic() + job.option("launch_timeout", LAUNCH_TIMEOUT) + timeout * len(job.backends)
    try:
        # the end is when every session is done or gone (alive), not a count of devices: a page whose
        # session failed to open it may still upload, and must not count for one that did
        for device, backend, outcome in session.arrivals(NAME, job.flags, idle_timeout=timeout,
                                                         deadline=deadline, alive=alive, say=lambda line: None):
            remote = by_id.get(device.rsplit("-", 1)[-1])
            if remote is None or remote.failed is not None:  # not a page of a session of this run going on
                staged = getattr(outcome, "tensors", None)
                if isinstance(staged, SafetensorsTensors) and staged.path.name.startswith("."):
                    staged.path.unlink(missing_ok=True)
                continue
            if isinstance(outcome, KitError):
                remote.done.add(backend)
                yield backend, KitError(f"{remote.name}: {outcome}")
                continue
            remote.done.add(backend)
            outcome.metadata.update(device=remote.name, variant=_variant(remote.name, job.flags))
            outcome.metadata.update(remote.browser.metadata())
            yield backend, outcome
    except KitError as error:
        for remote in running:
            if remote.failed is None and len(remote.done) < len(job.backends):
                remote.failed = one_line(error)


def _variant(name, flags):
    from ..steps import variant_of
    return "_".join(part for part in (name, variant_of(flags)) if part)
