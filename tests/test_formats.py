"""The binary capture format (safetensors) beside JSON: bit-exact round trips on both sides,
old and study files still read, corrupted files refused, the size rule, and the page's
upload path refusing what is not this run's."""
import http.client
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, check, leftovers, run_script
from tfjs_parity import KitError
from tfjs_parity.capture import JSON_LIMIT, Capture, read_safetensors
from tfjs_parity.server import PageServer
from tfjs_parity.uploads import Uploads

SPECIAL = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, np.finfo(np.float32).max,
                    np.finfo(np.float32).tiny, np.finfo(np.float32).smallest_subnormal, 3.4e-39, 1 / 3],
                   dtype=np.float32)


def bits(array):
    array = np.asarray(array)
    return array.view({4: np.uint32, 8: np.uint64}[array.dtype.itemsize])


def sample_capture():
    rng = np.random.default_rng(1)
    return Capture({"runtime": "test", "backend": "x", "note": "ünïcode"}, {
        "a_weights": [SPECIAL, SPECIAL.astype(np.float64), np.array([[-2**31, 0, 2**31 - 1]], np.int32)],
        "a_output": [(rng.standard_normal((3, 4)) * 1e-39).astype(np.float32)],
        "b_call1_output": [np.zeros((0, 5), np.float32), np.float32(7.5).reshape(())],
    })


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_both_formats_round_trip_every_dtype_bit_for_bit(tmp_path, suffix):
    original = sample_capture()
    original.save(tmp_path / f"c{suffix}")
    loaded = Capture.load(tmp_path / f"c{suffix}")
    assert loaded.metadata == original.metadata
    assert list(loaded.tensors) == list(original.tensors)  # the study's order survives
    for key in original.tensors:
        for ours, theirs in zip(original.tensors[key], loaded.tensors[key]):
            assert theirs.dtype == ours.dtype and theirs.shape == ours.shape, key
            np.testing.assert_array_equal(bits(theirs), bits(ours))
    assert leftovers(tmp_path) == []


