"""Any device, any browser: serve the page, tfjs and the converted model on the address asked
for (loopback unless told otherwise), every path under a fresh random token; the device's
browser runs each backend asked for and uploads each capture; the kit saves them as ordinary
captures named after the device and backend (keras_model_tfjs_device_<backend>_<device>).

Firefox is run the same way, as a local device: Firefox ESR started on the URL on a virtual
display (Xvfb: headless Firefox has no WebGL 2), its captures uploaded like a phone's and
saved as keras_model_tfjs_firefox_<backend>.
"""
import ipaddress
import json
import os
import queue
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

from .. import KitError, processes
from ..capture import Capture
from ..files import remove_stale_staging, staging_dir
from ..runs import save_results, variant_of
from ..server import PageServer, Uploads
from .browser_runner import (BACKENDS, LAUNCH_TIMEOUT, PAGE_TIMEOUT, check_servable, find_browser, one_line,
                             profiles_folder, read_upload, routes_for)

NAME = "device"
FIREFOX = "firefox"
IDLE_TIMEOUT = 600.0  # seconds without a request before a device run ends by itself (--idle-timeout)
FIREFOX_NAMES = ("firefox-esr", "firefox")
MAX_DEVICES = 8  # distinct devices one run takes captures from (--devices N: N); a bound on what a LAN can send
DEVICE_NAME_LIMIT = 48
PAGE_DEFAULTS = {"flags": "{}", "metadata": "{}", "repeat": 10, "budget": 10}  # the page's own


def device_of(headers):
    """The device a request comes from: its User-Agent's name (device_name), then the random
    id its page keeps (X-Kit-Device), so that two phones whose browsers say the same thing
    stay two devices."""
    name = device_name(headers.get("User-Agent", ""))
    device_id = re.sub(r"[^0-9a-f]", "", (headers.get("X-Kit-Device") or "").lower())[:8]
    return f"{name}-{device_id}" if device_id else name


def device_name(user_agent):
    """A short, file-name-safe name for the device a User-Agent describes: its platform (or
    phone model), browser and major version, e.g. 'android-pixel-7-chrome-131',
    'iphone-safari-17', 'linux-firefox-153'. The same device and browser give the same name,
    so its next upload replaces the last."""
    ua = (user_agent or "")[:512]  # a User-Agent is a line; a megabyte of one is not worth matching
    browser = "browser"
    for pattern, name in ((r"Edg(?:A|iOS)?/(\d+)", "edge"), (r"OPR/(\d+)", "opera"),
                          (r"SamsungBrowser/(\d+)", "samsung"), (r"(?:Firefox|FxiOS)/(\d+)", "firefox"),
                          (r"HeadlessChrome/(\d+)", "headless-chrome"), (r"(?:Chrome|CriOS)/(\d+)", "chrome"),
                          (r"Version/(\d+)[.\d]* (?:Mobile/\w+ )?Safari/", "safari")):
        match = re.search(pattern, ua)
        if match:
            browser = f"{name}-{match[1]}"
            break
    android = re.search(r"Android [\d.]+; (?:[^;)]*; )?([^;)]+?)(?: Build/[^;)]*)?\)", ua)
    if android and android[1].strip() not in ("K", "wv"):
        platform = f"android-{android[1]}"
    elif "Android" in ua:
        platform = "android"
    else:
        platform = next((name for token, name in (("iPhone", "iphone"), ("iPad", "ipad"), ("Macintosh", "mac"),
                                                  ("Windows", "windows"), ("CrOS", "chromeos"), ("Linux", "linux"))
                         if token in ua), "unknown")
    slug = re.sub(r"[^a-z0-9]+", "-", f"{platform}-{browser}".lower()).strip("-")
    return slug[:DEVICE_NAME_LIMIT].rstrip("-") or "device"


