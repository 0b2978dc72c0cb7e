"""What run_node.py and run_browser.py share: backend choice, tfjs flags and precision
variants, sanity checks, and saving each backend's capture under its own name."""
import argparse
import math
import os
import platform
import re
import sys
import threading
from pathlib import Path

import numpy as np

from . import KitError
from .capture import FORMATS, JSON_LIMIT, SafetensorsTensors, chosen_format, remove_other_formats
from .cli import positive_int, stop_if_asked
from .paths import capture_file_name
from .wire import DEFAULTS

# Named precision modes. f16 makes WebGL store every texture as float16, as many phone
# GPUs do (tfjs then reports WEBGL_RENDER_FLOAT32_ENABLED false).
PRECISIONS = {"f32": {}, "f16": {"WEBGL_FORCE_F16_TEXTURES": True}}
_FLAG_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def parse_flag(text):
    """argparse type for --flag NAME=VALUE: VALUE is true, false or a number."""
    name, sep, raw = text.partition("=")
    if not sep or not _FLAG_NAME.match(name):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE with a tfjs flag name, e.g. WEBGL_PACK=false")
    if raw in ("true", "false"):
        return name, raw == "true"
    try:
        value = int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: VALUE must be true, false or a number") from None
    # JavaScript holds every number as a float64: beyond 2**53 or non-finite, tfjs would see another value
    if not (math.isfinite(value) and abs(value) <= 2 ** 53):
        raise argparse.ArgumentTypeError(f"{text!r}: VALUE must be a finite number of magnitude at most 2**53")
    return name, value


def add_run_arguments(parser, backends, default_backend):
    """The options both runtimes take: --backend, --flag, --repeat, --budget, --format."""
    parser.add_argument("--backend", type=backend_list(backends), default=default_backend,
                        metavar="{" + ",".join(list(backends) + ["all"]) + "}",
                        help="tfjs backend, several (comma-separated), or all of them in one go (default "
                             + (default_backend or "webgl; all with --device") + ")")
    parser.add_argument("--flag", type=parse_flag, action="append", default=[], metavar="NAME=VALUE",
                        help="set a tfjs environment flag before the model runs, repeatable "
                             "(e.g. WEBGL_PACK=false); it goes into the capture's file name")
    add_timing_arguments(parser)
    add_format_argument(parser)


def add_timing_arguments(parser):
    parser.add_argument("--repeat", type=positive_int, default=DEFAULTS["repeat"], metavar="N",
                        help="timed predictions after one warm-up, at most (default %(default)s)")
    # A model whose prediction takes seconds must not take minutes to time: stop at the budget.
    parser.add_argument("--budget", type=positive_float, default=float(DEFAULTS["budget"]), metavar="SECONDS",
                        help="time warm predictions while the next one fits in this many seconds (by the last one's "
                             "time), at least one (default %(default)g)")
    # A backend that gives another answer each time is a bug in itself: the capture is made
    # this many times in one session and records whether the bits were the same each time.
    parser.add_argument("--repeat-check", type=positive_int, default=DEFAULTS["repeat_check"], metavar="N",
                        help="run the capture N times on the same input and record whether every bit "
                             "repeated (default %(default)s)")


def add_format_argument(parser):
    parser.add_argument("--format", choices=list(FORMATS),
                        help=f"capture file format (default: json up to {JSON_LIMIT:,} values, safetensors above)")


def add_wait_argument(parser):
    parser.add_argument("--wait-for-model", action="store_true",
                        help="start up now (the runtime, tfjs, the first backend and its self-test), and read the "
                             "model only once a line arrives on stdin: to run beside create_keras_model.py, told "
                             "when it is done (make run does)")


