"""Committing a run: every file of step 1 is staged in one folder, then put in place together
(the converted model swapped in whole, then each capture renamed), so a run killed at any
moment leaves whole files, and a capture of another model is named stale by its model id."""
import hashlib
from pathlib import Path

from .capture import remove_other_formats
from .cli import stop_if_asked
from .files import commit_file, exchange_or_replace_dir, failpoint, remove_tree

def model_id(folder):
    """A short hash of every file in `folder` (names and bytes): the same model and inputs
    give the same id, so captures of an identical rebuild stay valid."""
    digest = hashlib.sha256()
    for file in sorted(Path(folder).iterdir()):
        digest.update(file.name.encode("utf-8") + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def commit_run(run_dir, out_dir, model_name):
    """Put a run's files, staged in `run_dir`, in place in `out_dir`: the converted model
    folder `model_name` first (swapped in whole, atomically), then each capture (renamed).
    A run killed between two renames leaves whole files only; compare_outputs.py then names
    the capture whose model id is not the converted model's. `run_dir` is removed."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    try:
        stop_if_asked()  # an interruption a library swallowed must not let the run commit
        failpoint("staged")
        exchange_or_replace_dir(run_dir / model_name, out_dir / model_name)
        failpoint("model committed")
        for staged in sorted(run_dir.iterdir()):
            if staged.is_file():
                commit_file(staged, out_dir / staged.name)
                remove_other_formats(out_dir / staged.name)
                failpoint(f"{staged.name} committed")
    finally:
        remove_tree(run_dir)
