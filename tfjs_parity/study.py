"""The original study, or your model, in one command (`make run`): the four steps, overlapped
where they can be.

    python -m tfjs_parity.study [--out-dir results] [--matrix]
    python -m tfjs_parity.study --model PATH [--input FILE] [--as layers|graph] [--matrix]

Step 1 (create_keras_model.py) builds and converts the model while steps 2 and 3 start up
beside it: run_node.py and, BROWSER_AFTER seconds later, run_browser.py, both with
--wait-for-model, start Node with tfjs-node and Chromium with tfjs and initialise and
self-test their backend. Once step 1 has committed the model, each is sent the line that
lets it read the model; step 4 (compare_outputs.py --wait-for-captures) starts up meanwhile
and prints the report once they are done. Steps 1 and 4 print straight to the terminal;
steps 2 and 3 print whole, in that order, once both are done. A step that fails ends the
run with its exit status, after its output. Stopped by a signal, the run stops every step
(SIGTERM, each quietly) and says so in one line."""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from . import KitError, processes
from .cli import QUIET_STOP, Terminated, run_main
from .files import make_dirs
from .paths import DEFAULT_OUT_DIR, ROOT

# Chromium starts this long after steps 1 and 2: three start-ups at once collide (they made
# step 1 0.4 s slower here, on 2 cores, even with the others at nice 19), and a second later
# Chromium is still ready (1.2 s) well before step 1 is done (4 s).
BROWSER_AFTER = 1.0
STOP_GRACE = 5.0  # seconds a step may take to stop cleanly (remove its staging, its browser)


# make matrix: every run, one after the other (each measures its backends' speed: runs side by
# side would time each other), all started up beside step 1 and waiting for their turn.
MATRIX_RUNS = (("run_node.py", "--backend", "all"), ("run_browser.py", "--backend", "all"),
               ("run_browser.py", "--precision", "f16"))
