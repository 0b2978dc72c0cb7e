"""The processes the kit starts (Node, Chromium): each leads its own process group, and the
whole group is killed when the kit ends by any road: a normal end, an error, Ctrl-C,
SIGTERM, or the kit itself killed with SIGKILL (then the kernel's parent-death signal kills
the leader, and Chromium's helpers follow their browser).

Their own process group also keeps a terminal's Ctrl-C to the kit alone: the kit decides
what to stop, and says so in one line, instead of every child printing its own death."""
import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_children = {}  # pid -> Popen, every child not yet stopped
_lock = threading.Lock()


def start(command, **popen_kwargs):
    """subprocess.Popen(command) as the leader of a new process group (a new session) that
    dies with this process. Stop it with stop(); stop_all() runs at exit."""
    parent = os.getpid()

    def in_child():  # between fork and exec: ask for SIGKILL when the parent dies
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    child = subprocess.Popen(command, start_new_session=True, preexec_fn=in_child, **popen_kwargs)
    with _lock:
        _children[child.pid] = child
    return child


def stop(*children, grace=0.0):
    """Kill each child's whole process group (after up to `grace` seconds of SIGTERM, sent to
    them all at once, when asked) and reap the leaders. Safe to call twice."""
    with _lock:
        for child in children:
            _children.pop(child.pid, None)
    if grace > 0:
        running = [child for child in children if child.poll() is None]
        for child in running:
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    for child in children:
        _signal_group(child.pid, signal.SIGKILL)  # the helpers too, even when the leader is gone
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            pass


def stop_all():
    """Stop every child still running (run_main calls this on every exit)."""
    with _lock:
        children = list(_children.values())
    for child in children:
        stop(child)


def _signal_group(pgid, signum):
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
