"""Any device, any browser: serve the page, tfjs and the converted model on the address asked
for (loopback unless told otherwise), every path under a fresh random token; the device's
browser runs each backend asked for and uploads each capture; the step saves each as it
arrives (job.save), as an ordinary capture named after the device and backend
(keras_model_tfjs_device_<backend>_<device>). Firefox here uses the same session
(firefox_runner)."""
import ipaddress
import json
import queue
import re
import time
from pathlib import Path
from urllib.parse import urlencode

from .. import KitError
from ..capture import Capture
from ..steps import variant_of
from ..server import PageServer
from ..uploads import NO_MODEL_YET, Uploads
from .browser_runner import BACKENDS  # noqa: F401 (the page's backends, on any browser)
from .chromium import one_line
from .page import check_model, check_servable, check_tfjs_files, model_routes, page_routes, read_upload, routes_for

NAME = "device"
SCRIPT = "run_browser.py --device"
IDLE_TIMEOUT = 600.0  # seconds without a request before a device run ends by itself (--idle-timeout)
MAX_DEVICES = 8  # distinct devices one run takes captures from (--devices N: N); a bound on what a LAN can send
DEVICE_NAME_LIMIT = 48
PAGE_DEFAULTS = {"flags": "{}", "metadata": "{}", "repeat": 10, "budget": 10, "repeat_check": 2}  # the page's own


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

    def __init__(self, model_json, staging, backends, page, listen=("127.0.0.1", 0), max_devices=MAX_DEVICES,
                 later=False):
        """`later`: the model is not there yet (--wait-for-model): the page and tfjs are served
        now, the page waits started up (wait=served) and every upload is refused until
        serve_model()."""
        self.model_json = Path(model_json)
        if later:
            check_tfjs_files()
            routes, limit, model_id = page_routes(), 0, NO_MODEL_YET
        else:
            model_json = check_servable(model_json)
            routes, limit, model_id = routes_for(model_json), *self._model_limits(model_json)
        self.backends = list(backends)
        self.uploads = Uploads(staging, self.backends, limit=limit, repeatable=True, max_devices=max_devices,
                               model_id=model_id)
        self.server = PageServer(routes, self.uploads, host=listen[0], port=listen[1],
                                 roots=[self.model_json.parent.parent], prefix=f"/{self.uploads.token}",
                                 device_of=device_of, events=self.uploads.events)
        # only what differs from the page's defaults: a short URL makes a readable QR code
        self.query = urlencode(dict({"backends": ",".join(self.backends)}, **({"wait": "served"} if later else {}),
                                    **{name: value for name, value in page.items() if PAGE_DEFAULTS.get(name) != value}),
                               safe=",")

    @staticmethod
    def _model_limits(model_json):
        """(the most bytes an upload may take, the model's id): a capture holds what Python's
        holds, as float32, so no device may send much more; every upload must be of this model."""
        return expected_capture_bytes(model_json.parent.parent), _model_id(model_json)

    def serve_model(self):
        """The model is there now (made after the session started: `later`): what uploads may
        be and the model's files, in that order, since the page reads the model once it is served."""
        model_json = check_model(self.model_json)
        self.uploads.limit, self.uploads.model_id = self._model_limits(model_json)
        self.server.add_routes(model_routes(model_json))

    @property
    def url(self):
        return self.server.url_of(f"/inference_in_browser.html?{self.query}")

    def served(self):
        """What is served, in words, for the start-up lines."""
        model = sorted(path.removeprefix("/model/") for path in self.server.routes if path.startswith("/model/"))
        tfjs = sum(path.startswith("/node_modules/") for path in self.server.routes)
        return (f"the page, its scripts, the wire contract, tfjs {tfjs} files from "
                f"node_modules, and the model ({', '.join(model)}); nothing else, and only under the token")

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    def wait(self, runtime, flags, save, devices=None, idle_timeout=IDLE_TIMEOUT, deadline=None, alive=None,
             say=print):
        """Hand every capture that arrives to `save(backend, capture, variant)` (KitError when it
        cannot be saved), and say what each device did (one line each); return {device:
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
                self._handle(event, outcomes, runtime, flags, save, say)
        except KeyboardInterrupt:
            say(f"stopped: {_summary(outcomes)}")
            raise

    def _handle(self, event, outcomes, runtime, flags, save, say):
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
            save(backend, capture, variant)
            done[backend] = "saved"
        except KitError as error:
            done[backend] = one_line(error)
            say(f"device {device}: backend {backend}: {done[backend]}")


def page_parameters(job):
    """The page's query parameters for `job` (its defaults left out)."""
    return {"flags": json.dumps(job.flags or {}), "repeat": job.repeat, "budget": job.budget,
            "repeat_check": job.repeat_check,
            "metadata": json.dumps(job.metadata or {})}


def _model_id(model_json):
    """The id of the converted model at `model_json` (its probe plan's): every upload must be of it."""
    from ..plan import PLAN_FILE, Plan
    plan = Path(model_json).parent / PLAN_FILE
    return Plan.load(plan).model_id or None if plan.is_file() else None


def expected_capture_bytes(out_dir):
    """What a browser's capture of this model may take: as many values as Python's capture
    holds, as float32, plus a header; the study's own limit when Python's is missing."""
    from ..capture import JSON_LIMIT
    from ..paths import PYTHON_CAPTURE, find_capture
    from ..uploads import MAX_CAPTURE_BYTES, MAX_HEADER_BYTES
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


def run(job, say=print):
    """Wait for devices on job.options["listen"] and save each capture they upload as it
    arrives (job.save); end after job.options["devices"] devices, the idle timeout, or Ctrl-C.
    Returns {} (everything is saved already); KitError when no device uploaded a capture."""
    if job.save is None:
        raise KitError("a device run saves each capture as it arrives: its Job needs `save`")
    options = job.options
    devices, idle_timeout = options.get("devices"), options.get("idle_timeout") or IDLE_TIMEOUT
    session = DeviceSession(job.model_json, job.out_dir, job.backends, page_parameters(job),
                            options.get("listen") or ("127.0.0.1", 0), max_devices=devices or MAX_DEVICES)
    with session:
        say(f"serving on {session.server.netloc} only: {session.served()}")
        say(f"open this on the device (it runs {', '.join(job.backends)} and uploads each capture here):")
        say(f"  {session.url}")
        print_qr(session.url)
        say("waiting for devices: " + (f"ends after {devices}" if devices else "Ctrl-C ends")
            + f", or after {idle_timeout:g} s without a request")
        outcomes = session.wait(NAME, job.flags, job.save, devices=devices, idle_timeout=idle_timeout, say=say)
    if not any(outcome == "saved" for done in outcomes.values() for outcome in done.values()):
        raise KitError("no device uploaded a capture")
    say(f"done: {_summary(outcomes)}")
    return {}