FIREFOX_RUN = ("run_browser.py", "--browser", "firefox", "--backend", "webgl,wasm,cpu")
WEBKIT_RUN = ("run_browser.py", "--browser", "webkit", "--backend", "all")
# the engines a matrix runs last, each when installed: (run, its name, its runtime, what installs it)
ENGINE_RUNS = ((FIREFOX_RUN, "Firefox", "firefox", "make setup-firefox"),
               (WEBKIT_RUN, "WebKit", "webkit", "make setup-webkit"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where results go (default: %(default)s)")
    parser.add_argument("--matrix", action="store_true",
                        help="make matrix: every runtime, backend and float16 mode (and Firefox and WebKit when installed), "
                             "then one table, an HTML and a JSON report in --out-dir")
    parser.add_argument("--model", metavar="PATH",
                        help="your model (a Keras file, a SavedModel folder, a model.json) instead of the study's; "
                             "the report is then the full verdict report (compare_outputs.py --full)")
    parser.add_argument("--input", metavar="FILE", help="with --model: the input to feed it (create_keras_model.py "
                                                        "--input)")
    parser.add_argument("--as", dest="kind", choices=["layers", "graph"],
                        help="with --model: convert it as this kind (create_keras_model.py --as)")
    args = parser.parse_args()
    if (args.input or args.kind) and not args.model:
        raise KitError(f"{'--input' if args.input else '--as'} goes with --model PATH")
    # here, not by whichever step starts first (a step that fails removes the folders it made)
    make_dirs(args.out_dir, "--out-dir")
    out = ["--out-dir", str(args.out_dir)]
    # step 1's own options: it checks them (a model that is not there is its one line)
    model = [*(["--model", args.model] if args.model else []), *(["--input", args.input] if args.input else []),
             *(["--as", args.kind] if args.kind else [])]
    report = ["--full"] if args.model else []  # your model: every verdict; the study: its table
    if args.matrix:
        return matrix(args.out_dir, out, model, report)
    steps = _Steps()
    try:
        waiting = [steps.start_waiting("run_node.py", *out)]
        steps.start("create_keras_model.py", *out, *model)
        built = steps.wait(BROWSER_AFTER)
        if built in (None, 0):  # step 1 is under way (or done already): Chromium starts
            waiting.append(steps.start_waiting("run_browser.py", *out))
        if built is None:
            built = steps.wait()
        for child in waiting:
            _tell(child, b"\n" if built == 0 else b"")  # go on, or (stdin ends) stop
        if built != 0:
            return _status("create_keras_model.py", built)
        # step 4 starts up while steps 2 and 3 finish, and reads their captures once told
        steps.start("compare_outputs.py", *out, *report, "--wait-for-captures", stdin=subprocess.PIPE)
        codes = [child.wait() for child in waiting]
        for child in waiting:
            steps.show(child)
        for script, code in zip(("run_node.py", "run_browser.py"), codes):
            if code != 0:
                steps.drop_foreground()  # step 4 has nothing to compare, and nothing to say
                return _status(script, code)
        print(flush=True)
        _tell(steps.foreground, b"\n")
        return _status("compare_outputs.py", steps.wait())
    except (KeyboardInterrupt, Terminated):
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second one must not cut this short
            signal.signal(signum, signal.SIG_IGN)
        steps.stop()  # each stops cleanly, quietly (QUIET_STOP): run_main says it once
        raise
    finally:
        steps.stop()


def matrix(out_dir, out, model=(), full=()):
    """Step 1, with every run of MATRIX_RUNS (and of ENGINE_RUNS, each engine when installed)
    and step 4 started up beside it; then each run in turn, its output shown whole as it ends
    (the order fixed), and the report. A failing step ends it with its status, after its
    output; a signal stops every step, as make run."""
    from .runners import RUNNERS
    runs, missing = list(MATRIX_RUNS), []
    for run, name, runtime, setup in ENGINE_RUNS:
        try:
            RUNNERS[runtime].installed()
            runs.append(run)
        except KitError:
            missing.append(f"(no {name}: {setup} adds its columns)")
    steps = _Steps()
    report = [*full, "--html", str(out_dir / "report.html"), "--json", str(out_dir / "report.json")]
    try:
        waiting = [steps.start_waiting(runs[0][0], *out, *runs[0][1:])]
        steps.start("create_keras_model.py", *out, *model)
        built = steps.wait(BROWSER_AFTER)
        if built in (None, 0):  # step 1 is under way: the browsers and step 4 start up beside it
            waiting += [steps.start_waiting(script, *out, *rest) for script, *rest in runs[1:]]
            compare = steps.start_waiting("compare_outputs.py", *out, *report, wait="--wait-for-captures")
        if built is None:
            built = steps.wait()
        if built != 0:
            for child in waiting:
                _tell(child, b"")
            return _status("create_keras_model.py", built)
        for run, child in zip(runs, waiting):
            _tell(child, b"\n")
            code = child.wait()
            steps.show(child)
            if code != 0:
                return _status(" ".join(run[:3]) if "--browser" in run else run[0], code)  # the finally stops the rest
        for line in missing:
            print(line, flush=True)
        print(flush=True)
        _tell(compare, b"\n")
        code = compare.wait()
        steps.show(compare)
        return _status("compare_outputs.py", code)
    except (KeyboardInterrupt, Terminated):
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        steps.stop()
        raise
    finally:
        steps.stop()


class _Steps:
    """The steps' processes: each the leader of its own process group (processes.start)."""

    def __init__(self):
        self.logs = {}  # waiting step -> (stdout file, stderr file)
        self.foreground = None  # the step whose output goes straight to the terminal

    def start_waiting(self, script, *args, wait="--wait-for-model"):
        """Start a step told to wait (for the model, or with `wait` its own option; None: a step
        that starts at once), its output kept for show()."""
        logs = (tempfile.TemporaryFile(), tempfile.TemporaryFile())
        child = _start(_command(script, *args, *([wait] if wait else [])),
                       stdin=subprocess.PIPE if wait else subprocess.DEVNULL, stdout=logs[0], stderr=logs[1])
        self.logs[child] = logs
        return child

    def start(self, script, *args, stdin=None):
        """Start a step on this terminal."""
        sys.stdout.flush()
        self.foreground = _start(_command(script, *args), stdin=stdin)

    def wait(self, timeout=None):
        """The exit status of the step on the terminal; None if it is still running after
        `timeout` seconds."""
        try:
            code = self.foreground.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.foreground = None
        return code

    def drop_foreground(self):
        """Kill the step on the terminal, without a word (it has not started its work)."""
        processes.stop(self.foreground)
        self.foreground = None

    def show(self, child):
        """A waiting step's output, its stdout then its stderr."""
        for log, stream in zip(self.logs[child], (sys.stdout, sys.stderr)):
            log.seek(0)
            stream.flush()
            stream.buffer.write(log.read())
            stream.buffer.flush()

    def stop(self):
        """SIGTERM every step still running and let them stop cleanly (remove their staging,
        their browser), or kill them after STOP_GRACE s."""
        running = [child for child in [self.foreground, *self.logs] if child is not None and child.poll() is None]
        processes.stop(*running, grace=STOP_GRACE)
        for logs in self.logs.values():
            for log in logs:
                log.close()
        self.logs.clear()


def _status(script, code):
    """The exit status of the run for a step that ended with `code`; a step killed by a
    signal said nothing, so this says which it was."""
    if code >= 0:
        return code
    print(f"error: {script} was killed by {signal.Signals(-code).name}", file=sys.stderr)
    return 128 - code


def _start(command, **popen_kwargs):
    return processes.start(command, env=dict(os.environ, **{QUIET_STOP: "1"}), **popen_kwargs)


def _command(script, *args):
    return [sys.executable, str(ROOT / script), *args]


def _tell(child, line):
    try:
        if line:
            child.stdin.write(line)
        child.stdin.close()
    except OSError:
        pass  # it ended already: its output and status say why


if __name__ == "__main__":
    run_main(main)
