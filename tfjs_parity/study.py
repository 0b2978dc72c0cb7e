"""The original study in one command (`make run`): the four steps, overlapped where they can be.

    python -m tfjs_parity.study [--out-dir results]

Step 1 (create_keras_model.py) builds and converts the model while steps 2 and 3 start up
beside it: run_node.py and run_browser.py with --wait-for-model start Node with tfjs-node
and Chromium with tfjs, and initialise and self-test their backend. Once step 1 has committed
the model, each is sent the line that lets it read the model; then step 4
(compare_outputs.py) prints the report. Step 1's output and the report are shown as they
come; steps 2 and 3 print whole, in that order, once both are done (as `make -j2 -O` did).
A step that fails stops the run with its exit status, after its output."""
import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from . import processes
from .cli import Terminated, run_main
from .paths import DEFAULT_OUT_DIR, ROOT

# Steps 2 and 3, each told to wait for the model (the line on its stdin).
WAITING_STEPS = ("run_node.py", "run_browser.py")
STOP_GRACE = 5.0  # seconds a step may take to stop cleanly (remove its staging, its browser)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where results go (default: %(default)s)")
    args = parser.parse_args()
    out = ["--out-dir", str(args.out_dir)]
    steps = _Steps()
    try:
        waiting = [steps.start_waiting(script, *out) for script in WAITING_STEPS]
        built = steps.run("create_keras_model.py", *out)
        for child in waiting:
            _tell(child, b"\n" if built == 0 else b"")  # go on, or (stdin ends) stop
        if built != 0:
            return built
        codes = [child.wait() for child in waiting]
        for child in waiting:
            steps.show(child)
        failed = [code for code in codes if code != 0]
        if failed:
            return failed[0]
        print(flush=True)
        return steps.run("compare_outputs.py", *out)
    except (KeyboardInterrupt, Terminated) as interruption:
        signum = signal.SIGINT if isinstance(interruption, KeyboardInterrupt) else interruption.signum
        said = steps.stop(signum)
        if said:  # the step on the terminal said it was interrupted: once is enough
            sys.exit(128 + signum)
        raise
    finally:
        steps.stop(signal.SIGTERM)


class _Steps:
    """The steps' processes: each the leader of its own process group (processes.start)."""

    def __init__(self):
        self.logs = {}  # waiting step -> (stdout file, stderr file)
        self.foreground = None  # the step whose output goes straight to the terminal

    def start_waiting(self, script, *args):
        logs = (tempfile.TemporaryFile(), tempfile.TemporaryFile())
        child = processes.start(_command(script, *args, "--wait-for-model"), stdin=subprocess.PIPE,
                                stdout=logs[0], stderr=logs[1])
        self.logs[child] = logs
        return child

    def run(self, script, *args):
        """Run a step on this terminal; its exit status."""
        sys.stdout.flush()
        self.foreground = processes.start(_command(script, *args))
        code = self.foreground.wait()
        self.foreground = None
        return code

    def show(self, child):
        """A waiting step's output, its stdout then its stderr."""
        for log, stream in zip(self.logs[child], (sys.stdout, sys.stderr)):
            log.seek(0)
            stream.flush()
            stream.buffer.write(log.read())
            stream.buffer.flush()

    def stop(self, signum):
        """Pass `signum` on to every step still running and let them stop cleanly (or kill them
        after STOP_GRACE s); True when a step on the terminal was running (it said why it stopped)."""
        running = [child for child in [self.foreground, *self.logs] if child is not None and child.poll() is None]
        for child in running:
            processes.stop(child, grace=STOP_GRACE, signum=signum)
        for logs in self.logs.values():
            for log in logs:
                log.close()
        self.logs.clear()
        return self.foreground in running


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
