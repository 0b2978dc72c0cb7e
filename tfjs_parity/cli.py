"""What every script shares at its top: one place that turns a KitError into one line, and
an interruption (Ctrl-C, SIGTERM, SIGHUP) into one line and the usual exit status, with
every child process stopped on the way out."""
import argparse
import atexit
import math
import os
import re
import signal
import sys

from . import KitError, files, processes

EXIT_KIT_ERROR = 2  # like argparse: the input or the setup is wrong, not the numbers
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
# Set for the steps the one command (tfjs_parity.study) runs: stopped by a signal, a step ends
# without a word (the one command says it once, whatever the steps were doing).
QUIET_STOP = "TFJS_PARITY_QUIET_STOP"


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C does (every `finally` runs), then exit."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_asked_to_stop = None  # the signal that arrived, kept even where a library swallowed its exception


def _on_signal(signum, frame):
    global _asked_to_stop
    _asked_to_stop = signum
    stop_if_asked()


def asked_to_stop():
    """Did an interruption (Ctrl-C, SIGTERM, SIGHUP) arrive?"""
    return _asked_to_stop is not None


def stop_if_asked():
    """Raise the interruption that arrived again. Some imports (TensorFlow's optional
    dependencies) catch everything, Ctrl-C included; so before anything is committed, and
    at the end, the kit asks again instead of carrying on as if nothing had happened."""
    if _asked_to_stop == signal.SIGINT:
        raise KeyboardInterrupt
    if _asked_to_stop is not None:
        raise Terminated(_asked_to_stop)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MESSAGE_LIMIT = 4000  # characters of one error line: a model's text can be megabytes


def safe_text(text, limit=MESSAGE_LIMIT):
    """`text` as a terminal may show it: every control character but newline and tab escaped
    (ESC as \\x1b: no colour, no cursor move, no line a model's name makes look like the
    kit's), at most `limit` characters. Every error line passes here (a model's node names,
    op names and file names reach them)."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit:,} more characters)"


SUMMARY_LINES = ("wrote ", "foreseen: ")  # how each line of step 1's summary starts


def safe_summary(text):
    """Step 1's summary as the terminal may show it: control characters escaped, and a new
    line only where one of the kit's own lines starts (SUMMARY_LINES); any other newline, a
    model's name holding one, is shown as \\n."""
    lines = text.split("\n")
    kept = [lines[0]]
    for line in lines[1:]:
        if line.startswith(SUMMARY_LINES):
            kept.append(line)
        else:
            kept[-1] += "\\n" + line
    return "\n".join(safe_text(line) for line in kept)


def error_lines(error):
    """The 'error:' lines of a KitError: one, or one per failed backend (steps.BackendsFailed),
    each with its newlines escaped too, so a model's text cannot start a line of its own."""
    lines = getattr(error, "lines", None) or [str(error)]
    return "\n".join("error: " + safe_text(line).replace("\n", "\\n") for line in lines)


def run_main(main):
    """Call main(); print an expected failure as one 'error:' line and exit non-zero."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with Ctrl-C ignored
        signal.signal(signal.SIGINT, _on_signal)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # under nohup, a closed terminal must not stop it
            signal.signal(signum, _on_signal)
    try:
        try:
            code = main()
        except Exception:
            # a library that swallowed the signal may fail for it instead (jax, interrupted while
            # tensorflowjs imports it, then finds itself half-imported): that is the signal
            stop_if_asked()
            raise
        stop_if_asked()
    except KitError as error:  # BackendsFailed: 3 when some backends' captures were saved (steps.py)
        _exit_with_line(error_lines(error), getattr(error, "status", EXIT_KIT_ERROR))
    except KeyboardInterrupt:
        _exit_interrupted("interrupted (Ctrl-C)", EXIT_INTERRUPTED)
    except Terminated as signal_:
        _exit_interrupted(f"terminated ({signal_})", 128 + signal_.signum)
    except BrokenPipeError:
        # the reader went away (`compare_outputs.py | head`): not an error of ours
        _quiet_stdout()
        code = 0
    finally:
        _ignore_interruptions()  # cleaning up must not itself be interrupted into a traceback
        processes.stop_all()
    _flush_or_quiet()
    _exit(code)


def _exit_interrupted(what, code):
    """Stopped by a signal: one line saying so (none under QUIET_STOP), and `code`."""
    _exit_with_line(None if os.environ.get(QUIET_STOP) else
                    f"{what}: stopped; files already written are whole, nothing half-written was kept", code)


def _exit_with_line(line, code):
    _ignore_interruptions()
    processes.stop_all()
    files.remove_created_if_empty()
    _flush_or_quiet()
    if line:
        print(line, file=sys.stderr)
    _exit(code)


def _exit(code):
    """Exit with `code` once everything is written: the atexit handlers run (TensorFlow's
    remove its generated files), then the process ends without the interpreter's teardown,
    which took 0.9 s once TensorFlow was loaded (a third of `make run` beyond its start-ups)."""
    if (code is not None and not isinstance(code, int)) or sys.getprofile() or sys.gettrace():
        sys.exit(code)  # a message (Python prints it), or a profiler or coverage that writes at the end
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: nothing more can reach it
    os._exit(code or 0)


def _ignore_interruptions():
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def _flush_or_quiet():
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()


def _quiet_stdout():
    """Point stdout at /dev/null so the interpreter's own flush at exit finds no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def positive_int(text):
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int64(text):
    """argparse type: an integer that fits in 64 bits, signed (TensorFlow's seeds)."""
    return _int_in(text, -2 ** 63, 2 ** 63 - 1)


def seed32(text):
    """argparse type: a seed for numpy's generator here, 0 to 2**32 - 1."""
    return _int_in(text, 0, 2 ** 32 - 1)


def _int_in(text, low, high):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
    return value


def non_negative_float(text):
    """argparse type: a finite number of at least 0 (a tolerance)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value