def parse_listen(text):
    """argparse type for --listen ADDRESS[:PORT] ([v6]:PORT for IPv6): (address, port)."""
    import argparse
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([0-9.]+)(?::(\d+))?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an IP address, optionally with :PORT "
                                         "(e.g. 127.0.0.2, 192.168.1.20:8800, [::1]:8800)")
    host, port = (match[1], match[2]) if match[1] else (match[3], match[4])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {host} is not an IP address") from None
    mapped = getattr(address, "ipv4_mapped", None) or address  # ::ffff:0.0.0.0 is 0.0.0.0
    if mapped.is_multicast or mapped == ipaddress.ip_address("255.255.255.255"):
        raise argparse.ArgumentTypeError(f"{text!r}: not an address of one machine")
    if mapped.is_unspecified:  # every address: more than a device needs, and no URL to print
        raise argparse.ArgumentTypeError(f"{text!r}: give the one address the device will use (this machine's "
                                         "address on its network), not every address")
    port = int(port or 0)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port {port} is beyond 65535")
    return host, port


class DeviceSession:
    """The server of one device run: the page, tfjs and the model under /<token>/, uploads
    per device and backend (a repeat replaces), and the events devices cause. A context
    manager; the server is closed (every later request refused) when it ends."""

    def __init__(self, model_json, staging, backends, page, listen=("127.0.0.1", 0), max_devices=MAX_DEVICES):
        model_json = check_servable(model_json)
        self.backends = list(backends)
        # a capture holds what Python's holds, as float32: no device may send much more
        self.uploads = Uploads(staging, self.backends, limit=expected_capture_bytes(model_json.parent.parent),
                               repeatable=True, max_devices=max_devices)
        self.server = PageServer(routes_for(model_json), self.uploads, host=listen[0], port=listen[1],
                                 roots=[model_json.parent.parent], prefix=f"/{self.uploads.token}",
                                 device_of=device_of, events=self.uploads.events)
        # only what differs from the page's defaults: a short URL makes a readable QR code
        self.query = urlencode(dict({"backends": ",".join(self.backends)},
                                    **{name: value for name, value in page.items() if PAGE_DEFAULTS.get(name) != value}),
                               safe=",")

    @property
    def url(self):
        return self.server.url_of(f"/inference_in_browser.html?{self.query}")

    def served(self):
        """What is served, in words, for the start-up lines."""
        model = sorted(path.removeprefix("/model/") for path in self.server.routes if path.startswith("/model/"))
        tfjs = sum(path.startswith("/node_modules/") for path in self.server.routes)
        return (f"the page, inference_common.js, the wire contract, tfjs {tfjs} files from "
                f"node_modules, and the model ({', '.join(model)}); nothing else, and only under the token")

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    def wait(self, out_dir, runtime, flags, requested_format, devices=None, idle_timeout=IDLE_TIMEOUT,
             deadline=None, alive=None, say=print):
        """Save every capture that arrives, and say so (one line each); return {device:
        {backend: "saved" or the error}} once `devices` devices have reported on every backend,
        or after `idle_timeout` seconds without a request. `deadline` (monotonic) ends it with a
        KitError, and so does `alive()` returning a sentence (a local browser that died)."""
        outcomes = {}
        try:
            while True:
                if devices is not None and \
                        sum(len(done) == len(self.backends) for done in outcomes.values()) >= devices:
                    return outcomes
                if deadline is not None and time.monotonic() > deadline:
                    raise KitError(f"no capture of every backend within the time allowed; {_summary(outcomes)}")
                ended = alive() if alive is not None else None
                if ended:
                    raise KitError(f"{ended}; {_summary(outcomes)}")
                if time.monotonic() - self.server.last_request > idle_timeout:
                    say(f"no request for {idle_timeout:g} s: stopping ({_summary(outcomes)})")
                    return outcomes
                try:
                    event = self.uploads.events.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._handle(event, outcomes, out_dir, runtime, flags, requested_format, say)
        except KeyboardInterrupt:
            say(f"stopped: {_summary(outcomes)}")
            raise

    def _handle(self, event, outcomes, out_dir, runtime, flags, requested_format, say):
        """Say what a device did; save what it uploaded (a device run's capture is named after
        its device, a Firefox one is not)."""
        device, backend = event["device"], event.get("name")
        if event["event"] == "opened":
            say(f"device {device} opened the page ({one_line(event['user_agent'])})")
            return
        done = outcomes.setdefault(device, {})
        if event["event"] == "failed":
            done[backend] = one_line(event["error"])
            say(f"device {device}: backend {backend} did not run there: {done[backend]}")
            return
        try:
            capture = read_upload(self.uploads, backend, device)
            capture.metadata.update(runtime=runtime, device=device)
            variant = "_".join(part for part in ((device if runtime == NAME else ""), variant_of(flags)) if part)
            if variant:
                capture.metadata["variant"] = variant
            else:
                capture.metadata.pop("variant", None)
            save_results({backend: capture}, out_dir, runtime, flags, requested_format, variant=variant)
            done[backend] = "saved"
        except KitError as error:
            done[backend] = one_line(error)
            say(f"device {device}: backend {backend}: {done[backend]}")