def test_saving_in_one_format_removes_the_other(tmp_path):
    sample_capture().save(tmp_path / "c.json")
    sample_capture().save(tmp_path / "c.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]


def test_the_safetensors_library_reads_what_the_kit_writes(tmp_path):
    from safetensors.numpy import load_file
    sample_capture().save(tmp_path / "c.safetensors")
    tensors = load_file(str(tmp_path / "c.safetensors"))
    np.testing.assert_array_equal(bits(tensors["a_weights/0"]), bits(SPECIAL))


@pytest.mark.slow  # runs the real steps
def test_javascript_writes_safetensors_python_reads_bit_for_bit(tmp_path):
    """inference_common.js's header and bytes (what Node writes and the page uploads), read
    by the safetensors library through capture.py."""
    script = """
      const fs = require('fs');
      const tf = require('@tensorflow/tfjs');
      const common = require('./inference_common.js');
      const values = JSON.parse(process.argv[1]).map(v => ({'NaN': NaN, 'Infinity': Infinity, '-Infinity': -Infinity, '-0': -0})[v] ?? v);
      const entries = [{key: 'a_weights', tensors: [tf.tensor(values, [values.length], 'float32'),
                                                   tf.tensor([[1, -7, 2147483647]], [1, 3], 'int32')]},
                       {key: 'a_output', tensors: [tf.tensor(values.slice(0, 4), [2, 2], 'float32')]}];
      (async () => {
        const chunks = [common.safetensorsHeader({runtime: 'node', backend: 'cpu'}, entries).bytes];
        await common.eachTensorBytes(entries, async (bytes) => { chunks.push(Buffer.from(bytes)); }, () => {});
        fs.writeFileSync(process.argv[2], Buffer.concat(chunks));
      })();
    """
    from tfjs_parity.capture_json import encode_tensor
    out = tmp_path / "js.safetensors"
    subprocess.run(["node", "-e", script, json.dumps(encode_tensor(SPECIAL)["data"]), str(out)], cwd=ROOT,
                   check=True, capture_output=True)
    capture = read_safetensors(out)
    assert capture.metadata == {"runtime": "node", "backend": "cpu"}
    np.testing.assert_array_equal(bits(capture.tensors["a_weights"][0]), bits(SPECIAL))
    np.testing.assert_array_equal(capture.tensors["a_weights"][1], [[1, -7, 2147483647]])
    assert capture.tensors["a_output"][0].shape == (2, 2)


@pytest.mark.parametrize("damage, fragment", [
    (lambda data: data[: len(data) // 2], "truncated or corrupted"),
    (lambda data: data[:8] + b"#" + data[9:], "truncated or corrupted"),
    (lambda data: struct.pack("<Q", 10 ** 12) + data[8:], "truncated or corrupted"),
    (lambda data: b"", "neither a JSON nor a safetensors capture"),
])
@pytest.mark.slow  # runs the real steps
def test_a_damaged_binary_capture_is_one_line_naming_the_file(small_study, tmp_path, damage, fragment):
    shutil.copytree(small_study / "keras_converted", tmp_path / "keras_converted")
    for name in ("keras_model_python.json", "keras_model_float64.json", "keras_model_tfjs_browser.json"):
        shutil.copy(small_study / name, tmp_path / name)
    capture = Capture.load(small_study / "keras_model_tfjs_node.json")
    capture.save(tmp_path / "keras_model_tfjs_node.safetensors")
    path = tmp_path / "keras_model_tfjs_node.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    done = run_script("compare_outputs.py", "--out-dir", tmp_path)
    if fragment.startswith("neither"):
        assert_one_line_error(done, str(path))
    else:
        assert_one_line_error(done, str(path), fragment)


@pytest.mark.slow  # runs the real steps
def test_a_binary_capture_reads_only_what_is_asked_for_and_names_a_file_cut_short_since(small_study, tmp_path):
    """Asking whether a key is there reads nothing; a tensor is read at its own offset, bit
    for bit and writable; a file cut short after it was opened is one line naming it."""
    source = Capture.load(small_study / "keras_model_tfjs_node.json")
    path = tmp_path / "capture.safetensors"
    source.save(path)
    capture = read_safetensors(path)
    key = next(iter(source.tensors))
    for name in source.tensors:
        for ours, theirs in zip(capture.tensors[name], source.tensors[name]):
            np.testing.assert_array_equal(bits(ours), bits(theirs))
            assert ours.flags.writeable
    path.write_bytes(path.read_bytes()[:-4])  # the last tensor loses its last value
    assert key in capture.tensors and "no_such_output" not in capture.tensors  # nothing read
    last = list(source.tensors)[-1]
    with pytest.raises(KitError, match=rf"{path}: cannot read {last} \(the file ends 4 bytes early"):
        capture.tensors[last]


@pytest.mark.slow  # runs the real steps
def test_json_v1_binary_and_the_study_own_files_compare_in_any_mix(small_study, tmp_path):
    """The study wrote nested lists with no metadata; v1 JSON captures have metadata and flat
    data; safetensors captures are binary. One folder may hold all three."""
    for name in ("keras_model_python.json", "keras_model_float64.json"):
        shutil.copy(small_study / name, tmp_path / name)
    shutil.copytree(small_study / "keras_converted", tmp_path / "keras_converted")
    node = Capture.load(small_study / "keras_model_tfjs_node.json")
    node.save(tmp_path / "keras_model_tfjs_node.safetensors")
    browser = Capture.load(small_study / "keras_model_tfjs_browser.json")
    study_file = {key: [a.tolist() for a in arrays] for key, arrays in browser.tensors.items()}
    (tmp_path / "keras_model_tfjs_browser.json").write_text(json.dumps(study_file))
    done = check(run_script("compare_outputs.py", "--out-dir", tmp_path))
    expected = check(run_script("compare_outputs.py", "--out-dir", small_study))
    assert done.stdout == expected.stdout  # the same report, whatever the files' formats


@pytest.mark.slow  # runs the real steps
@pytest.mark.slow
def test_a_big_capture_is_written_binary_and_says_so(tmp_path):
    """7 x Dense(1000): 7M weights, above JSON_LIMIT, and 7 weight shards of 4 MB, more than a
    browser's 6 connections to one host (tfjs's loader then hung: the page reads each shard
    whole as it arrives)."""
    done = check(run_script("create_keras_model.py", "--depth", "7", "--units", "1000", "--out-dir", tmp_path,
                            "--repeat", "1"))
    assert f"safetensors: 7,014,000 values > {JSON_LIMIT:,}" in done.stdout
    done = check(run_script("run_node.py", "--out-dir", tmp_path, "--repeat", "1"))
    assert "keras_model_tfjs_node.safetensors" in done.stdout and "safetensors: 7,014,000 values" in done.stdout
    done = check(run_script("run_node.py", "--out-dir", tmp_path, "--repeat", "1", "--format", "json"))
    assert "keras_model_tfjs_node.json" in done.stdout and "values >" not in done.stdout
    assert not (tmp_path / "keras_model_tfjs_node.safetensors").exists()
    check(run_script("run_browser.py", "--out-dir", tmp_path, "--repeat", "1"))
    assert (tmp_path / "keras_model_tfjs_browser.safetensors").is_file()
    done = check(run_script("compare_outputs.py", "--out-dir", tmp_path, "--full"))
    matrix = done.stdout.split("Verdicts (against float64")[1].split("\n\n")[0]
    rows = [line.split()[1:] for line in matrix.splitlines() if line.startswith("dense_")]
    assert rows and all(cell in ("rounding", "same", "bits") for row in rows for cell in row), rows
    assert leftovers(tmp_path) == []


# --- the upload path ------------------------------------------------------------------------

def post(server, path, body, host=None):
    host_, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host_, int(port), timeout=10)
    headers = {"Host": host} if host else {}
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read().decode()


def header_bytes(total):
    header = json.dumps({"a_output/0": {"dtype": "F32", "shape": [total // 4], "data_offsets": [0, total]},
                         "__metadata__": {"capture": json.dumps({"metadata": {"backend": "webgl"},
                                                                 "keys": [["a_output", 1]]})}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header


@pytest.fixture
def uploads(tmp_path):
    uploads = Uploads(tmp_path, ["webgl"], limit=10_000)
    with PageServer({}, uploads) as server:
        yield server, uploads


def test_an_upload_arrives_whole_and_only_once(uploads, tmp_path):
    server, up = uploads
    path = up.path("webgl")
    assert post(server, f"{path}/begin", header_bytes(8))[0] == 204
    assert post(server, f"{path}/data", np.array([1.5, -0.0], np.float32).tobytes())[0] == 204
    assert post(server, f"{path}/end", b"")[0] == 204
    capture = read_safetensors(up.take("webgl"))
    np.testing.assert_array_equal(bits(capture.tensors["a_output"][0]), bits(np.array([1.5, -0.0], np.float32)))
    status, message = post(server, f"{path}/begin", header_bytes(8))
    assert status == 409 and "already uploaded" in message


@pytest.mark.parametrize("path, status", [("/upload/wrong-token/webgl/begin", 404), ("/upload//webgl/begin", 404),
                                          ("TOKEN/wasm/begin", 404), ("TOKEN/webgl/../webgl/begin", 404)])
def test_an_upload_to_another_path_is_refused(uploads, tmp_path, path, status):
    server, up = uploads
    path = path.replace("TOKEN", f"/upload/{up.token}")
    assert post(server, path, header_bytes(8))[0] == status
    assert up.completed("webgl") is None


def test_an_oversize_upload_is_refused_and_nothing_is_left(uploads, tmp_path):
    server, up = uploads
    status, message = post(server, f"{up.path('webgl')}/begin", header_bytes(40_000))
    assert status == 413 and "more than the 10000 allowed" in message
    assert post(server, f"{up.path('webgl')}/begin", header_bytes(8))[0] == 204
    status, message = post(server, f"{up.path('webgl')}/data", b"\0" * 12)  # the header said 8 bytes
    assert status == 413 and "more data than its header announced" in message
    assert post(server, f"{up.path('webgl')}/end", b"")[0] == 400  # incomplete: never becomes a capture
    assert up.completed("webgl") is None


def test_a_foreign_host_header_is_refused(uploads):
    server, up = uploads
    assert post(server, f"{up.path('webgl')}/begin", header_bytes(8), host="evil.example:80")[0] == 421


@pytest.mark.parametrize("body, message", [
    (b"\1\0", "starts with its 8-byte length"),
    (struct.pack("<Q", 40) + b"{}", "the header length does not match the header sent"),
    (struct.pack("<Q", 1) + b"{}", "the header length does not match the header sent"),
    (struct.pack("<Q", 2) + b"{]", "not a safetensors header"),
])
def test_a_header_that_lies_about_its_length_is_told_so(uploads, body, message):
    server, up = uploads
    status, text = post(server, f"{up.path('webgl')}/begin", body)
    assert status == 400 and message in text, text


def test_a_capture_too_damaged_to_read_names_its_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b'{"a": 1}        ')
    with pytest.raises(KitError, match="x.safetensors: not a readable safetensors capture"):
        Capture.load(tmp_path / "x.safetensors")


@pytest.mark.parametrize("path, body, status", [
    ("/upload/%C3%A9/webgl/begin", None, 404),                               # a token that is not ASCII
    ("TOKEN/webgl/begin", struct.pack("<Q", 2) + b"[]", 400),                 # a header that is not an object
    ("TOKEN/webgl/data", b"\0" * 8, 409),                                    # data before any header
])
def test_odd_uploads_get_an_answer_not_a_dead_handler(uploads, path, body, status):
    server, up = uploads
    assert post(server, path.replace("TOKEN", f"/upload/{up.token}"), body or header_bytes(8))[0] == status
    assert up.completed("webgl") is None
