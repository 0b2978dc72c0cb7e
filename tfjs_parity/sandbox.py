"""Step 1 with a user's model, in a sandbox: a model is a program (a SavedModel runs its
restored resources' initializers while it loads), so the part of step 1 that loads, converts
and runs it is a child process under bubblewrap (`bwrap`, Debian's `bubblewrap`):

- it sees the whole filesystem read-only (`--ro-bind / /`) and writes only its own staging
  folder in --out-dir (`.sandbox.~<pid>~...`, its TMPDIR inside);
- /tmp, /var/tmp and /dev/shm are empty folders of that staging folder (with the model, its
  input, the kit and the working folder bound read-only into them where they live there),
  so a write there lands where the kit lists it afterwards: each one is reported and the
  step refuses the model, committing nothing;
- no network, no other process's view (`--unshare-all`: net, pid, ipc, uts, cgroup, user
  where possible), a new session (no terminal to inject into), `--die-with-parent`; the
  step is the namespace's pid 1 itself (`--as-pid-1`): bwrap then waits for it, so its
  peak memory reaches the kit's own rusage (with bwrap's reaper between them it was lost);
  TensorFlow starts no children to reap;
- bounded time (--sandbox-timeout) and memory (--sandbox-memory): a watchdog in the kit
  reads the resident memory of every process in the sandbox from /proc every
  WATCH_EVERY seconds and kills the sandbox past the limit (RLIMIT_AS does not suit
  TensorFlow, which reserves far more address space than it uses; a cgroup is not writable
  for most users).

The child is step 1 itself (create_keras_model.py --in-sandbox FOLDER): it stages the run
in FOLDER/run and its summary line in FOLDER/summary.txt; the kit commits the run as
without the sandbox. A signal to the kit stops the sandbox with it (processes.py: its own
process group, killed on every exit); the child stays quiet (cli.QUIET_STOP), the kit
says the one line.
"""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import KitError, processes
from .cli import QUIET_STOP
from .files import shown_path, staging_dir
from .paths import ROOT

DEFAULT_TIMEOUT = 1800  # seconds: ResNet50 as a graph with --full takes well under a minute here
WATCH_EVERY = 0.25  # seconds between two readings of the sandbox's memory
TEMP_ROOTS = {"/tmp": "root-tmp", "/var/tmp": "root-var-tmp", "/dev/shm": "root-dev-shm"}
RUN, TMP, SUMMARY, LOG, STARTED = "run", "tmp", "summary.txt", "log", "started"
BREAK = "TFJS_PARITY_SANDBOX_BREAK"  # failpoint: bwrap is given a bind it cannot make, and fails to start
TRUST_HINT = "--trust-model runs the model without a sandbox (only for a model you trust)"
LOG_TAIL = 64 * 1024


def default_memory_mib():
    """The memory available when step 1 starts: the sandbox may not take the machine into swap."""
    import psutil
    return psutil.virtual_memory().available // 2 ** 20


def bwrap_path():
    """bwrap's path; KitError (naming --trust-model) when there is none."""
    found = shutil.which("bwrap")
    if not found:
        raise KitError("cannot sandbox --model: bubblewrap (bwrap) is not installed (make setup installs it: "
                       f"scripts/install_bwrap.sh); {TRUST_HINT}")
    return found


def make_folder(out_dir):
    """The sandbox's staging folder in `out_dir`: the run's staging folder, its TMPDIR and the
    folders that become its /tmp, /var/tmp and /dev/shm."""
    folder = staging_dir(out_dir, "sandbox").resolve()
    for name in (RUN, TMP, *TEMP_ROOTS.values()):
        (folder / name).mkdir()
    return folder


