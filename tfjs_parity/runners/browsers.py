"""The Browser contract, and what every browser the kit starts shares.

A Browser is what runs the kit's page: Chromium (chromium.py, over DevTools), Firefox
(firefox_runner), WebKit and any WebDriver session (webdriver.py). Each implements

    start()     get ready to open pages (start the process, its display, a session)
    open(url)   show `url` (the page then runs its backends and uploads each capture)
    alive()     None while it runs; else one sentence saying how it ended
    close()     stop everything started, whatever happened; safe to call twice

and is a context manager (start on entry, close on exit). session.run_in(browser, job,
runtime) runs a Job in any of them through the page-and-upload session (session.py)."""
import os
import select
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from .. import KitError, processes

LAUNCH_TIMEOUT = 30.0   # seconds a browser may take to start (--launch-timeout)
PAGE_TIMEOUT = 300.0    # seconds a backend's page may take, by default (--timeout)


def add_arguments(parser):
    """The options every browser run here takes (Chromium, Firefox, WebKit, WebDriver)."""
    from ..steps import positive_float
    parser.add_argument("--timeout", type=positive_float, default=PAGE_TIMEOUT, metavar="SECONDS",
                        help="seconds each backend's page may take, loading included (default %(default)g)")
    parser.add_argument("--launch-timeout", type=positive_float, default=LAUNCH_TIMEOUT, metavar="SECONDS",
                        help="seconds the browser may take to start (default %(default)g)")


def foreign_flags(parser, args, chosen, runners):
    """KitError naming the first flag given that belongs to a runner of `runners` other than
    `chosen` (each runner's FLAGS: the options only it reads, and CHOSEN_BY: what picks it)."""
    for runner in runners:
        if runner is chosen:
            continue
        for dest in getattr(runner, "FLAGS", ()):
            if dest not in getattr(chosen, "FLAGS", ()) and getattr(args, dest) != parser.get_default(dest):
                raise KitError(f"--{dest.replace('_', '-')} is for {runner.CHOSEN_BY}; it does not apply "
                               f"with {chosen.CHOSEN_BY}")


class Browser:
    """The contract (the module's docstring). `name` says which browser in messages."""
    name = "the browser"

    def start(self):
        raise NotImplementedError

    def open(self, url):
        raise NotImplementedError

    def alive(self):
        return None

    def close(self):
        raise NotImplementedError

    def metadata(self):
        """What this browser says of itself that its page cannot (a real engine version):
        added to every capture it makes."""
        return {}

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()


class NoModel(KitError):
    """--wait-for-model: stdin ended before the model was ready; no backend can run."""


def find_browser(variable, names, what, hint):
    """The executable the environment `variable` names, else the first of `names` on PATH
    (a name with a slash: that path, when it is there); KitError (saying `hint`) when none."""
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


def one_line(text, limit=300):
    """`text` on one line, at most `limit` characters, nothing that a terminal would take
    as a command (text from a page or a device is theirs, not ours): for a message."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


class VirtualDisplay:
    """Xvfb on a free display number (it says which through -displayfd), listening on no
    socket but its own; for a browser that needs a display for WebGL 2 (Firefox, WebKit)."""

    def __init__(self, launch_timeout=LAUNCH_TIMEOUT, hint="run `make setup-firefox`"):
        self.launch_timeout = launch_timeout
        self.xvfb = shutil.which("Xvfb")
        if self.xvfb is None:
            raise KitError(f"Xvfb not found (a browser here needs a display for WebGL 2); {hint}")
        self.process = self.number = None

    def start(self):
        read, write = os.pipe()
        try:
            try:
                self.process = processes.start([self.xvfb, "-displayfd", str(write), "-screen", "0", "1280x1024x24",
                                                "-nolisten", "tcp", "-nolisten", "unix", "-noreset"],
                                               pass_fds=(write,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError) as error:
                raise KitError(f"could not start {self.xvfb}: {getattr(error, 'strerror', None) or error}") from None
            os.close(write)
            write = None
            number = b""
            deadline = time.monotonic() + self.launch_timeout
            while not number.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([read], [], [], 0.2)
                if ready:
                    chunk = os.read(read, 16)
                    if not chunk:
                        break
                    number += chunk
            if not number.strip().isdigit():
                processes.stop(self.process)
                raise KitError(f"{self.xvfb} did not start a display (exit status {self.process.poll()})")
            self.number = int(number)
            return self
        finally:
            os.close(read)
            if write is not None:
                os.close(write)

    @property
    def name(self):
        return f":{self.number}"

    def stop(self):
        if self.process is not None:
            processes.stop(self.process, grace=0.5)
            self.process = None