class ReadySignal:
    """--wait-for-model (--wait-for-captures): the line on stdin that says the step before has
    committed what this step reads. A daemon thread reads it from the start, so waiting for
    it never holds up an exit or a signal."""

    def __init__(self, flag="--wait-for-model", waits_for="the model", made_by="create_keras_model.py",
                 stream=None):
        self.flag, self.waits_for, self.made_by = flag, waits_for, made_by
        if stream is None:
            stream = sys.stdin.buffer if sys.stdin is not None else None  # None: started with stdin closed
        self._stream = stream
        self._arrived = threading.Event()
        self._line = b""
        threading.Thread(target=self._read, name="go", daemon=True).start()

    def _read(self):
        try:
            if self._stream is not None:
                self._line = self._stream.readline()
        except (OSError, ValueError):
            pass  # stdin closed or unreadable: no line
        finally:
            self._arrived.set()

    def arrived(self):
        """Has the line (or the end of stdin) arrived? Never blocks."""
        return self._arrived.is_set()

    def wait(self):
        """Block until the line arrives: True; False when stdin ended without one."""
        self._arrived.wait()
        return self._line.endswith(b"\n")

    def missing(self):
        """The KitError of a step whose stdin ended without the line."""
        return KitError(f"{self.flag}: stdin ended before the line that says {self.waits_for} is ready "
                        f"(did {self.made_by} fail?)")


def positive_float(text):
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def backend_list(backends):
    """argparse type: 'all', or one or more of `backends`, comma-separated."""
    def parse(text):
        if text == "all":
            return text
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in backends]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(backends)} (comma-separated), or all")
        return ",".join(dict.fromkeys(chosen))
    return parse


def chosen_backends(choice, backends):
    """The backends `choice` ('all', or a comma list from backend_list) names, in order."""
    return list(backends) if choice == "all" else choice.split(",")


def flags_of(flag_pairs, precision="f32"):
    """--precision's flags, then each --flag (a later one wins)."""
    flags = dict(PRECISIONS[precision])
    flags.update(flag_pairs)
    return flags


def variant_of(flags):
    """A short, file-name-safe name for a set of flags: 'f16', 'webgl_pack-false', ..."""
    rest, parts = dict(flags), []
    for name, preset in PRECISIONS.items():
        if preset and all(rest.get(k) == v for k, v in preset.items()):
            parts.append(name)
            for k in preset:
                rest.pop(k)
    parts += [f"{k.lower()}-{str(v).lower()}" for k, v in sorted(rest.items())]
    return "_".join(parts)


def variant_metadata(flags):
    """{"variant": name} for a run with flags, {} for a plain one: what each capture records."""
    variant = variant_of(flags)
    return {"variant": variant} if variant else {}


ALL_ZERO = "all_outputs_zero_or_nan"  # the metadata field that says so


def mark_all_zero(capture):
    """A capture whose every output is zeros or NaN is saved and judged like any other (the
    backend passed its self-test: this model hit a bug, and that is evidence, tfjs #8638),
    marked `all_outputs_zero_or_nan` so that every report says so first. (Not when the inputs
    hold NaN themselves: then NaN everywhere is the right answer.) True when marked."""
    outputs = (a for key, arrays in capture.tensors.items() if key.endswith("_output") for a in arrays)
    if all(np.all((a == 0) | np.isnan(a)) for a in outputs) and \
            not any(np.issubdtype(a.dtype, np.floating) and np.any(np.isnan(a)) for a in capture.inputs.values()):
        capture.metadata[ALL_ZERO] = True
        return True
    return False


