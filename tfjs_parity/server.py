"""A loopback HTTP server for the browser page that serves an allowlist and nothing else
(no directory listing, no path resolution, only its own Host, only regular files, and none
reached through a symlink below its served folder), and takes the page's captures as binary
uploads on one-time paths.

An upload is a safetensors file sent in pieces, each a POST to /upload/<token>/<name>/...:
`begin` (the header: 8-byte length + JSON, which fixes the total size), `data` (the next
tensor's bytes, in header order), `end`. The token is fresh for each run; the names are the
captures this run asked for; each may be uploaded once; nothing beyond the size the header
announced (and at most MAX_CAPTURE_BYTES) is accepted. The file is written to a temporary
name in the staging folder and renamed when complete."""
import contextlib
import http.server
import ipaddress
import json
import os
import queue
import secrets
import socket
import stat
import struct
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import KitError
from .files import staging_file

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".json": "application/json",
                 ".bin": "application/octet-stream", ".wasm": "application/wasm"}
MAX_HEADER_BYTES = 64 * 2 ** 20     # a safetensors header: names, shapes and the metadata
MAX_CAPTURE_BYTES = 16 * 2 ** 30    # far above any model's activations here; refuses a runaway page
MAX_REQUEST_BYTES = 2 * 2 ** 30     # one tensor per request
MAX_REPORT_BYTES = 64 * 2 ** 10    # a device's report that a backend did not run


