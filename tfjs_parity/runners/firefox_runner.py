"""Firefox ESR here, as a local device: started on the device page's URL on its own virtual
display (Xvfb: headless Firefox has no WebGL 2), with a fresh profile that keeps it off the
network; its captures are uploaded like a phone's (device_runner.DeviceSession) and saved as
keras_model_tfjs_firefox_<backend>. Report columns: after Chromium's, the same backends."""
import json
import os
import select
import shutil
import subprocess
import time

from .. import KitError, processes
from ..files import remove_stale_staging, staging_dir
from .browser_runner import BACKENDS, PAGE_TIMEOUT, NoModel  # noqa: F401 (BACKENDS: the page's, on any browser)
from .chromium import LAUNCH_TIMEOUT, find_browser, one_line, profiles_folder
from .device_runner import DeviceSession, page_parameters

NAME = "firefox"
SCRIPT = "run_browser.py --browser firefox"
FIREFOX_NAMES = ("firefox-esr", "firefox")


def run(job):
    """Every backend of `job` in one Firefox, each page uploading its capture to a device
    session of one device, each capture saved as it arrives (job.save), so a stop or a crash
    loses none that arrived. Returns {} (everything is saved); KitError naming every backend
    that did not arrive, or when Firefox died or the time ran out.

    With job.go (--wait-for-model): Firefox starts at once on a session that serves no model
    yet; its first page starts tfjs and its backend, self-tests it and waits until the model is
    served, which it is once go's line arrives (NoModel when stdin ends instead); the time
    allowed counts from then."""
    if job.save is None:
        raise KitError("a Firefox run saves each capture as it arrives: its Job needs `save`")
    timeout = job.options.get("timeout", PAGE_TIMEOUT)
    launch_timeout = job.options.get("launch_timeout", LAUNCH_TIMEOUT)
    session = DeviceSession(job.model_json, job.out_dir, job.backends, page_parameters(job), max_devices=1,
                            later=job.go is not None)
    with session, Firefox(session.url, launch_timeout) as browser:
        if job.go is not None:
            _wait_for_the_model(job.go, browser)
            session.serve_model()
        outcomes = session.wait(NAME, job.flags, job.save, devices=1, idle_timeout=timeout,
                                deadline=time.monotonic() + launch_timeout + timeout * len(job.backends),
                                alive=browser.exited)
    reported = {backend: outcome for done in outcomes.values() for backend, outcome in done.items()}
    failed = [f"backend {backend}: {reported.get(backend, 'no capture arrived')}" for backend in job.backends
              if reported.get(backend) != "saved"]
    if failed:
        raise KitError("in Firefox: " + "; ".join(failed))
    return {}


def _wait_for_the_model(go, browser):
    """--wait-for-model: Firefox started, its first page started up and waiting (wait=served)
    until the line arrives; NoModel when stdin ends instead, KitError when Firefox dies meanwhile."""
    while not go.arrived():
        ended = browser.exited()
        if ended:
            raise KitError(f"in Firefox, waiting for the model: {ended}")
        time.sleep(0.01)
    if not go.wait():
        raise NoModel(str(go.missing()))


# Firefox makes no calls home: every service that would is off, and whatever is left goes to
# a proxy on a port nothing listens on (loopback itself is never proxied).
FIREFOX_PREFERENCES = {
    "network.proxy.type": 1, "network.proxy.http": "127.0.0.1", "network.proxy.http_port": 1,
    "network.proxy.ssl": "127.0.0.1", "network.proxy.ssl_port": 1, "network.proxy.share_proxy_settings": True,
    "network.proxy.socks_remote_dns": True, "network.proxy.allow_hijacking_localhost": False,
    "network.proxy.no_proxies_on": "", "network.trr.mode": 5,
    # every name resolves to loopback, with no DNS query: what escapes the settings above goes nowhere
    "network.dns.forceResolve": "127.0.0.1", "network.dns.native-is-localhost": True, "network.dns.disablePrefetch": True,
    "network.prefetch-next": False, "network.predictor.enabled": False, "network.http.speculative-parallel-limit": 0,
    "network.captive-portal-service.enabled": False, "network.connectivity-service.enabled": False,
    "app.normandy.enabled": False, "app.update.enabled": False, "app.update.auto": False,
    "datareporting.policy.dataSubmissionEnabled": False, "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.firstRunURL": "", "toolkit.telemetry.enabled": False, "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False, "browser.ping-centre.telemetry": False,
    "browser.safebrowsing.malware.enabled": False, "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False, "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "", "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "extensions.update.enabled": False, "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False, "services.settings.server": "http://127.0.0.1:1/",
    "browser.region.network.url": "", "browser.region.update.enabled": False, "geo.provider.network.url": "",
    "dom.push.enabled": False, "dom.push.serverURL": "", "browser.search.update": False,
    "browser.topsites.contile.enabled": False, "identity.fxaccounts.enabled": False,
    "media.gmp-manager.url": "http://127.0.0.1:1/", "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-widevinecdm.enabled": False, "security.OCSP.enabled": 0,
    "browser.newtabpage.enabled": False, "browser.startup.homepage": "about:blank", "browser.startup.page": 0,
    "browser.shell.checkDefaultBrowser": False, "browser.aboutwelcome.enabled": False,
    "startup.homepage_welcome_url": "", "startup.homepage_welcome_url.additional": "",
    "browser.startup.homepage_override.mstone": "ignore", "browser.sessionstore.resume_from_crash": False,
    "toolkit.startup.max_resumed_crashes": -1, "browser.tabs.warnOnClose": False,
    # WebGL on Mesa's llvmpipe (a software GPU, as SwiftShader is for Chromium)
    "webgl.force-enabled": True,
}