def cpu_model():
    """The CPU's name as Linux reports it (what os.cpus() gives Node), else the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def save_results(results, out_dir, runtime, flags, requested_format=None):
    """Save each (backend, Capture | KitError) of `results` (a runner's run(job)) as it
    arrives, under its own name (the capture's variant, else the flags'), in the format chosen
    for it; print one line per backend. Raise BackendsFailed after the rest are saved when any
    backend failed (nothing is lost); a KitError that ends the run itself after some were saved
    joins them. Captures backed by a staging file are moved, not copied; a staging file not
    saved is removed. The runner's generator is closed however this ends (a signal while a
    capture is saved included), so its own clean-up runs: its browser, its session, its files."""
    failures, saved = [], 0
    try:
        for backend, result in results:
            capture = result
            try:
                stop_if_asked()  # an interruption a library swallowed must not let the run save
                if not isinstance(capture, KitError):
                    variant = capture.metadata["variant"] if "variant" in capture.metadata else variant_of(flags)
                    try:
                        all_zero = mark_all_zero(capture)
                        path = save_capture(capture, out_dir / capture_file_name(runtime, backend, variant),
                                            requested_format)
                    except (KitError, OSError) as error:  # this backend's failure; the others are still saved
                        result = error if isinstance(error, KitError) else KitError(f"cannot save {backend}: {error}")
            finally:
                staged = getattr(capture, "tensors", None)
                if isinstance(staged, SafetensorsTensors) and staged.path.name.startswith("."):
                    staged.path.unlink(missing_ok=True)  # a capture refused above, or one saved as JSON
            if isinstance(result, KitError):
                failures.append(failure_line(runtime, backend, result))
                continue
            saved += 1
            timing = capture.metadata.get("timing", {})
            _say(f"wrote {path} ({capture.label}, median {timing.get('median_ms', float('nan')):.2f} ms"
                 + (f", {capture.metadata['renderer']}" if capture.metadata.get("renderer") else "")
                 + format_note(capture, path, requested_format) + ")"
                 + ("; ALL OUTPUTS ZERO OR NaN: the backend passed its self-test and computed nothing for this "
                    "model (compare_outputs.py --full judges it)" if all_zero else ""))
    except KitError as error:
        if not (saved or failures) or isinstance(error, BackendsFailed):
            raise
        failures.append(str(error))  # the run ended itself: what it had saved stays, and is counted
    finally:
        getattr(results, "close", lambda: None)()
    if failures:
        raise BackendsFailed(failures, saved=saved)


def _say(line):
    """A result line as it comes; a reader that went away (| head) stops hearing, not the run."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the rest goes nowhere; Python's exit flush then succeeds
        os.close(devnull)


class BackendsFailed(KitError):
    """Some backends of a run failed: one 'error:' line each ('node/cpu: failed at node X
    (Op): ...'), after the others were saved. Exit status 3 when any backend was saved (the
    step did part of its work), 2 when none was."""

    def __init__(self, lines, saved):
        self.lines = list(dict.fromkeys(lines))
        super().__init__("; ".join(self.lines))
        self.status = 3 if saved else 2


def failure_line(runtime, backend, error):
    """'<runtime>/<backend>: <what happened>': the line a failed backend gets."""
    text = str(error)
    for prefix in (f"backend {backend}: ", "in the browser: ", "in Firefox: "):
        text = text.removeprefix(prefix)
    return f"{runtime}/{backend}: {text}"


def save_capture(capture, json_path, requested_format=None):
    """Save `capture` beside `json_path`, as JSON or safetensors (chosen_format); a capture
    whose tensors are already in a staging safetensors file is renamed into place. Returns
    the path written."""
    format_ = chosen_format(capture, requested_format)
    path = Path(json_path).with_suffix(FORMATS[format_])
    staged = capture.tensors if isinstance(capture.tensors, SafetensorsTensors) else None
    if format_ == "safetensors" and staged is not None and not staged.replaced \
            and staged.written_metadata == capture.metadata:
        os.replace(staged.path, path)
        staged.path = path
        remove_other_formats(path)
    else:
        capture.save(path)
    return path


def format_note(capture, path, requested_format):
    """', safetensors: N values > JSON_LIMIT' when the size chose the binary format, else ''."""
    if path.suffix == FORMATS["safetensors"] and not requested_format:
        return f", safetensors: {capture.values:,} values > {JSON_LIMIT:,}"
    return ""