class _IPv6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _netloc(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class UploadRefused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Uploads:
    """The one-time upload paths of one run: a capture per name in `names` (the backends
    asked for), from one browser; or, with `repeatable` (device mode), per name and device,
    where a device that uploads the same name again replaces its earlier capture. Each
    finished upload is put on `finished` as (device, name)."""

    def __init__(self, staging_dir, names, limit=MAX_CAPTURE_BYTES, repeatable=False):
        self.token = secrets.token_urlsafe(18)
        self.staging_dir, self.limit, self.repeatable = Path(staging_dir), limit, repeatable
        self.names = list(names)
        # (device, name) -> None, then {"file", "path", "total", "written", "done", "taken"}
        self.state = {(None, name): None for name in names}
        self.finished = queue.Queue()
        self.lock = threading.Lock()

    def path(self, name):
        return f"/upload/{self.token}/{name}"

    def completed(self, name, device=None):
        """The staged safetensors file of `name`, once its upload ended; else None."""
        state = self.state.get((device, name))
        return state["path"] if state and state["done"] else None

    def discard(self):
        """Remove every staged file not taken (failed or unfinished uploads)."""
        for state in self.state.values():
            if state and not state.get("taken"):
                state["file"].close()
                Path(state["path"]).unlink(missing_ok=True)

    def take(self, name, device=None):
        with self.lock:
            state = self.state[(device, name)]
            state["taken"] = True
            return state["path"]

    def check(self, url_path, length, device=None):
        """(name, step) of an acceptable POST of `length` bytes, before its body is read;
        UploadRefused(status, why) otherwise."""
        parts = url_path.split("/")
        if len(parts) != 5 or parts[1] != "upload" \
                or not secrets.compare_digest(parts[2].encode("utf-8"), self.token.encode("utf-8")) \
                or parts[3] not in self.names:
            raise UploadRefused(404, "not an upload of this run")
        name, step = parts[3], parts[4]
        state = self.state.get((device, name))
        if step == "begin":
            if state is not None and not (self.repeatable and state.get("taken")):
                raise UploadRefused(409, f"{name} was already uploaded in this run" if not self.repeatable
                                    else f"{name}: an upload from this device is in progress")
            if length > MAX_HEADER_BYTES + 8:
                raise UploadRefused(413, f"{name}: a header of {length} bytes is more than {MAX_HEADER_BYTES}")
        elif step in ("data", "end"):
            if state is None or state["done"]:
                raise UploadRefused(409, f"{name}: no upload in progress")
            if state["written"] + length > state["total"]:
                raise UploadRefused(413, f"{name}: more data than its header announced")
        else:
            raise UploadRefused(404, "not an upload step")
        return name, step

    def receive(self, url_path, body, device=None):
        """Handle one POST whose body was read; raise UploadRefused(status, why) when it is
        not acceptable."""
        with self.lock:
            name, step = self.check(url_path, len(body), device)
            state = self.state.get((device, name))
            if step == "begin":
                self.state[(device, name)] = self._begin(name, body)
            elif step == "data":
                state["file"].write(body)
                state["written"] += len(body)
            elif state["written"] != state["total"]:
                raise UploadRefused(400, f"{name}: {state['written']} of {state['total']} bytes arrived")
            else:
                state["file"].close()
                state["done"] = True
                self.finished.put({"event": "uploaded", "device": device, "name": name})

    def report_failure(self, name, device, error):
        """A device says backend `name` did not run there (it is not one of its backends, or it
        failed): put on `finished` like an upload, so whoever waits knows."""
        if name not in self.names:
            raise UploadRefused(404, "not a backend of this run")
        self.finished.put({"event": "failed", "device": device, "name": name, "error": error})

    def _begin(self, name, body):
        if len(body) < 8:
            raise UploadRefused(400, "a safetensors header starts with its 8-byte length")
        (length,) = struct.unpack("<Q", body[:8])
        if length != len(body) - 8:
            raise UploadRefused(400, "the header length does not match the header sent")
        try:
            header = json.loads(body[8:])
            ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
            if not all(isinstance(end, int) and end >= 0 for end in ends):
                raise TypeError("offsets must be whole numbers")
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise UploadRefused(400, "not a safetensors header") from None
        total = len(body) + max(ends, default=0)
        if total > self.limit:
            raise UploadRefused(413, f"{name}: {total} bytes is more than the {self.limit} allowed")
        fd, path = staging_file(self.staging_dir, f"upload_{name}", ".safetensors")
        handle = None
        try:
            handle = os.fdopen(fd, "wb")
            handle.write(body)
        except BaseException:
            if handle is None:
                os.close(fd)
            else:
                handle.close()
            os.unlink(path)
            raise
        return {"file": handle, "path": path, "total": total, "written": len(body), "done": False}


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
        self.routes = {path: Path(file) for path, file in routes.items()}
        self.uploads, self.prefix, self.last_request = uploads, prefix, time.monotonic()
        served = {path: served_folder(file, roots) for path, file in self.routes.items()}
        routes, server, seen = self.routes, self, set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._serve(body=True)

            def do_HEAD(self):
                self._serve(body=False)

            def _route(self):
                """The request's path below the prefix; None when it lacks the prefix."""
                server.last_request = time.monotonic()
                path = unquote(urlsplit(self.path).path)
                if not server.prefix:
                    return path
                if not path.startswith(server.prefix + "/"):
                    return None
                return path[len(server.prefix):]

            def _device(self):
                return device_of(self.headers.get("User-Agent", "")) if device_of else None

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
                    body = self.rfile.read(int(length))
                    if len(body) != int(length):
                        raise UploadRefused(400, "the body ended early")
                    server.uploads.receive(path, body, device)
                except UploadRefused as refused:
                    self.close_connection = True  # an unread body must not be taken for a request
                    self._refuse(refused.status, str(refused))
                    return
                self.send_response(204)
                self.end_headers()

            def _report(self, path, length):
                """POST /report/<token>/<backend>: a device's backend did not run (JSON {error})."""
                parts = path.split("/")
                if len(parts) != 4 or not secrets.compare_digest(parts[2].encode("utf-8"),
                                                                 server.uploads.token.encode("utf-8")):
                    raise UploadRefused(404, "not a report of this run")
                if length > MAX_REPORT_BYTES:
                    raise UploadRefused(413, "a report is a short message")
                try:
                    error = str(json.loads(self.rfile.read(length))["error"])
                except (ValueError, KeyError, TypeError):
                    raise UploadRefused(400, "a report is JSON with an error") from None
                server.uploads.report_failure(parts[3], self._device(), error)
                self.send_response(204)
                self.end_headers()

            def _own_host(self):
                """Only requests addressed to this server by its own address: a page elsewhere
                that rebinds a name to 127.0.0.1 cannot read what is served. (Listening on
                every address, any address of this machine, as an IP literal, with the port.)"""
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

        server_class = _IPv6Server if ":" in host else http.server.ThreadingHTTPServer
        try:
            self._httpd = server_class((host, port), Handler)
        except OSError as error:
            raise KitError(f"cannot listen on {_netloc(host, port)}: {error.strerror or error}") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def netloc(self):
        host, port = self._httpd.server_address[:2]
        return _netloc(host, port)

    @property
    def port(self):
        return self._httpd.server_address[1]

    def own_host(self, header):
        """Is `header` (a request's Host) this server's address? Exactly, or, when it listens
        on every address, any IP literal with its port (never a name: DNS rebinding)."""
        if header == self.netloc:
            return True
        host = self._httpd.server_address[0]
        if header is None or host not in ("0.0.0.0", "::"):
            return False
        name, _, port = header.rpartition(":")
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return port == str(self.port)

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