def find_firefox():
    """FIREFOX_PATH when set, else firefox-esr or firefox on PATH; KitError when none."""
    return find_browser("FIREFOX_PATH", FIREFOX_NAMES, "Firefox",
                        "run `make setup-firefox` (installs Debian's firefox-esr and xvfb) or set FIREFOX_PATH")


class Firefox:
    """Firefox on `url`, on its own virtual display (Xvfb, started here), with a fresh profile
    that keeps it off the network; both in their own process groups, stopped (and the profile
    removed) when the block ends, whatever ends it."""

    def __init__(self, url, launch_timeout=LAUNCH_TIMEOUT):
        self.url, self.launch_timeout = url, launch_timeout
        self.executable = find_firefox()
        self.xvfb = shutil.which("Xvfb")
        if self.xvfb is None:
            raise KitError("Xvfb not found (Firefox needs a display for WebGL 2); run `make setup-firefox`")
        self.display = self.firefox = self.profile = None

    def __enter__(self):
        try:
            self.profile = _new_firefox_profile()
            self.display = self._start_display()
            env = dict(os.environ, DISPLAY=f":{self.display[1]}", HOME=str(self.profile), TMPDIR=str(self.profile),
                       MOZ_CRASHREPORTER_DISABLE="1", MOZ_DISABLE_AUTO_SAFE_MODE="1")
            try:
                with open(self.profile / "firefox.log", "wb") as log:
                    self.firefox = processes.start([self.executable, "--no-remote", "--new-instance", "--profile",
                                                    str(self.profile / "profile"), self.url],
                                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
            except (OSError, subprocess.SubprocessError) as error:
                raise KitError(f"could not start {self.executable}: {getattr(error, 'strerror', None) or error}") \
                    from None
        except BaseException:
            self.close()
            raise
        return self

    def _start_display(self):
        """Xvfb on a free display number (it tells which through -displayfd)."""
        read, write = os.pipe()
        try:
            try:
                xvfb = processes.start([self.xvfb, "-displayfd", str(write), "-screen", "0", "1280x1024x24",
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
                processes.stop(xvfb)
                raise KitError(f"{self.xvfb} did not start a display (exit status {xvfb.poll()})")
            return xvfb, int(number)
        finally:
            os.close(read)
            if write is not None:
                os.close(write)

    def exited(self):
        """None while Firefox runs; else a sentence saying it stopped, with its last words."""
        if self.firefox is None or self.firefox.poll() is None:
            return None
        try:
            lines = [line for line in (self.profile / "firefox.log").read_text(errors="replace").splitlines()
                     if line.strip() and "dbus" not in line.lower()]
        except OSError:
            lines = []
        return f"Firefox exited with status {self.firefox.returncode}" + (f" ({one_line(lines[-1])})" if lines else "")

    def close(self):
        for process in (self.firefox, self.display[0] if self.display else None):
            if process is not None:
                processes.stop(process, grace=0.5)
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    def __exit__(self, *exc):
        self.close()


def _new_firefox_profile():
    """A fresh folder (HOME, and the profile inside it) named with the kit's pid, after
    removing those of runs that are gone."""
    folder = profiles_folder("Firefox")
    remove_stale_staging(folder)
    home = staging_dir(folder, "firefox-profile")
    try:
        os.chmod(home, 0o700)
        (home / "profile").mkdir(mode=0o700)
        (home / "profile" / "user.js").write_text(
            "".join(f"user_pref({json.dumps(name)}, {json.dumps(value)});\n"
                    for name, value in FIREFOX_PREFERENCES.items()))
    except OSError as error:
        shutil.rmtree(home, ignore_errors=True)
        raise KitError(f"cannot write Firefox's profile in {folder}: {error.strerror or error}") from None
    return home
