"""Writing files without ever losing one: atomic writes, staging names that say who owns
them (so a killed run's leftovers can be told from a running one's and removed), output
paths checked before anything is written, and filesystem errors as one line naming the path.
"""
import contextlib
import errno
import os
import re
import signal
import stat
import tempfile
import time
from pathlib import Path

from . import KitError

# A staging entry is hidden and carries its owner's pid: `.<name>.~<pid>~<random><suffix>`.
_STAGING = re.compile(r"^\..*\.~(\d+)~")


def staging_prefix(name):
    return f".{name}.~{os.getpid()}~"


def staging_file(folder, name, suffix=""):
    """(fd, path) of a new staging file for `name` in `folder`, mode as for any new file."""
    try:
        fd, path = tempfile.mkstemp(dir=folder, prefix=staging_prefix(name), suffix=suffix)
        os.chmod(path, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual mode
    except OSError as error:
        raise write_error(Path(folder) / name, error) from None
    return fd, path


def staging_dir(parent, name):
    """A new staging folder for `name` in `parent`, mode as for any new folder."""
    try:
        path = Path(tempfile.mkdtemp(dir=parent, prefix=staging_prefix(name)))
        os.chmod(path, 0o777 & ~current_umask())  # mkdtemp makes 0700
    except OSError as error:
        raise write_error(Path(parent) / name, error) from None
    return path


def remove_tree(path):
    """Remove `path` (a folder and everything in it, or a file or link) without recursion and
    without long paths: a folder's subfolders are first moved up beside it (renamed in place),
    so a tree nested thousands deep (which shutil.rmtree and os.walk meet with RecursionError
    or ENAMETOOLONG) goes like a flat one. Every folder is opened by descriptor, never by a
    path, and only if it is the very folder listed (device and inode): a folder swapped for a
    link meanwhile is removed as a link, never followed. Errors are ignored, as
    shutil.rmtree(ignore_errors=True) does; returns whether `path` is gone."""
    path = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(path)
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return not os.path.lexists(path)
    try:
        try:
            top = os.lstat(base, dir_fd=parent_fd)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        if not stat.S_ISDIR(top.st_mode):
            with contextlib.suppress(OSError):
                os.unlink(base, dir_fd=parent_fd)
            return not os.path.lexists(path)
        pending, emptied, moved = [(base, top.st_dev, top.st_ino)], [], 0
        while pending:
            name, device, inode = pending.pop()
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
            except OSError:  # a link (or a file) in its place: removed, not followed
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=parent_fd)
                continue
            try:
                found = os.fstat(fd)
                if (found.st_dev, found.st_ino) != (device, inode):
                    continue  # not the folder that was listed
                emptied.append(name)
                with os.scandir(fd) as entries:
                    listed = [entry.name for entry in entries]
                for entry in listed:
                    try:
                        info = os.lstat(entry, dir_fd=fd)
                        if stat.S_ISDIR(info.st_mode):
                            moved += 1  # beside the tree, a name of ours: its depth is gone
                            flat = f".{base}.~{os.getpid()}~up{moved}"
                            os.rename(entry, flat, src_dir_fd=fd, dst_dir_fd=parent_fd)
                            pending.append((flat, info.st_dev, info.st_ino))
                        else:
                            os.unlink(entry, dir_fd=fd)
                    except OSError:
                        continue
            finally:
                os.close(fd)
        for name in reversed(emptied):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=parent_fd)
        return not os.path.lexists(path)
    finally:
        os.close(parent_fd)


MAX_DEPTH = 256  # folders deep that walk_bounded enters (one descriptor open per level)


def walk_bounded(top, max_entries=100_000, max_depth=MAX_DEPTH):
    """(relative path, is a folder, lstat) of every entry under `top`, depth first, links not
    followed, no recursion and no long paths (each folder opened by descriptor from its
    parent's, so a path beyond PATH_MAX is walked like any other): at most `max_entries`; then,
    or when a folder is deeper than `max_depth`, one more item (None, "entries" or "depth",
    None) says the walk stopped there."""
    try:
        root = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    stack = []  # (descriptor, relative path, names left to look at), one per level
    try:
        with os.scandir(root) as entries:
            stack.append((root, "", sorted(e.name for e in entries)))
        seen = 0
        while stack:
            fd, relative, names = stack[-1]
            if not names:
                os.close(fd)
                stack.pop()
                continue
            name = names.pop(0)
            seen += 1
            if seen > max_entries:
                yield None, "entries", None
                return
            try:
                info = os.lstat(name, dir_fd=fd)
            except OSError:
                continue
            path = f"{relative}/{name}" if relative else name
            folder = stat.S_ISDIR(info.st_mode)
            yield path, folder, info
            if not folder:
                continue
            if len(stack) >= max_depth:
                yield None, "depth", None
                return
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                continue
            try:
                with os.scandir(child) as entries:
                    stack.append((child, path, sorted(e.name for e in entries)))
            except OSError:
                os.close(child)
    finally:
        for fd, _, _ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


