"""The upload state machine of one run: a capture is a safetensors file sent in pieces, each a
POST to /upload/<token>/<name>/<step> (the steps: wire.json's upload.steps): `begin` (the
header: 8-byte length + JSON, which fixes the total size), `data` (the next bytes, in header
order: the page sends up to wire.json's upload.piece_bytes of tensors, or one bigger tensor,
a request), `end`. The token is fresh for each run; the names are the captures this run
asked for; each may be uploaded once (device mode: once per device, a repeat replaces);
nothing beyond the size the header announced (and at most MAX_CAPTURE_BYTES) is accepted.
The file is written to a temporary name in the staging folder and renamed when complete.
The HTTP side is server.py's."""
import contextlib
import io
import json
import os
import queue
import secrets
import threading
import time
from pathlib import Path

from . import KitError
from .files import staging_file
from .wire import CAPTURE_METADATA_KEY, UPLOAD_STEPS, data_end, parse_safetensors_header

MAX_HEADER_BYTES = 64 * 2 ** 20     # a safetensors header: names, shapes and the metadata
MAX_CAPTURE_BYTES = 16 * 2 ** 30    # far above any model's activations here; refuses a runaway page
MAX_REQUEST_BYTES = 2 * 2 ** 30     # one request's body (a piece of a capture)
PENDING_PER_SLOT = 4  # devices uploading without a whole capture yet, per --devices slot
NO_MODEL_YET = object()  # model_id of a run whose model is not made yet: every upload is refused
PENDING_SECONDS = 120  # a device silent this long is no longer counted as uploading (an abandoned upload)


