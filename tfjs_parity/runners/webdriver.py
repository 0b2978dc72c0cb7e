"""W3C WebDriver, the kit's own small client (no Selenium): what every browser automation
service speaks (WebKitWebDriver, chromedriver, geckodriver, Selenium Grid, device clouds).
A WebDriverSession is a Browser (browsers.py): start asks the endpoint for a session with the
capabilities given untouched, open(url) navigates, alive() asks for the URL, close() ends
the session. Every answer is bounded: at most MAX_ANSWER bytes, within the request's
timeout, a JSON object, or one line saying what came instead.

WebKit is a WebDriverSession on a WebKitWebDriver the kit starts itself, on loopback and a
virtual display (webkit_runner)."""
import base64
import http.client
import json
import re
import socket
import threading
import time
from urllib.parse import unquote, urlsplit

from .. import KitError
from .browsers import LAUNCH_TIMEOUT, Browser, one_line

MAX_ANSWER = 1 << 20  # bytes: a WebDriver answer is a small JSON object; a megabyte is not one
REQUEST_TIMEOUT = 30.0  # seconds one request may take, connection to last byte (a new session: the launch timeout)
ALIVE_EVERY = 2.0  # seconds between asking a session whether it is still there
ALIVE_TIMEOUT = 10.0  # seconds that question may take; two unanswered in a row: the session is gone


class WebDriverError(KitError):
    pass


SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:{}-]{0,199}")


def shown(endpoint):
    """`endpoint` as messages show it: a password in it (user:key@hub, as device clouds are
    reached) replaced by ***."""
    try:
        parts = urlsplit(endpoint)
        if parts.password is not None:
            return parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rsplit('@', 1)[1]}").geturl()
    except ValueError:
        return one_line(endpoint, 120)
    return endpoint


def check_endpoint(endpoint):
    """KitError unless `endpoint` is an http(s) URL with a host (what --webdriver takes)."""
    try:
        parts = urlsplit(endpoint)
        parts.port, parts.hostname
    except ValueError as error:
        raise KitError(f"--webdriver {shown(endpoint)}: not a URL with a host and a port from 0 to 65535 "
                       f"({one_line(error, 80)})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KitError(f"--webdriver {shown(endpoint)}: a WebDriver endpoint is an http:// or https:// URL "
                       "(e.g. http://127.0.0.1:4444/wd/hub)")


