"""The wire contract is defined once (tfjs_parity/wire.json) and both languages read it:
what Python names and what the JS side writes come from the same file."""
import json
import subprocess

import pytest

from conftest import ROOT
from tfjs_parity import capture, capture_json, capture_safetensors, paths, plan, wire


def test_python_takes_its_names_from_the_wire_file():
    document = json.loads((ROOT / "tfjs_parity" / "wire.json").read_text())
    assert wire.SAFETENSORS_DTYPES == document["dtypes"]
    assert (wire.WEIGHTS_SUFFIX, wire.OUTPUT_SUFFIX) == (document["key_suffixes"]["weights"],
                                                        document["key_suffixes"]["output"])
    assert list(wire.SPECIAL_NUMBERS) == document["special_numbers"]
    assert (wire.CONVERTED_DIR, wire.INPUT_FILE, wire.PLAN_FILE) == (
        document["files"]["converted_dir"], document["files"]["inputs"], document["files"]["plan"])
    # and the codecs use those very objects, not copies
    assert capture_safetensors.SAFETENSORS_DTYPES is wire.SAFETENSORS_DTYPES
    assert capture_json.SPECIAL_NUMBERS is wire.SPECIAL_NUMBERS and capture.OUTPUT_SUFFIX is wire.OUTPUT_SUFFIX
    assert (paths.CONVERTED_DIR, paths.INPUT_FILE, plan.PLAN_FILE) == (wire.CONVERTED_DIR, wire.INPUT_FILE,
                                                                      wire.PLAN_FILE)


@pytest.mark.parametrize("prefix, fragment", [(b"\1\0", "8-byte length"),
                                              (b"\x40\0\0\0\0\0\0\0{}", "more than the bytes"),
                                              (b"\2\0\0\0\0\0\0\0[]", "not a JSON object")])
def test_the_one_header_parser_refuses_what_is_not_a_header(prefix, fragment):
    with pytest.raises(ValueError, match=fragment):
        wire.parse_safetensors_header(prefix)


def test_the_header_parser_reads_what_python_writes(tmp_path):
    import numpy as np
    capture.write_safetensors(tmp_path / "c.safetensors", {"schema": 1}, {"d_output": [np.zeros((2, 3), np.float32)]})
    with open(tmp_path / "c.safetensors", "rb") as f:
        header, start = wire.read_safetensors_header(f, 2 ** 20)
    assert header["d_output/0"]["shape"] == [2, 3] and start % 8 == 0 and wire.data_end(header) == 24


@pytest.mark.slow  # needs Node
def test_node_reads_the_same_wire_file():
    done = subprocess.run(["node", "-e", "console.log(JSON.stringify(require('./inference_common.js').wire))"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == wire.WIRE