class UploadRefused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Uploads:
    """The one-time upload paths of one run: a capture per name in `names` (the backends
    asked for), from one browser; or, with `repeatable` (device mode), per name and device
    (at most `max_devices` devices), where a device that uploads the same name again replaces
    its earlier capture, and a new upload replaces one it left unfinished. A device counts
    against `max_devices` once it has uploaded a whole capture: uploads refused before then
    take no slot (at most PENDING_PER_SLOT times as many devices may be uploading or reporting
    without one). With `model_id`, an upload whose header says another model is refused when
    it begins. `events` (a queue) hears each finished upload ({"event": "uploaded", "device",
    "name"}), each failure a device reports, and (from the server) each device's first visit."""

    def __init__(self, staging_dir, names, limit=MAX_CAPTURE_BYTES, repeatable=False, max_devices=None,
                 model_id=None):
        self.token = secrets.token_urlsafe(18)
        self.staging_dir, self.limit, self.repeatable = Path(staging_dir), limit, repeatable
        self.names, self.max_devices, self.model_id = list(names), max_devices, model_id
        # (device, name) -> None, then {"file", "path", "total", "written", "done", "taken"}
        self.state = {(None, name): None for name in names}
        self.devices = set()   # devices that uploaded a whole capture: the ones max_devices counts
        self.pending = {}      # device -> when it last uploaded or reported, without a whole capture yet
        self.events = queue.Queue()
        self.lock = threading.Lock()
        self.closed = False

    def path(self, name):
        return f"/upload/{self.token}/{name}"

    def own_token(self, text):
        return secrets.compare_digest(text.encode("utf-8"), self.token.encode("utf-8"))

    def completed(self, name, device=None):
        """The staged safetensors file of `name`, once its upload ended; else None."""
        state = self.state.get((device, name))
        return state["path"] if state and state["done"] else None

    def discard(self):
        """Refuse everything from now on, and remove every staged file not taken (failed or
        unfinished uploads)."""
        with self.lock:
            self.closed = True
            for state in self.state.values():
                if state and not state.get("taken"):
                    _drop(state)

    def take(self, name, device=None):
        with self.lock:
            state = self.state[(device, name)]
            state["taken"] = True
            return state["path"]

    def check(self, url_path, length, device=None):
        """(name, step) of an acceptable POST of `length` bytes, before its body is read;
        UploadRefused(status, why) otherwise."""
        parts = url_path.split("/")
        if self.closed or len(parts) != 5 or parts[1] != "upload" or not self.own_token(parts[2]) \
                or parts[3] not in self.names:
            raise UploadRefused(404, "not an upload of this run")
        name, step = parts[3], parts[4]
        state = self.state.get((device, name))
        if step not in UPLOAD_STEPS:
            raise UploadRefused(404, "not an upload step")
        if step == "begin":
            if state is not None and not self.repeatable:
                raise UploadRefused(409, f"{name} was already uploaded in this run")
            if state is not None and (state.get("busy") or (state["done"] and not state.get("taken"))):
                raise UploadRefused(409, f"{name}: this device's last upload is still arriving or being saved")
            self._check_room(device, "captures")
            if length > MAX_HEADER_BYTES + 8:
                raise UploadRefused(413, f"{name}: a header of {length} bytes is more than {MAX_HEADER_BYTES}")
        else:  # data, end
            if state is None or state["done"]:
                raise UploadRefused(409, f"{name}: no upload in progress")
            if state.get("busy"):
                raise UploadRefused(409, f"{name}: the previous piece is still arriving")
            if state["written"] + length > state["total"]:
                raise UploadRefused(413, f"{name}: more data than its header announced")
        return name, step

    def receive(self, url_path, body, device=None):
        """Handle one POST whose body was read; raise UploadRefused(status, why) when it is
        not acceptable."""
        self.receive_stream(url_path, io.BytesIO(body), len(body), device)

    def receive_stream(self, url_path, stream, length, device=None):
        """Handle one POST of `length` bytes read from `stream`, a piece at a time (memory
        stays bounded, whatever the body's size; other devices' uploads go on meanwhile)."""
        with self.lock:
            name, step = self.check(url_path, length, device)
            key = (device, name)
            state = self.state.get(key)
            if step == "begin":
                body = read_exactly(stream, length)  # at most a header's size
                if state is not None and not state.get("taken"):
                    _drop(state)  # an upload this device left unfinished (a reload, a dropped network)
                self.state[key] = self._begin(name, body)
                self.pending[device] = time.monotonic()
                return
            if step == "end":
                if state["written"] != state["total"]:
                    raise UploadRefused(400, f"{name}: {state['written']} of {state['total']} bytes arrived")
                self._check_room(device, "captures", begun=True)
                self._store(key, state["file"].close)
                state["done"] = True
                self.devices.add(device)
                self.pending.pop(device, None)
                self.events.put({"event": "uploaded", "device": device, "name": name})
                return
            state["busy"] = True
            if device in self.pending:
                self.pending[device] = time.monotonic()  # still uploading
        written = 0
        try:
            while written < length:  # the piece, outside the lock
                chunk = stream.read(min(length - written, 1 << 20))
                if not chunk:
                    raise UploadRefused(400, "the body ended early")
                self._store(key, lambda: state["file"].write(chunk))
                written += len(chunk)
        finally:
            with self.lock:
                state["busy"] = False
                state["written"] += written

    def _store(self, key, write):
        """Run `write` on a staged file; a full disk (or a run that ended meanwhile) ends
        that upload: its file is removed and the device is told (507)."""
        try:
            write()
        except (OSError, ValueError) as error:  # ValueError: the file was closed as the run ended
            with contextlib.suppress(KeyError):
                state = self.state[key]
                if state is not None:
                    _drop(state)
                    self.state[key] = None
            reason = getattr(error, "strerror", None) or "the run ended"
            message = f"{key[1]}: cannot store it ({reason})"
            if not self.closed:  # the kit says so too, not only the device
                self.events.put({"event": "failed", "device": key[0], "name": key[1], "error": message})
            raise UploadRefused(507, message) from None

    def report_failure(self, name, device, error):
        """A device says backend `name` did not run there (it is not one of its backends, or it
        failed): an event like an upload's, so whoever waits knows."""
        if self.closed or name not in self.names:
            raise UploadRefused(404, "not a backend of this run")
        with self.lock:
            self._check_room(device, "reports")
            if device not in self.devices:
                self.pending[device] = time.monotonic()
        self.events.put({"event": "failed", "device": device, "name": name, "error": error})

    def _check_room(self, device, what, begun=False):
        """UploadRefused(403) when `device` would be one device too many: beyond max_devices
        that uploaded a capture, or beyond PENDING_PER_SLOT times as many without one."""
        if device in self.devices or self.max_devices is None:
            return
        if len(self.devices) >= self.max_devices:
            raise UploadRefused(403, f"this run takes {what} from {self.max_devices} device(s) at most")
        quiet = time.monotonic() - PENDING_SECONDS
        for gone in [d for d, last in self.pending.items() if last < quiet]:
            del self.pending[gone]
        if not begun and device not in self.pending and len(self.pending) >= PENDING_PER_SLOT * self.max_devices:
            raise UploadRefused(403, f"this run takes {what} from {self.max_devices} device(s) at most, and "
                                     f"{len(self.pending)} are uploading already")

    def _begin(self, name, body):
        if self.model_id is NO_MODEL_YET:
            raise UploadRefused(409, f"{name}: the model of this run is not made yet: wait for it, then reload the page")
        if len(body) < 8:
            raise UploadRefused(400, "a safetensors header starts with its 8-byte length")
        if int.from_bytes(body[:8], "little") != len(body) - 8:
            raise UploadRefused(400, "the header length does not match the header sent")
        try:
            header, _ = parse_safetensors_header(body)
        except ValueError as error:
            raise UploadRefused(400, f"not a safetensors header ({error})") from None
        if self.model_id is not None:
            theirs = _model_id_of(header)
            if theirs != self.model_id:
                raise UploadRefused(409, f"{name}: a capture of another model (id {theirs}), not of this run's "
                                         f"(id {self.model_id}): reload the page")
        try:
            total = len(body) + data_end(header)
        except ValueError:
            raise UploadRefused(400, "not a safetensors header") from None
        if total > self.limit:
            raise UploadRefused(413, f"{name}: {total} bytes is more than the {self.limit} allowed")
        try:
            fd, path = staging_file(self.staging_dir, f"upload_{name}", ".safetensors")
        except KitError as error:
            raise UploadRefused(507, str(error)) from None
        handle = None
        try:
            handle = os.fdopen(fd, "wb")
            handle.write(body)
        except OSError as error:
            if handle is None:
                os.close(fd)
            else:
                with contextlib.suppress(OSError):
                    handle.close()
            os.unlink(path)
            raise UploadRefused(507, f"{name}: cannot store it ({error.strerror or error})") from None
        except BaseException:
            if handle is None:
                os.close(fd)
            else:
                handle.close()
            os.unlink(path)
            raise
        return {"file": handle, "path": path, "total": total, "written": len(body), "done": False}


def _drop(state):
    with contextlib.suppress(OSError):
        state["file"].close()
    Path(state["path"]).unlink(missing_ok=True)


def _model_id_of(header):
    """The model id a capture's safetensors header records, or None."""
    try:
        metadata = json.loads(header["__metadata__"][CAPTURE_METADATA_KEY])["metadata"]
        return metadata.get("model_id") if isinstance(metadata, dict) else None
    except (KeyError, TypeError, ValueError, RecursionError):
        return None


def read_exactly(stream, length):
    """Exactly `length` bytes of `stream`; UploadRefused when the body ends first."""
    parts, left = [], length
    while left:
        part = stream.read(left)
        if not part:
            raise UploadRefused(400, "the body ended early")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
