"""Shared helpers: run the kit's scripts for real, as a user would, in a scratch folder."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMALL_MODEL = ["--depth", "3", "--units", "8"]  # the small model: fast, same code paths


def run_script(script, *args, env=None, timeout=600):
    """Run one of the kit's top-level scripts with this Python; return the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def check(done):
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def leftovers(folder):
    """Temporary files a failed write might have left behind."""
    return sorted(p.name for p in Path(folder).rglob("*") if p.name.startswith(".") or p.suffix == ".tmp")


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """The three captures of the small model, made by the real scripts on the real runtimes."""
    out = tmp_path_factory.mktemp("small_study")
    check(run_script("create_keras_model.py", *SMALL_MODEL, "--out-dir", out))
    check(run_script("run_node.py", "--out-dir", out))
    check(run_script("run_browser.py", "--out-dir", out))
    return out
