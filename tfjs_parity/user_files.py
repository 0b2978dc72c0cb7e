"""Reading the files a user hands in (--model, --input) with bounds: sizes checked before
anything is read (an archive member by its declared size, which zipfile then also holds the
member to; a .npy by its header's shape against the bytes the file holds and the memory
free), JSON nesting depth checked before it is parsed. Each refusal is one KitError naming
the file and the limit. A downloaded model is untrusted input (docs/guarantees.md)."""
import re
import zipfile

import numpy as np

from . import KitError

MAX_CONFIG_BYTES = 64 * 2 ** 20  # a model's config: ResNet50's is 0.1 MB, the largest zoo models' a few MB
MAX_CONFIG_DEPTH = 100           # JSON nesting of a model config: real ones stay under 30
_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


def read_archive_member(path, name, limit, flag="--model"):
    """The bytes of member `name` of the zip at `path`, refused unless its declared size is
    within `limit` (zipfile then stops at that size, so a header that lies gets no further)."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(name)
            if info.file_size > limit:
                raise KitError(f"{flag} {path}: its {name} unpacks to {info.file_size:,} bytes, more than the "
                               f"{limit:,} a model's {name} may hold")
            with archive.open(info) as member:
                return member.read(limit + 1)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, NotImplementedError):
        raise KitError(f"{flag} {path}: not a Keras 3 .keras file (no readable {name} inside)") from None


def check_archive_size(path, flag="--model"):
    """The members of the zip at `path` unpack, by their declared sizes, to less than the
    memory this machine has free."""
    import psutil
    available = psutil.virtual_memory().available
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        raise KitError(f"{flag} {path}: not a readable zip archive") from None
    if total > available:
        raise KitError(f"{flag} {path}: unpacks to {total:,} bytes, more than the {available:,} of memory available")


def check_json_depth(data, limit=MAX_CONFIG_DEPTH, where="the model config"):
    """KitError when the JSON text `data` (bytes or str) nests deeper than `limit`: checked
    by a scan of its brackets, so no depth can exhaust the parser's stack."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    depth, in_string, skip = 0, False, -1
    for match in _STRUCTURE.finditer(data):
        at = match.start()
        if at == skip:  # the character a backslash escapes
            continue
        char = match.group()
        if in_string:
            if char == b"\\":
                skip = at + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise KitError(f"{where} nests more than {limit} levels deep; no Keras model does")
        else:  # ] or }
            depth -= 1


def npy_header(stream, where):
    """(shape, dtype) from the header of the .npy at `stream`'s position, without its data;
    KitError for an object array (a pickle) or a header that is not one."""
    try:
        version = np.lib.format.read_magic(stream)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"format version {version}")
        shape, _, dtype = reader(stream)
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise KitError(f"{where}: not a .npy or .npz file of plain arrays ({error})") from None
    if dtype.hasobject:
        raise KitError(f"{where}: not a .npy or .npz file of plain arrays: it holds Python objects (a pickle), "
                       "which the kit does not load")
    return tuple(shape), dtype


def check_declared_array(shape, dtype, holds, limit, where):
    """The bytes of an array of `shape` and `dtype`; KitError when that is more than the
    `holds` bytes its file has for it (a header that lies) or `limit`."""
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > holds:
        raise KitError(f"{where}: its header declares {list(shape)} {dtype} ({size:,} bytes), but the file holds "
                       f"{holds:,} bytes of data")
    if size > limit:
        raise KitError(f"{where}: {list(shape)} {dtype} is {size:,} bytes, more than the {limit:,} an input may be")
    return size
