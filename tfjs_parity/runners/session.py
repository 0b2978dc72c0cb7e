"""The page-and-upload machinery every browser shares: serve the page, tfjs and the converted
model under a fresh random token (on loopback unless told otherwise), let the page run each
backend asked for and upload each capture, and hand each one over as it arrives, checked to
be of this run's model. A device run (device_runner) waits for any browser that opens the
URL; run_in() drives one Browser (browsers.py) there: Firefox, WebKit, a WebDriver session."""
import json
import queue
import re
import time
from pathlib import Path
from urllib.parse import urlencode

from .. import KitError
from ..capture import Capture
from ..server import PageServer
from ..steps import variant_of
from ..uploads import NO_MODEL_YET, Uploads
from ..wire import DEFAULTS
from .browsers import LAUNCH_TIMEOUT, PAGE_TIMEOUT, NoModel, one_line
from .page import check_model, check_servable, check_tfjs_files, model_routes, page_routes, read_upload, routes_for

MAX_DEVICES = 8  # distinct devices one run takes captures from (--devices N: N); a bound on what a LAN can send
DEVICE_NAME_LIMIT = 48
PAGE_DEFAULTS = dict(DEFAULTS, flags="{}", metadata="{}")  # the page's own
DEVICE_RUNTIME = "device"  # the runtime whose captures are named after their device


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

    def arrivals(self, runtime, flags, devices=None, idle_timeout=None, deadline=None, alive=None, say=print):
        """Yield (device, backend, Capture | KitError) for every capture that arrives, and for
        every backend a device says did not run there (it is said too, one line each); end
        once `devices` devices have reported on every backend, or after `idle_timeout` seconds
        without a request (said). `deadline` (monotonic) ends it with a KitError, and so does
        `alive()` returning a sentence (a local browser that died). The generator's return
        value: {device: {backend: "arrived" or the error}}."""
        outcomes = {}
        try:
            while True:
                if devices is not None and \
                        sum(len(done) == len(self.backends) for done in outcomes.values()) >= devices:
                    return outcomes
                try:  # what arrived first: a check below that took long (a remote session's) loses none of it
                    event = self.uploads.events.get(timeout=0.2)
                except queue.Empty:
                    event = None
                if event is not None:
                    arrived = self._handle(event, outcomes, runtime, flags, say)
                    if arrived is not None:
                        yield arrived
                    if not self.uploads.events.empty():
                        continue
                if deadline is not None and time.monotonic() > deadline:
                    raise KitError(f"no capture of every backend within the time allowed; {summary(outcomes)}")
                ended = alive() if alive is not None else None
                if ended:
                    yield from self._take_arrived(outcomes, runtime, flags, say)
                    raise KitError(f"{ended}; {summary(outcomes)}")
                if idle_timeout is not None and time.monotonic() - self.server.last_request > idle_timeout:
                    say(f"no request for {idle_timeout:g} s: stopping ({summary(outcomes)})")
                    return outcomes
        except KeyboardInterrupt:
            if runtime == DEVICE_RUNTIME:  # a browser run here says its one line through the step
                say(f"stopped: {summary(outcomes)}")
            raise

    def _take_arrived(self, outcomes, runtime, flags, say):
        """Every event already queued, handled (the run is about to end)."""
        while True:
            try:
                event = self.uploads.events.get_nowait()
            except queue.Empty:
                return
            arrived = self._handle(event, outcomes, runtime, flags, say)
            if arrived is not None:
                yield arrived

    def _handle(self, event, outcomes, runtime, flags, say):
        """Say what a device did; (device, backend, Capture | KitError) for a capture it
        uploaded or a backend it could not run (a device run's capture is named after its
        device, a Firefox one is not), None for anything else."""
        device, backend = event["device"], event.get("name")
        # a device's lines name it; a browser run here has one page, whose failures are the run's error lines
        device_run = runtime == DEVICE_RUNTIME
        if event["event"] == "opened":
            say(f"{f'device {device}' if device_run else runtime} opened the page ({one_line(event['user_agent'])})")
            return None
        done = outcomes.setdefault(device, {})
        if event["event"] == "failed":
            done[backend] = one_line(event["error"])
            if device_run:
                say(f"device {device}: backend {backend} did not run there: {done[backend]}")
            return device, backend, KitError(done[backend])
        try:
            capture = read_upload(self.uploads, backend, device)
        except KitError as error:
            done[backend] = one_line(error)
            if device_run:
                say(f"device {device}: backend {backend}: {done[backend]}")
            return device, backend, KitError(done[backend])  # not this run's, or not whole
        capture.metadata.update(runtime=runtime, device=device)
        variant = "_".join(part for part in ((device if runtime == DEVICE_RUNTIME else ""), variant_of(flags))
                           if part)
        if variant:
            capture.metadata["variant"] = variant
        else:
            capture.metadata.pop("variant", None)
        done[backend] = "arrived"
        return device, backend, capture


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


