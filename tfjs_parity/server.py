"""A loopback HTTP server for the browser page that serves an allowlist and nothing else
(no directory listing, no path resolution, only its own Host, only regular files, and none
reached through a symlink below its served folder), and hands the page's uploads to the
run's Uploads (uploads.py: the upload state machine), reading each body a piece at a time."""
import contextlib
import http.server
import json
import os
import socket
import stat
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import KitError
from .uploads import MAX_REQUEST_BYTES, UploadRefused, read_exactly

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".json": "application/json",
                 ".bin": "application/octet-stream", ".wasm": "application/wasm"}
MAX_REPORT_BYTES = 64 * 2 ** 10    # a device's report that a backend did not run
REQUEST_TIMEOUT = 60               # seconds a connection may stay silent
MAX_CONNECTIONS = 64               # connections served at once (a browser opens 6 per host)
POLL_INTERVAL = 0.02               # seconds the server takes to notice it is asked to stop


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args, **kwargs):
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        """At most MAX_CONNECTIONS at once: beyond that a connection is closed at once, so
        that idle connections cannot use up the kit's threads and files."""
        if not self.connections.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def handle_error(self, request, client_address):
        """A peer that went away mid-request (a phone that lost its network, a closed tab) is
        not the kit's error: no traceback on the kit's terminal. What the kit must know
        (uploads refused or failed) it hears through Uploads."""


class _QuietIPv6Server(_QuietServer):
    address_family = socket.AF_INET6


