"""Hostile model and input files (issue 20), built here: each is one line and a non-zero exit
from step 1, writes nothing outside its run folder, and stays under 1 GiB of memory (the
step's own peak, measured by forking it from a small launcher, as make bench does)."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error

pytestmark = pytest.mark.slow  # the real step 1, as a subprocess: see pytest.ini

sys.path.insert(0, str(ROOT))
from scripts.bench import LAUNCHER  # noqa: E402 (the step's own peak, not the test process's)

PEAK_LIMIT_MIB = 1024


def run_step_1(*args, tmp):
    """(CompletedProcess-like, peak MiB) of create_keras_model.py with `args`, and what the step
    left in its temporary folder: a private one (TMPDIR), so that what other processes on the
    machine write to /tmp meanwhile cannot count against the step."""
    figures, private = tmp / "figures", tmp / "tmpdir"
    private.mkdir()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, str(figures), sys.executable,
                           str(ROOT / "create_keras_model.py"), *map(str, args), "--out-dir", str(tmp / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TMPDIR=str(private)))
    _, peak_kib, code = figures.read_text().split()
    done.returncode = int(code)
    return done, int(peak_kib) / 1024, set(private.iterdir())


def keras_file(path, config):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.10.0"}))
        archive.writestr("config.json", config)
    return path


def deep(levels):
    return '{"class_name": "Functional", "config": ' + '{"a": [' * levels + "1" + "]}" * levels + "}"


def h5_file(path, config):
    import h5py
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = config
    return path


def npy_declaring(path, shape):
    """A .npy of a few bytes whose header says `shape` float32."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = shape
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 16)
    return path


def npz_of(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


@pytest.mark.parametrize("make, fragment", [
    (lambda tmp: keras_file(tmp / "deep.keras", deep(5000)), "nests more than 100 levels deep"),
    (lambda tmp: h5_file(tmp / "deep.h5", deep(5000)), "nests more than 100 levels deep"),
    (lambda tmp: keras_file(tmp / "bomb.keras", " " * (200 * 2 ** 20)), "its config.json unpacks to 209,715,200"),
])
def test_a_hostile_model_file_is_one_line_bounded_and_writes_nothing(tmp_path, make, fragment):
    done, peak, appeared = run_step_1("--model", make(tmp_path), tmp=tmp_path)
    assert_one_line_error(done, fragment)
    assert peak < PEAK_LIMIT_MIB, peak
    assert appeared == set() and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def mlp(zoo_files):
    return zoo_files["mlp"]


def _bomb_member():
    """A .npy member of 300 MiB of zeros (compressed to a few hundred KiB), of a sane header."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (300 * 2 ** 18, 1)
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(300 * 2 ** 20)


@pytest.mark.parametrize("make, fragment", [
    (lambda tmp: npy_declaring(tmp / "huge.npy", (2 ** 40, 1000)), "but the file holds 16 bytes of data"),
    (lambda tmp: npz_of(tmp / "huge.npz", {"x": (lambda p: p.read_bytes())(npy_declaring(tmp / "m.npy",
                                                                                          (2 ** 42, 1000)))}),
     "member x: its header declares"),
    (lambda tmp: npz_of(tmp / "bomb.npz", {"x": _bomb_member()}), "more than the 268,435,456 an input may be"),
])
def test_a_hostile_input_file_is_one_line_bounded_and_writes_nothing(tmp_path, mlp, make, fragment):
    done, peak, appeared = run_step_1("--model", mlp, "--input", make(tmp_path), tmp=tmp_path)
    assert_one_line_error(done, fragment)
    assert peak < PEAK_LIMIT_MIB, peak
    assert appeared == set() and not (tmp_path / "out").exists()