def request(endpoint, method, path, body=None, timeout=REQUEST_TIMEOUT):
    """`method` `path` on the WebDriver `endpoint` (http://host:port[/prefix]) with a JSON
    `body`; its answer's "value". WebDriverError (one line) for anything else: no answer
    within `timeout`, a refused connection, more than MAX_ANSWER bytes, not JSON, a W3C
    error (its "error" and "message")."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebDriverError(f"{shown(endpoint)}: a WebDriver endpoint is an http:// or https:// URL")
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    login = {}
    if parts.username is not None:  # user:key@hub: HTTP basic authentication, as every Grid and cloud takes it
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        login = {"Authorization": f"Basic {token}"}
    deadline = time.monotonic() + timeout
    where = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    expired = threading.Event()

    def cut():  # at the deadline, whatever the connection is doing (headers a line a second, say)
        expired.set()
        sock = connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json", **login}
        connection.request(method, parts.path.rstrip("/") + path, body=data, headers=headers)
        response = connection.getresponse()
        answer = bytearray()
        while True:
            if time.monotonic() > deadline:
                raise WebDriverError(f"{where} did not finish answering {method} {path} within {timeout:g} s")
            chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
            if not chunk:
                break
            answer += chunk
            if len(answer) > MAX_ANSWER:
                raise WebDriverError(f"{where} answered {method} {path} with more than {MAX_ANSWER:,} bytes: "
                                     "not a WebDriver answer")
        status = response.status
    except WebDriverError:
        raise
    except (OSError, http.client.HTTPException) as error:
        if expired.is_set():
            raise WebDriverError(f"{where} did not finish answering {method} {path} within {timeout:g} s") from None
        what = "no answer" if isinstance(error, (socket.timeout, TimeoutError)) else one_line(error) or type(error).__name__
        raise WebDriverError(f"{where}: {method} {path}: {what}") from None
    finally:
        timer.cancel()
        connection.close()
    if expired.is_set() and len(answer) == 0:
        raise WebDriverError(f"{where} did not finish answering {method} {path} within {timeout:g} s")
    try:
        decoded = json.loads(answer.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WebDriverError(f"{where} answered {method} {path} with HTTP {status} and no JSON: "
                             f"{one_line(answer[:200].decode('utf-8', 'replace')) or '(nothing)'}") from None
    value = decoded.get("value") if isinstance(decoded, dict) else None
    if status >= 400 or (isinstance(value, dict) and "error" in value and status != 200):
        error = value if isinstance(value, dict) else {}
        raise WebDriverError(f"{where}: {method} {path}: HTTP {status} "
                             f"{one_line(error.get('error', ''), 80)}: {one_line(error.get('message', ''), 200)}".rstrip(": "))
    if not isinstance(decoded, dict) or "value" not in decoded:
        raise WebDriverError(f"{where} answered {method} {path} with JSON that is not a WebDriver answer "
                             "(no \"value\")")
    return value


class WebDriverSession(Browser):
    """A session of the WebDriver `endpoint` with `capabilities` (passed untouched, as
    alwaysMatch): a Browser. `described` (after start): what the session says it is."""

    def __init__(self, endpoint, capabilities, launch_timeout=LAUNCH_TIMEOUT, name=None):
        self.endpoint, self.capabilities, self.launch_timeout = endpoint.rstrip("/"), capabilities, launch_timeout
        self.name = name or f"the WebDriver session at {shown(self.endpoint)}"
        self.session = None
        self.described = {}
        self.ended = None
        self.checked, self.unanswered = 0.0, 0

    def start(self):
        value = request(self.endpoint, "POST", "/session",
                        {"capabilities": {"alwaysMatch": self.capabilities, "firstMatch": [{}]}},
                        timeout=self.launch_timeout)
        session = value.get("sessionId") if isinstance(value, dict) else None
        if not isinstance(session, str) or not SESSION_ID.fullmatch(session):
            raise WebDriverError(f"{shown(self.endpoint)} answered the new session without a session id it can be "
                                 "asked by (letters, digits and ._:{}-)")
        self.session = session
        described = value.get("capabilities")
        self.described = described if isinstance(described, dict) else {}

    def open(self, url):
        request(self.endpoint, "POST", f"/session/{self.session}/url", {"url": url}, timeout=self.launch_timeout)

    def alive(self):
        """None while the session answers (its current URL, asked at most every ALIVE_EVERY
        s); else why not, once it failed to answer twice in a row."""
        if self.ended or self.session is None or time.monotonic() - self.checked < ALIVE_EVERY:
            return self.ended
        self.checked = time.monotonic()
        try:
            request(self.endpoint, "GET", f"/session/{self.session}/url", timeout=ALIVE_TIMEOUT)
            self.unanswered = 0
        except WebDriverError as error:
            self.unanswered += 1
            if self.unanswered >= 2:
                self.ended = f"{self.name} ended: {error}"
        return self.ended

    def evaluate(self, expression, timeout=REQUEST_TIMEOUT):
        """The value of the JavaScript `expression` in the session's page."""
        return request(self.endpoint, "POST", f"/session/{self.session}/execute/sync",
                       {"script": f"return ({expression});", "args": []}, timeout=timeout)

    def close(self):
        session, self.session = self.session, None
        if session is not None:
            try:
                request(self.endpoint, "DELETE", f"/session/{session}", timeout=5.0)
            except WebDriverError:
                pass  # gone already, or the endpoint with it

    def metadata(self):
        """What the session says it is, for every capture it makes."""
        keep = {key: self.described[key] for key in ("browserName", "browserVersion", "platformName")
                if isinstance(self.described.get(key), str)}
        return {"webdriver": {key: one_line(value, 80) for key, value in keep.items()}} if keep else {}