def _netloc(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Activity:
    """A request body that counts as activity while it arrives (a slow upload of a big
    tensor is not an idle run)."""

    def __init__(self, stream, server):
        self.stream, self.server = stream, server

    def read(self, size):
        data = self.stream.read1(size)  # what has arrived, at most size: each piece counts as it comes
        self.server.last_request = time.monotonic()
        return data


def served_folder(file, roots=()):
    """(folder, names): where serving `file` starts (the deepest of `roots` holding it, else
    its own folder) and the path components below it, none of which may be a symlink."""
    path = os.path.abspath(file)
    for root in sorted((os.path.abspath(root) for root in roots), key=len, reverse=True):
        if path.startswith(root.rstrip("/") + "/"):
            return root, path[len(root.rstrip("/")) + 1:].split("/")
    folder, name = os.path.split(path)
    return folder, [name]


_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def read_served(folder, names):
    """The bytes of the regular file folder/names[0]/.../names[-1], opened one component at a
    time with O_NOFOLLOW, so that no symlink below `folder` is followed, however it got there
    (even if it replaced a file after the routes were made); None when any component is a
    symlink, the file is missing, or it is not a regular file (a FIFO, a device, a folder)."""
    fds = []
    try:
        fds.append(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        for name in names[:-1]:
            fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW, dir_fd=fds[-1]))
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
        fds.append(os.open(names[-1], os.O_RDONLY | os.O_NONBLOCK | _NO_FOLLOW, dir_fd=fds[-1]))
        if not stat.S_ISREG(os.fstat(fds[-1]).st_mode):
            return None
        with os.fdopen(os.dup(fds[-1]), "rb") as f:
            return f.read()
    except OSError:  # ELOOP, ENOTDIR (a symlink met), ENOENT, EACCES...
        return None
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class PageServer:
    """Serve {url path: file} on `host` (loopback unless asked otherwise) at `port` (0: a free
    one), and take `uploads` (an Uploads) if given; use as a context manager.

    A file is served from its served folder: the deepest of `roots` that holds it (for the
    browser runner, the results folder), else its own folder; the path below that folder may
    hold no symlink at all (checked at each request), and only regular files are served.

    With `prefix` (device mode: "/<token>"), every path, uploads included, must start with it;
    anything else is 404, as is everything once the run is over (the server is closed).
    `device_of(user_agent)` names the device a request comes from (uploads are kept per
    device); `events` (a queue) hears when a device first opens the page."""

    def __init__(self, routes, uploads=None, host="127.0.0.1", roots=(), port=0, prefix="", device_of=None,
                 events=None):
        self.routes, self.served, self.roots = {}, {}, roots
        self.uploads, self.prefix, self.last_request = uploads, prefix, time.monotonic()
        self.add_routes(routes)
        routes, served, server, seen = self.routes, self.served, self, set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._serve(body=True)

            def do_HEAD(self):
                self._serve(body=False)

            timeout = REQUEST_TIMEOUT  # a connection that sends nothing is closed, not kept for ever

            def _route(self):
                """The request's path below the prefix; None when it lacks the prefix. Only
                requests of this run (with the prefix) count as activity."""
                path = unquote(urlsplit(self.path).path)
                if server.prefix:
                    if not path.startswith(server.prefix + "/"):
                        return None
                    path = path[len(server.prefix):]
                server.last_request = time.monotonic()
                return path

            def _device(self):
                return device_of(self.headers) if device_of else None

            def do_POST(self):
                if not self._own_host():
                    return
                path = self._route()
                length = self.headers.get("Content-Length", "")
                if server.uploads is None or path is None:
                    self._refuse(404, "no uploads here")
                    return
                if not (length.isascii() and length.isdigit()):
                    self._refuse(411, "no uploads here")
                    return
                try:  # everything that can be refused is, before the body is read
                    if path.startswith("/report/"):
                        self._report(path, int(length))
                        return
                    if int(length) > MAX_REQUEST_BYTES:
                        raise UploadRefused(413, "body too large")
                    device = self._device()
                    server.uploads.check(path, int(length), device)
                    server.uploads.receive_stream(path, _Activity(self.rfile, server), int(length), device)
                except UploadRefused as refused:
                    self.close_connection = True  # an unread body must not be taken for a request
                    self._refuse(refused.status, str(refused))
                    return
                self.send_response(204)
                self.end_headers()

            def _report(self, path, length):
                """POST /report/<token>/<backend>: a device's backend did not run (JSON {error})."""
                parts = path.split("/")
                if len(parts) != 4 or not server.uploads.own_token(parts[2]):
                    raise UploadRefused(404, "not a report of this run")
                if length > MAX_REPORT_BYTES:
                    raise UploadRefused(413, "a report is a short message")
                try:
                    error = str(json.loads(read_exactly(self.rfile, length))["error"])
                except (ValueError, KeyError, TypeError, RecursionError):
                    raise UploadRefused(400, "a report is JSON with an error") from None
                server.uploads.report_failure(parts[3], self._device(), error)
                self.send_response(204)
                self.end_headers()

            def _own_host(self):
                """Only requests addressed to this server by its own address: a page elsewhere
                that rebinds a name to 127.0.0.1 cannot read what is served. One Host header:
                with two, which one counts would depend on who reads them."""
                if len(self.headers.get_all("Host") or []) > 1:
                    self._refuse(400, "more than one Host header")
                    return False
                if not server.own_host(self.headers.get("Host")):
                    self._refuse(421, "wrong host")
                    return False
                return True

            def _refuse(self, status, message):
                data = message.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, body):
                if not self._own_host():
                    return
                route = self._route()
                data = read_served(*served[route]) if route in served else None
                if data is None:
                    self.send_error(404, "not served")
                    return
                if events is not None and route.endswith(".html"):
                    device = self._device()
                    if device not in seen:
                        seen.add(device)
                        events.put({"event": "opened", "device": device,
                                    "user_agent": self.headers.get("User-Agent", "")})
                file = routes[route]
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPES.get(file.suffix, "application/octet-stream"))
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass  # the page's own console is what matters; request lines are noise

        server_class = _QuietIPv6Server if ":" in host else _QuietServer
        try:
            self._httpd = server_class((host, port), Handler)
        except OSError as error:
            raise KitError(f"cannot listen on {_netloc(host, port)}: {error.strerror or error}") from None
        # shutdown() waits for the loop to look at its flag, once per poll interval (0.5 s by
        # default: measured as 0.3 s of every run_browser.py spent just stopping)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": POLL_INTERVAL},
                                        daemon=True)

    def add_routes(self, routes):
        """Serve {url path: file} too, from now on (a step started before its model exists
        adds the model's files once it is there)."""
        for path, file in routes.items():
            self.served[path] = served_folder(file, self.roots)
            self.routes[path] = Path(file)

    @property
    def netloc(self):
        host, port = self._httpd.server_address[:2]
        return _netloc(host, port)

    @property
    def port(self):
        return self._httpd.server_address[1]

    def own_host(self, header):
        """Is `header` (a request's Host) this server's own address and port? Never a name:
        a page elsewhere that rebinds a name to this address cannot read what is served. On
        port 80 a browser leaves the port out (HTTP's default), and that is the same address."""
        return header == self.netloc or (self.port == 80 and f"{header}:80" == self.netloc)

    @property
    def url(self):
        return f"http://{self.netloc}"

    def __enter__(self):
        self._thread.start()
        return self

    def url_of(self, path=""):
        """The URL of `path` (a route), with the prefix."""
        return f"{self.url}{self.prefix}{path}"

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()
        if self.uploads is not None:
            self.uploads.discard()
