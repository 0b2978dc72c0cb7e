"""Firefox ESR here, a Browser (browsers.py): started on the page's URL on its own virtual
display (Xvfb: headless Firefox has no WebGL 2), with a fresh profile that keeps it off the
network; its captures are uploaded like a phone's (session.run_in) and saved as
keras_model_tfjs_firefox_<backend>. Report columns: after Chromium's, the same backends."""
import json
import os
import shutil
import subprocess
from dataclasses import dataclass

from .. import KitError, processes
from ..files import remove_stale_staging, staging_dir
from ..wire import BROWSER_BACKENDS
from .browsers import LAUNCH_TIMEOUT, PAGE_TIMEOUT, Browser, VirtualDisplay, find_browser, one_line, profiles_folder
from .session import run_in

NAME = "firefox"
SCRIPT = "run_browser.py --browser firefox"
BACKENDS = BROWSER_BACKENDS  # the page's, on any browser
FIREFOX_NAMES = ("firefox-esr", "firefox")


CHOSEN_BY = "--browser firefox"


@dataclass
class Options:
    timeout: float = PAGE_TIMEOUT            # seconds each backend's page may take
    launch_timeout: float = LAUNCH_TIMEOUT   # seconds Firefox and its display may take to start


def options(args):
    return Options(args.timeout, args.launch_timeout)


def run(job):
    """Every backend of `job` in one Firefox, each page uploading its capture (session.run_in):
    yields (backend, Capture | KitError) as each arrives."""
    return run_in(Firefox(job.option("launch_timeout", LAUNCH_TIMEOUT)), job, NAME)


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


def installed():
    """KitError unless Firefox and Xvfb are here."""
    find_firefox()
    VirtualDisplay()


def find_firefox():
    """FIREFOX_PATH when set, else firefox-esr or firefox on PATH; KitError when none."""
    return find_browser("FIREFOX_PATH", FIREFOX_NAMES, "Firefox",
                        "run `make setup-firefox` (installs Debian's firefox-esr and xvfb) or set FIREFOX_PATH")


class Firefox(Browser):
    """Firefox on its own virtual display (Xvfb), with a fresh profile that keeps it off the
    network; both in their own process groups, stopped (and the profile removed) on close."""
    name = "Firefox"

    def __init__(self, launch_timeout=LAUNCH_TIMEOUT):
        self.launch_timeout = launch_timeout
        self.executable = find_firefox()
        self.display = VirtualDisplay(launch_timeout)
        self.firefox = self.profile = None

    def start(self):
        self.profile = _new_firefox_profile()
        self.display.start()

    def open(self, url):
        """Firefox itself starts here, on `url` (it takes no URL later from outside)."""
        if self.firefox is not None:
            raise KitError("Firefox is open on a page already: the kit opens one per run")
        env = dict(os.environ, DISPLAY=self.display.name, HOME=str(self.profile), TMPDIR=str(self.profile),
                   MOZ_CRASHREPORTER_DISABLE="1", MOZ_DISABLE_AUTO_SAFE_MODE="1")
        try:
            with open(self.profile / "firefox.log", "wb") as log:
                self.firefox = processes.start([self.executable, "--no-remote", "--new-instance", "--profile",
                                                str(self.profile / "profile"), url],
                                               stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        except (OSError, subprocess.SubprocessError) as error:
            raise KitError(f"could not start {self.executable}: {getattr(error, 'strerror', None) or error}") from None

    def alive(self):
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
        if self.firefox is not None:
            processes.stop(self.firefox, grace=0.5)
        self.display.stop()
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None


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
