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

The child is step 1 itself (create_keras_model.py --in-sandbox FOLDER, a flag only the kit
can use: the child must hold the token the kit wrote in FOLDER, passed in its environment):
it stages the run in FOLDER/run and its summary line in FOLDER/summary.txt; the kit commits
the run as without the sandbox. A signal to the kit stops the sandbox with it (processes.py:
its own process group, killed on every exit); the child stays quiet (cli.QUIET_STOP), the kit
says the one line.

**What comes out is as untrusted as what goes in**: the model's code runs in the child, and
can leave anything in FOLDER. The kit reads only regular files it expects (opened without
following links, never a FIFO or a device, each within a size bound: `read_child_file`),
commits only the files it lists itself, each a regular file (`vetted_run`), prints the
summary with its control characters escaped, and walks and removes FOLDER without
recursion (files.walk_bounded, files.remove_tree). /dev inside is read-only: a write there is
refused and named like /tmp's. What the sandbox writes to disk is bounded like its memory.
"""
import contextlib
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from . import KitError, processes
from .cli import QUIET_STOP, safe_summary, safe_text
from .files import MAX_DEPTH, shown_path, staging_dir, walk_bounded
from .paths import CONVERTED_DIR, ROOT

DEFAULT_TIMEOUT = 1800  # seconds: ResNet50 as a graph with --full takes well under a minute here
WATCH_EVERY = 0.25  # seconds between two readings of the sandbox's memory
TEMP_ROOTS = {"/tmp": "root-tmp", "/var/tmp": "root-var-tmp", "/dev/shm": "root-dev-shm"}
RUN, TMP, SUMMARY, LOG, STARTED, TOKEN = "run", "tmp", "summary.txt", "log", "started", "token"
TOKEN_ENV = "TFJS_PARITY_SANDBOX_TOKEN"  # the child's proof that the kit started it (--in-sandbox)
SUMMARY_LIMIT = 64 * 1024  # bytes of the child's summary the kit reads
RUN_LIMIT = 64 * 2 ** 30  # bytes of a staged run the kit commits at most
MAX_ENTRIES = 100_000  # entries of the sandbox's folder the kit walks at most
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
    token = secrets.token_hex(16)
    descriptor = os.open(folder / TOKEN, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(token)
    env = dict(os.environ, TMPDIR=str(folder / TMP), KERAS_HOME=_keras_home(folder),
               **{QUIET_STOP: "1", TOKEN_ENV: token})
    command += ["--", sys.executable, str(ROOT / "create_keras_model.py"), *step_args, "--in-sandbox", str(folder)]
    with open(folder / LOG, "wb") as log:
        child = processes.start(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        why = _watch(child, memory_mib, timeout, folder)
    finally:  # stopped (Ctrl-C, SIGTERM) or not: the sandbox is gone before anything of its folder is touched
        processes.stop(child)  # its group; the sandbox's pid namespace dies with its pid 1
    started = _is_regular(folder / STARTED)
    text = _tail(folder / LOG)
    if not started:
        reason = next((line for line in text.splitlines() if line.startswith("bwrap:")), text.strip()[-300:])
        raise KitError(f"cannot sandbox --model: the sandbox did not start ({reason or 'bwrap failed'}); {TRUST_HINT}")
    written = writes_outside(folder, readable)
    shown = ", ".join(written[:5]) + (f" and {len(written) - 5} more" if len(written) > 5 else "")
    if why:  # stopped: why first, what it wrote meanwhile after
        raise KitError(why + (f" (it had tried to write {shown}, outside the run: nothing was written there)"
                              if written else ""))
    if written:
        raise KitError(f"the model tried to write {shown} (outside the run): refused by the sandbox; "
                       "nothing was written outside the run and nothing was committed")
    code = child.returncode
    if code == 0:
        return safe_summary(read_child_file(folder, SUMMARY, SUMMARY_LIMIT).decode("utf-8", "replace"))
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
    sys.stderr.write(safe_text(text, LOG_TAIL))  # a traceback: the kit's bug (or TensorFlow's), shown whole
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
    mounts += ["--remount-ro", "/dev"]  # bwrap's /dev is a tmpfs in memory: nothing beyond its devices
    for path in _bound(readable):
        mounts += ["--ro-bind", path, path]
    mounts += ["--bind", str(folder), str(folder)]
    paused = os.environ.get("TFJS_PARITY_PAUSED")
    if paused and (os.environ.get("TFJS_PARITY_PAUSE_AT") or os.environ.get("TFJS_PARITY_HOLD_AT")):  # the tests' failpoint: its file is written inside
        parent = str(Path(paused).resolve().parent)
        mounts += ["--bind", parent, parent]
    if os.environ.get(BREAK):
        mounts += ["--ro-bind", "/nonexistent/tfjs_parity-failpoint", "/nonexistent"]
    return mounts


def _bound(readable):
    """The folders among `readable` (a file's own folder: a model.json's weights are beside it)
    that live in a temporary root and so must be bound into the sandbox's empty one. A folder
    inside another of them is not bound again: it is seen through that one, and bwrap cannot
    bind it when the way to it passes a link there (its target is bound on its own)."""
    found = set()
    for given in readable:
        given = Path(os.path.abspath(given))
        for path in (given, given.resolve()):  # a link in /tmp is seen where the user named it, and its target
            if not path.exists():
                continue
            folder = str(path if path.is_dir() and not path.is_symlink() else path.parent)
            if _root_of(folder):
                found.add(folder)
    return [folder for folder in sorted(found)
            if not any(folder.startswith(other + "/") for other in found)]


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
        children = set()  # folders holding something: only an empty one is named itself
        entries = list(walk_bounded(base, MAX_ENTRIES))
        for relative, is_folder, _ in entries:
            if relative is None:
                found.append(f"{root}/... (more than {MAX_ENTRIES:,} entries)" if is_folder == "entries" else
                             f"{root}/... (folders more than {MAX_DEPTH} deep)")
                break
            children.add(os.path.dirname(relative))
        for relative, is_folder, _ in entries:
            if relative is None:
                break
            seen = f"{root}/{relative}"
            if not is_folder:
                found.append(seen)
            elif relative not in children and seen not in ours:
                found.append(seen + "/")
    return [safe_text(str(shown_path(p)), 300) for p in sorted(found)]


def _watch(child, memory_mib, timeout, folder):
    """Wait for the sandbox to end; kill it past `timeout` seconds, or `memory_mib` MiB of
    resident memory (all its processes) plus what it wrote to its /tmp, /var/tmp and /dev/shm
    (folders of its own on disk: shared memory and temporary files count as memory would), or
    RUN_LIMIT bytes or MAX_ENTRIES entries in its folder; checked once more when it has ended,
    so a model faster than a reading is bounded too. Returns why it was stopped, or None."""
    import psutil
    deadline = time.monotonic() + timeout
    next_walk, temporary, peak = 0.0, 0, 0  # bytes in its temporary folders as last walked; peak memory
    too_much = (f"the model used more than {memory_mib:,} MiB in the sandbox (--sandbox-memory): stopped; nothing "
                "was committed")  # memory: its resident memory and what it wrote to /tmp, /var/tmp and /dev/shm
    while True:
        try:
            child.wait(WATCH_EVERY)
            ended = True
        except subprocess.TimeoutExpired:
            ended = False
        if not ended and time.monotonic() > deadline:
            processes.stop(child)
            return (f"the model did not finish within {timeout:g} s in the sandbox (--sandbox-timeout): "
                    "stopped; nothing was committed")
        rss = 0
        with contextlib.suppress(psutil.Error):
            tree = psutil.Process(child.pid)
            for process in [tree, *tree.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss
        peak = max(peak, rss)
        if ended or time.monotonic() >= next_walk:  # what it wrote: a walk of its folder, once a second at most
            started = time.monotonic()
            temporary, written, stopped = _written(folder)
            next_walk = time.monotonic() + max(1.0, 4 * (time.monotonic() - started))
            if stopped or written > RUN_LIMIT:
                processes.stop(child)
                what = {"entries": f"more than {MAX_ENTRIES:,} files", "depth": f"folders more than {MAX_DEPTH} deep",
                        None: f"more than {RUN_LIMIT:,} bytes"}[stopped]
                return f"the model wrote {what} in the sandbox: stopped; nothing was committed"
        if (peak if ended else rss) + temporary > memory_mib * 2 ** 20:
            processes.stop(child)
            return too_much
        if ended:
            return None


def _written(folder):
    """(bytes in the sandbox's temporary folders, bytes in all, None) of its folder; the last
    is "entries" or "depth" when the walk met one of its bounds (the model made too many or
    too deep: stopped for that)."""
    temporary, written = 0, 0
    temporary_roots = tuple(TEMP_ROOTS.values())
    for relative, kind, info in walk_bounded(folder, MAX_ENTRIES):
        if relative is None:
            return temporary, written, kind
        written += info.st_blocks * 512
        if relative.split("/", 1)[0] in temporary_roots:
            temporary += info.st_blocks * 512
    return temporary, written, None


def _tail(path):
    """The last LOG_TAIL bytes of the child's log, if it is still the regular file the kit made."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(descriptor, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return ""
        f.seek(max(0, info.st_size - LOG_TAIL))
        return f.read(LOG_TAIL).decode("utf-8", "replace")


def _is_regular(path):
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_child_file(folder, name, limit):
    """The bytes of `folder/name`, a file the sandboxed child wrote: opened without following a
    link, refused unless a regular file of at most `limit` bytes (a FIFO would block the kit,
    a sparse file of gigabytes fill its memory). KitError saying what it found."""
    try:
        descriptor = os.open(Path(folder) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise KitError(f"the sandboxed step left no readable {name} ({os.strerror(error.errno)}): refused; "
                       "nothing was committed") from None
    with os.fdopen(descriptor, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            what = "not a regular file" if not stat.S_ISREG(info.st_mode) else f"{info.st_size:,} bytes"
            raise KitError(f"the sandboxed step left a {name} that is {what}: refused (the model's code runs "
                           "there and may have made it); nothing was committed")
        return f.read(limit)


def vetted_run(folder):
    """FOLDER/run, once every entry in it is what step 1 stages: the converted model's folder
    (regular files only, plain names) and capture files, each a regular file with one link,
    RUN_LIMIT bytes in all. KitError naming the first that is not (a link, a FIFO, a device, a
    folder where a file belongs, a name the kit does not write): nothing is committed."""
    from .paths import CAPTURE_SUFFIXES
    run_dir = Path(folder) / RUN
    try:
        top = os.lstat(run_dir)
    except OSError:
        top = None
    if top is None or not stat.S_ISDIR(top.st_mode):
        raise KitError("the sandboxed step left no run folder of its own (a link or a file in its place): refused; "
                       "nothing was committed")
    total = 0
    for relative, is_folder, info in walk_bounded(run_dir, MAX_ENTRIES, max_depth=2):
        if relative is None:
            what = f"more than {MAX_ENTRIES:,} files" if is_folder == "entries" else "folders deeper than the kit writes"
            raise KitError(f"the sandboxed step left {what}: refused; nothing was committed")
        parts = relative.split("/")
        expected = (is_folder and relative == CONVERTED_DIR) or (
            not is_folder and stat.S_ISREG(info.st_mode) and info.st_nlink == 1
            and (len(parts) == 2 and parts[0] == CONVERTED_DIR
                 or len(parts) == 1 and parts[0].startswith("keras_model_") and parts[0].endswith(CAPTURE_SUFFIXES)))
        if not expected:
            kind = ("a link" if stat.S_ISLNK(info.st_mode) else "a folder" if is_folder else
                    "a file with other links" if stat.S_ISREG(info.st_mode) and info.st_nlink > 1 else
                    "a file" if stat.S_ISREG(info.st_mode) else "a FIFO or device")
            raise KitError(f"the sandboxed step left {kind} the kit does not write, {safe_text(relative, 120)}: "
                           "refused (the model's code runs there); nothing was committed")
        total += info.st_size
        if total > RUN_LIMIT:
            raise KitError(f"the sandboxed step's run holds more than {RUN_LIMIT:,} bytes: refused; nothing was "
                           "committed")
    if not _is_dir(run_dir / CONVERTED_DIR):
        raise KitError("the sandboxed step left no converted model: refused; nothing was committed")
    return run_dir


def _is_dir(path):
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def started_inside(folder):
    """The child's first act: the sandbox is up (bwrap made every mount and started it). Only
    a child the kit started may act as one: it holds the token the kit wrote in `folder`."""
    given = os.environ.get(TOKEN_ENV, "")
    try:
        held = read_child_file(folder, TOKEN, 256).decode("ascii", "replace")
    except KitError:
        held = ""
    if not given or not held or not secrets.compare_digest(given, held):
        raise KitError("--in-sandbox is the kit's own flag for the sandboxed step, not for a command line: run "
                       "create_keras_model.py --model PATH (the kit starts the sandbox itself)")
    (Path(folder) / STARTED).touch()


def summary_written(folder, line):
    """The child's last act: its summary line, for the kit to print once it has committed."""
    from .files import atomic_write_text
    atomic_write_text(Path(folder) / SUMMARY, line)