def run(folder, step_args, readable, memory_mib, timeout):
    """Run step 1 (create_keras_model.py with `step_args`) in the sandbox staged at `folder`.
    Returns the child's summary line; KitError for every failure: the sandbox could not start,
    the model wrote outside its folder (each path named), it ran out of time or memory, or
    step 1 itself refused it (its own line)."""
    bwrap = bwrap_path()
    command = [bwrap, *_mounts(folder, readable),
               "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session", "--chdir", os.getcwd()]
    env = dict(os.environ, TMPDIR=str(folder / TMP), KERAS_HOME=_keras_home(folder), **{QUIET_STOP: "1"})
    command += ["--", sys.executable, str(ROOT / "create_keras_model.py"), *step_args, "--in-sandbox", str(folder)]
    with open(folder / LOG, "wb") as log:
        child = processes.start(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    why = _watch(child, memory_mib, timeout)
    processes.stop(child)  # anything left in its group
    started = (folder / STARTED).exists()
    text = _tail(folder / LOG)
    if not started:
        reason = next((line for line in text.splitlines() if line.startswith("bwrap:")), text.strip()[-300:])
        raise KitError(f"cannot sandbox --model: the sandbox did not start ({reason or 'bwrap failed'}); {TRUST_HINT}")
    written = writes_outside(folder, readable)
    if written:
        shown = ", ".join(written[:5]) + (f" and {len(written) - 5} more" if len(written) > 5 else "")
        raise KitError(f"the model tried to write {shown} (outside the run): refused by the sandbox; "
                       "nothing was written outside the run and nothing was committed")
    if why:
        raise KitError(why)
    code = child.returncode
    if code == 0:
        return (folder / SUMMARY).read_text(encoding="utf-8")
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if code == 2 and last.startswith("error: "):
        line = last.removeprefix("error: ")
        if "Read-only file system" in line:  # a write outside the temporary folders: refused by the read-only root
            path = re.search(r"(\S+); Read-only file system|Read-only file system: '([^']+)'", line)
            if path:
                raise KitError(f"the model tried to write {path[1] or path[2]} (outside the run): refused by the "
                               "sandbox (read-only); nothing was written outside the run and nothing was committed")
            line += " (the model tried to write outside the run: refused by the sandbox)"
        raise KitError(line)
    if code < 0:
        raise KitError(f"step 1 in the sandbox was killed by {signal.Signals(-code).name}" +
                       (f" ({last[:200]})" if last else ""))
    sys.stderr.write(text)  # a traceback: the kit's bug (or TensorFlow's), shown whole
    sys.stderr.flush()
    raise SystemExit(code)


def _keras_home(folder):
    """A private KERAS_HOME holding a copy of the user's keras.json: Keras writes its config
    file when it finds none where it looks (~/.keras, read-only here, so /tmp/.keras), and
    that write would be the model's as far as the sandbox can tell."""
    home = folder / TMP / "keras"
    home.mkdir()
    for where in (os.environ.get("KERAS_HOME"), os.path.expanduser("~/.keras"), "/tmp/.keras"):
        if where and os.path.isfile(os.path.join(where, "keras.json")):
            with contextlib.suppress(OSError):
                shutil.copyfile(os.path.join(where, "keras.json"), home / "keras.json")
            break
    return str(home)


def _mounts(folder, readable):
    """bwrap's filesystem: everything read-only, fresh temporary folders, what the step reads
    bound read-only into them, and its own folder writable."""
    mounts = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for root, name in TEMP_ROOTS.items():
        if root == "/dev/shm" or (os.path.isdir(root) and not os.path.islink(root)):
            mounts += ["--bind", str(folder / name), root]
    for path in _bound(readable):
        mounts += ["--ro-bind", path, path]
    mounts += ["--bind", str(folder), str(folder)]
    paused = os.environ.get("TFJS_PARITY_PAUSED")
    if paused and os.environ.get("TFJS_PARITY_PAUSE_AT"):  # the tests' failpoint: its file is written inside
        parent = str(Path(paused).resolve().parent)
        mounts += ["--bind", parent, parent]
    if os.environ.get(BREAK):
        mounts += ["--ro-bind", "/nonexistent/tfjs_parity-failpoint", "/nonexistent"]
    return mounts


def _bound(readable):
    """The folders among `readable` (a file's own folder: a model.json's weights are beside it)
    that live in a temporary root and so must be bound into the sandbox's empty one."""
    found = []
    for path in readable:
        path = Path(path).resolve()
        if not path.exists():
            continue
        folder = str(path if path.is_dir() else path.parent)
        if _root_of(folder):
            found.append(folder)
    return sorted(set(found))


def _root_of(path):
    return next((root for root in TEMP_ROOTS if path.startswith(root + "/")), None)


def readable_paths(*paths):
    """What step 1 reads besides the read-only root: the given paths, the kit, Python's
    prefixes and the working folder (they matter only where they live in /tmp and the like)."""
    return [p for p in (*paths, ROOT, sys.prefix, sys.base_prefix, os.getcwd()) if p]


def writes_outside(folder, readable):
    """What appeared in the sandbox's /tmp, /var/tmp and /dev/shm (the paths as the model saw
    them): every file, and every folder that is neither a mount point the kit made nor on the
    way to one."""
    ours = set()
    for path in [*_bound(readable), str(folder)] + ([str(Path(os.environ["TFJS_PARITY_PAUSED"]).resolve().parent)]
                                                    if os.environ.get("TFJS_PARITY_PAUSED") else []):
        path = Path(path)
        ours.update(str(p) for p in [path, *path.parents])
    found = []
    for root, name in TEMP_ROOTS.items():
        base = folder / name
        for here, dirs, files in os.walk(base):
            seen = root + here[len(str(base)):]
            for entry in sorted(files):
                found.append(f"{seen}/{entry}")
            if not dirs and not files and seen not in ours and seen != root:
                found.append(seen + "/")
    return [str(shown_path(p)) for p in sorted(found)]


def _watch(child, memory_mib, timeout):
    """Wait for the sandbox to end; kill it past `timeout` seconds or `memory_mib` MiB of
    resident memory (all its processes). Returns why it was killed, or None."""
    import psutil
    deadline = time.monotonic() + timeout
    while True:
        try:
            child.wait(WATCH_EVERY)
            return None
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            processes.stop(child)
            return (f"the model did not finish within {timeout:g} s in the sandbox (--sandbox-timeout): "
                    "stopped; nothing was committed")
        rss = 0
        with contextlib.suppress(psutil.Error):
            tree = psutil.Process(child.pid)
            for process in [tree, *tree.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss
        if rss > memory_mib * 2 ** 20:
            processes.stop(child)
            return (f"the model used more than {memory_mib:,} MiB in the sandbox (--sandbox-memory): stopped; "
                    "nothing was committed")


def _tail(path):
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - LOG_TAIL))
        return f.read().decode("utf-8", "replace")


def started_inside(folder):
    """The child's first act: the sandbox is up (bwrap made every mount and started it)."""
    (Path(folder) / STARTED).touch()


def summary_written(folder, line):
    """The child's last act: its summary line, for the kit to print once it has committed."""
    from .files import atomic_write_text
    atomic_write_text(Path(folder) / SUMMARY, line)