def expected_capture_bytes(out_dir):
    """What a browser's capture of this model may take: as many values as Python's capture
    holds, as float32, plus a header; the study's own limit when Python's is missing."""
    from ..capture import JSON_LIMIT
    from ..paths import PYTHON_CAPTURE, find_capture
    from ..server import MAX_CAPTURE_BYTES, MAX_HEADER_BYTES
    try:
        values = Capture.load(find_capture(out_dir, PYTHON_CAPTURE)).values
    except KitError:
        return MAX_CAPTURE_BYTES
    # + the inputs (in the metadata) and room for what a runtime records; at least a study's size
    return 8 * max(values, JSON_LIMIT) + MAX_HEADER_BYTES


def _summary(outcomes):
    saved = sum(outcome == "saved" for done in outcomes.values() for outcome in done.values())
    return f"{saved} capture(s) saved from {len(outcomes)} device(s)"


def print_qr(url):
    """The URL as a QR code on the terminal, for a phone's camera (segno: a well-kept QR library)."""
    import segno
    segno.make(url, error="l").terminal(compact=True)


# --------------------------------------------------------------------------- Firefox

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
            import select
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


def run(model_json, out_dir, backends, flags, repeat, budget, metadata, requested_format=None, firefox=False,
        listen=None, devices=None, idle_timeout=IDLE_TIMEOUT, timeout=PAGE_TIMEOUT, launch_timeout=LAUNCH_TIMEOUT,
        say=print):
    """Device mode (wait for devices on `listen`, save their captures) or, with `firefox`,
    Firefox here as the one device. Returns the exit status; KitError when nothing usable
    arrived (device mode) or a backend failed (Firefox)."""
    page = {"flags": json.dumps(flags or {}), "repeat": repeat, "budget": budget, "metadata": json.dumps(metadata or {})}
    session = DeviceSession(model_json, out_dir, backends, page, listen or ("127.0.0.1", 0),
                            max_devices=1 if firefox else (devices or MAX_DEVICES))
    if firefox:
        with session, Firefox(session.url, launch_timeout) as browser:
            outcomes = session.wait(out_dir, FIREFOX, flags, requested_format, devices=1, idle_timeout=timeout,
                                    deadline=time.monotonic() + launch_timeout + timeout * len(backends),
                                    alive=browser.exited, say=say)
        reported = {backend: outcome for done in outcomes.values() for backend, outcome in done.items()}
        failed = [f"backend {backend}: {reported.get(backend, 'no capture arrived')}" for backend in backends
                  if reported.get(backend) != "saved"]
        if failed:
            raise KitError("in Firefox: " + "; ".join(failed))
        return 0
    with session:
        say(f"serving on {session.server.netloc} only: {session.served()}")
        say(f"open this on the device (it runs {', '.join(backends)} and uploads each capture here):")
        say(f"  {session.url}")
        print_qr(session.url)
        say("waiting for devices: " + (f"ends after {devices}" if devices else "Ctrl-C ends")
            + f", or after {idle_timeout:g} s without a request")
        outcomes = session.wait(out_dir, NAME, flags, requested_format, devices=devices, idle_timeout=idle_timeout,
                                say=say)
    if not any(outcome == "saved" for done in outcomes.values() for outcome in done.values()):
        raise KitError("no device uploaded a capture")
    say(f"done: {_summary(outcomes)}")
    return 0