def summary(outcomes):
    arrived = sum(outcome == "arrived" for done in outcomes.values() for outcome in done.values())
    return f"{arrived} capture(s) received from {len(outcomes)} device(s)"


def run_in(browser, job, runtime):
    """Every backend of `job` in `browser` (a Browser, not yet started): one page on a session
    of one device runs each backend in turn and uploads each capture; yield (backend, Capture
    | KitError) as each arrives, then each backend that did not with why.

    With job.go (--wait-for-model): the browser starts at once on a session that serves no
    model yet; its page starts tfjs and its backend, self-tests it and waits until the model
    is served, which it is once go's line arrives (NoModel when stdin ends instead); the time
    allowed counts from then."""
    timeout = job.option("timeout", PAGE_TIMEOUT)
    launch_timeout = job.option("launch_timeout", LAUNCH_TIMEOUT)
    session = DeviceSession(job.model_json, job.out_dir, job.backends, page_parameters(job), max_devices=1,
                            later=job.go is not None, listen=job.option("listen", None) or ("127.0.0.1", 0))
    reported, ended = {}, None
    with session, browser:
        browser.open(session.url)
        if job.go is not None:
            _wait_for_the_model(job.go, browser)
            session.serve_model()
        try:
            for _, backend, outcome in session.arrivals(runtime, job.flags, devices=1, idle_timeout=timeout,
                                                        deadline=time.monotonic() + launch_timeout
                                                        + timeout * len(job.backends), alive=browser.alive):
                reported[backend] = outcome
                if not isinstance(outcome, KitError):
                    outcome.metadata.update(browser.metadata())
                yield backend, outcome
        except KitError as error:
            ended = error
    for backend in job.backends:
        if backend not in reported:
            yield backend, KitError(str(ended) if ended else f"{browser.name}: no capture arrived")


def _wait_for_the_model(go, browser):
    """--wait-for-model: the browser started, its page started up and waiting (wait=served)
    until the line arrives; NoModel when stdin ends instead, KitError when the browser dies."""
    while not go.arrived():
        ended = browser.alive()
        if ended:
            raise KitError(f"in {browser.name}, waiting for the model: {ended}")
        time.sleep(0.01)
    if not go.wait():
        raise NoModel(str(go.missing()))


def page_values(browser, routes, pages, expression, timeout=PAGE_TIMEOUT):
    """Open each of `pages` (a path and query on a server of `routes`) in `browser` (a Browser
    that can evaluate: a WebDriver session) and return [the page's `expression` once it is
    defined, or the KitError of that page] (a standalone page, the reproducer's: no upload,
    no kit script)."""
    results = []
    with PageServer(routes) as server, browser:
        for path in pages:
            try:
                browser.open(f"{server.url}{path}")
                deadline = time.monotonic() + timeout
                while True:
                    value = browser.evaluate(f"typeof {expression} === 'undefined' ? null : {expression}")
                    if value is not None:
                        results.append(value)
                        break
                    ended = browser.alive()
                    if ended:
                        raise KitError(ended)
                    if time.monotonic() > deadline:
                        raise KitError(f"{path}: {expression} was not set within {timeout:g} s")
                    time.sleep(0.1)
            except KitError as error:
                results.append(error)
    return results