def remove_stale_staging(folder):
    """Remove staging entries in `folder` whose owner process is gone (a run killed with
    SIGKILL, a crash): nothing of a running step is touched."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _STAGING.match(entry.name)
        if match and not _alive(int(match[1])):
            remove_tree(entry.path)  # a tree a sandboxed model left, however deep


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_file(path):
    """A binary file object that becomes `path` when the block ends without an error (written
    to a staging file in the same folder, then renamed); nothing is left otherwise. A
    filesystem error (full disk, read-only, no permission) is a KitError naming `path`."""
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp = staging_file(path.parent, path.name, ".tmp")
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.replace(tmp, path)
        except OSError as error:
            raise write_error(path, error) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    """Write text to path atomically (atomic_file)."""
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))


def failpoint(name):
    """How the tests reach a chosen moment of a step, whatever the machine's speed.
    TFJS_PARITY_KILL_AT=name: die here with SIGKILL (between two renames of a commit, say).
    TFJS_PARITY_PAUSE_AT=name: create the file TFJS_PARITY_PAUSED names, then wait here for
    a signal (a test waits for the file, then interrupts the step at this very moment).
    TFJS_PARITY_HOLD_AT=name: create that file, then go on once it is removed (a test acts
    meanwhile: what a sandboxed model's code could have done at this moment)."""
    if os.environ.get("TFJS_PARITY_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("TFJS_PARITY_HOLD_AT") == name:
        held = Path(os.environ["TFJS_PARITY_PAUSED"])
        held.touch()
        while held.exists():
            time.sleep(0.05)
    if os.environ.get("TFJS_PARITY_PAUSE_AT") == name:
        Path(os.environ["TFJS_PARITY_PAUSED"]).touch()
        while True:
            signal.pause()  # the kit's signal handler raises; nothing else ends the wait


def commit_file(staged, final):
    """Rename a staged file onto its final path (atomic on one filesystem)."""
    try:
        os.replace(staged, final)
    except OSError as error:
        raise write_error(final, error) from None


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_or_replace_dir(new, target):
    """Put the folder `new` at `target` in one step: where `target` exists, the two are
    exchanged atomically (renameat2 RENAME_EXCHANGE: at every moment one whole folder is at
    `target`) and the old one, now at `new`, is removed. Where the filesystem cannot
    exchange, the old folder is moved aside first (a moment with none)."""
    new, target = Path(new), Path(target)
    try:
        if not target.exists():
            os.rename(new, target)
            return
        if not _exchange(new, target):
            aside = target.parent / (staging_prefix(target.name) + "old")
            os.rename(target, aside)
            try:
                os.rename(new, target)
            except OSError:
                os.rename(aside, target)  # the old one back where it was, not hidden
                raise
            new = aside
    except OSError as error:
        raise write_error(target, error) from None
    remove_tree(new)


def _exchange(a, b):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    return result == 0


def write_error(path, error):
    """A KitError for an OSError met while writing `path`."""
    reason = error.strerror or str(error)
    hint = {errno.ENOSPC: " (the disk is full: free some space and run again)",
            errno.EROFS: " (a read-only filesystem: choose another --out-dir)",
            errno.EACCES: " (no permission: choose another --out-dir)",
            errno.ENAMETOOLONG: " (a file name too long for this filesystem)",
            errno.EEXIST: " (a file is in the way of the folder: move it or choose another --out-dir)",
            errno.ENOTDIR: " (a file is in the way of a folder: move it or choose another --out-dir)",
            errno.EPERM: " (not permitted: an immutable file or folder? choose another --out-dir)",
            errno.EXDEV: " (across filesystems: a link to another disk? choose another --out-dir)"}.get(error.errno, "")
    return KitError(f"cannot write {shown_path(path)}: {reason}{hint}")


def shown_path(path):
    """`path` as the user knows it: without the staging folders it is written through."""
    return Path(*(part for part in Path(path).parts if not _STAGING.match(part)))


def make_dirs(folder, flag=None):
    """Create `folder` (and its parents) if needed; KitError naming it (and `flag`, the
    option that chose it) when it cannot be a folder the kit writes into."""
    folder = Path(folder)
    what = f"{flag} {folder}" if flag else str(folder)
    if folder.exists() and not folder.is_dir():
        raise KitError(f"{what} is not a folder; give a folder (it is created when missing)")
    missing = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        missing.append(parent)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KitError(f"{what}: cannot create it ({error.strerror or error})") from None
    _created.extend(missing)  # deepest first
    return folder


_created = []  # folders this step created: removed again if it fails while they are empty


def remove_created_if_empty():
    """A failed or interrupted step leaves no folder behind that it created and left empty."""
    for folder in _created:
        with contextlib.suppress(OSError):
            folder.rmdir()
    _created.clear()


def writable_out_dir(folder, flag="--out-dir"):
    """make_dirs, then prove a file can be written there (a read-only mount, /proc, a full
    disk fail here, before any work is done), and clear a killed run's leftovers."""
    folder = make_dirs(folder, flag)
    try:
        fd, path = tempfile.mkstemp(dir=folder, prefix=staging_prefix("probe"))
        os.close(fd)
        os.unlink(path)
    except OSError as error:
        raise KitError(f"{flag} {folder}: cannot write there ({error.strerror or error}); choose another folder") \
            from None
    remove_stale_staging(folder)
    return folder


def check_output(path, flag, inputs=()):
    """Refuse an output path that would destroy something: an input of this run (a capture
    being compared), or anything that is not a regular file (a folder, a device such as
    /dev/full, a FIFO, a symlink). A missing file is fine if its folder exists."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise KitError(f"{flag} {path}: its folder {path.parent} does not exist") from None
        return
    except OSError as error:
        raise KitError(f"{flag} {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a folder" if stat.S_ISDIR(info.st_mode) else "a symlink" if stat.S_ISLNK(info.st_mode)
                else "a device, FIFO or socket")
        raise KitError(f"{flag} {path} is {kind}, not a regular file; name a new file (nothing was written)")
    for other in inputs:
        with contextlib.suppress(OSError):
            if os.path.samefile(path, other):
                raise KitError(f"{flag} {path} is one of the captures being compared; writing there would "
                               "destroy it: name another file")


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
