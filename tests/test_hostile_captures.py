"""Hostile capture files: whatever a capture file holds (binary garbage, another encoding,
impossible shapes, numbers no float holds, nesting thousands deep, metadata of the wrong
types, a damaged safetensors header), reading it is one KitError naming the file, and
compare_outputs.py (with or without --full) prints one `error:` line and exits 2, never a
traceback. Each case writes a real file; no TensorFlow runs here (the captures are
hand-built), so the whole module takes seconds."""
import json
import math

import numpy as np
import pytest

from conftest import assert_one_line_error, run_script
from tfjs_parity import KitError
from tfjs_parity.capture import Capture, read_safetensors
from tfjs_parity.capture_json import encode_tensor

pytestmark = pytest.mark.slow  # the real steps, as subprocesses: see pytest.ini

WEIGHTS = [np.array([[0.5, -1.25], [2.0, 0.125]], np.float32), np.array([0.0, -0.0], np.float32)]
OUTPUT = np.array([[1.5, np.nan]], np.float32)


def capture(runtime="node", backend="cpu", **metadata):
    """A small well-formed capture with every metadata field a real one has (values as the
    Python and JS sides write them: renderer null off WebGL, say)."""
    return Capture({
        "schema": 1, "runtime": runtime, "backend": backend, "model_id": "0123abcd",
        "versions": {"tfjs-core": "4.22.0", "node": "v20"}, "flags": {}, "precision_flags": {"WEBGL_PACK": True},
        "evaluated_flags": {"IS_NODE": True, "CPU_HANDOFF_SIZE_THRESHOLD": 128},
        "environment": {"TF_ENABLE_ONEDNN_OPTS": "(unset: oneDNN on)"}, "platform": "Linux x64", "cpu": "some cpu",
        "renderer": None, "inputs": {"input": encode_tensor(np.ones((1, 2), np.float32))},
        "timing": {"warmup_ms": 3.0, "runs_ms": [1.0, 2.0], "median_ms": 1.5, "min_ms": 1.0, "max_ms": 2.0,
                   "repeat": 2, "budget_s": 10},
        "created": "2026-01-01T00:00:00Z", **metadata,
    }, {"dense_0_weights": list(WEIGHTS), "dense_0_output": [OUTPUT]})


def document():
    """The small capture as the JSON document a hostile edit starts from."""
    return json.loads(capture().to_json())


def nested(depth, leaf="1"):
    return "[" * depth + leaf + "]" * depth


# --- JSON captures: (case id, file content: bytes, str, or a change to document()) -------------

def meta(**fields):
    def change(doc):
        doc["metadata"].update(fields)
    return change


def tensor(**fields):
    def change(doc):
        doc["dense_0_output"][0].update(fields)
    return change


def entry(key, value):
    def change(doc):
        doc[key] = value
    return change


def drop_timing_field(name):
    def change(doc):
        del doc["metadata"]["timing"][name]
    return change


JSON_CASES = [
    # not UTF-8 JSON text at all
    ("binary garbage", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "neither a JSON nor a safetensors"),
    ("garbage that looks like a safetensors header", b"\x10\0\0\0\0\0\0\0{\xff\xfe garbage", "safetensors"),
    ("UTF-16 with a byte order mark", json.dumps(document()).encode("utf-16"), "UTF-16"),
    ("UTF-16 without one", json.dumps(document()).encode("utf-16-le"), "UTF-16"),
    ("empty", b"", "not valid JSON"),
    ("truncated", json.dumps(document())[:-40], "not valid JSON"),
    ("nested thousands deep", '{"metadata": {}, "dense_0_output": [' + nested(100_000) + "]}", "nested too deep"),
    ("a list, not an object", "[1, 2]", "not a capture"),
    # shapes
    ("negative shape", tensor(shape=[-1, -2]), "negative dimension"),
    ("one negative dimension", tensor(shape=[-2, -1], data=[1, 2]), "negative dimension"),
    ("float shape", tensor(shape=[1.0, 2.0]), "not a list of integers"),
    ("bool shape", tensor(shape=[True, 2]), "not a list of integers"),
    ("string shape", tensor(shape=["1", "2"]), "not a list of integers"),
    ("NaN in the shape", tensor(shape=[math.nan, 2]), "not a list of integers"),
    ("shape not a list", tensor(shape=2), "not a list of integers"),
    ("shape of null", tensor(shape=None), "not a list of integers"),
    ("too many dimensions", tensor(shape=[1] * 65 + [2]), "more than 64"),
    ("a zero-size shape too large for numpy", tensor(shape=[0, 10 ** 30], data=[]), "too large"),
    ("a shape whose product overflows", tensor(shape=[2 ** 40, 2 ** 40]), "too large"),
    # dtypes
    ("dtype not a string", tensor(dtype=["float32"]), "dtype"),
    ("dtype an object", tensor(dtype={"name": "float32"}), "dtype"),
    ("unknown dtype", tensor(dtype="float16"), "dtype 'float16'"),
    ("no dtype", entry("dense_0_output", [{"shape": [1], "data": [1]}]), "expected an object"),
    ("tensor not an object", entry("dense_0_output", [[1.5, 2.5]]), "expected an object"),
    # values
    ("an integer too large for a float", tensor(data=[10 ** 400, 1]), "too large for a float"),
    ("a value beyond float32", tensor(data=[1e39, 1]), "beyond float32"),
    ("a bool in the data", tensor(data=[True, 1]), "not a number"),
    ("null in the data", tensor(data=[None, 1]), "not a number"),
    ("a nested list in flat data", tensor(data=[[1], 1]), "not a number"),
    ("an object in the data", tensor(data=[{}, 1]), "not a number"),
    ("a string that is no number", tensor(data=["1.5", 1]), "not a number"),
    ("data not a list", tensor(data={"0": 1}), "data must be a list"),
    ("int32 data holding a float", tensor(dtype="int32", data=[1.5, 1]), "not a 32-bit integer"),
    ("int32 data beyond 32 bits", tensor(dtype="int32", data=[2 ** 31, 1]), "not a 32-bit integer"),
    ("int32 data holding a bool", tensor(dtype="int32", data=[True, 1]), "not a 32-bit integer"),
    # entries
    ("tensors not a list", entry("dense_0_output", {"0": 1}), "not a list of tensors"),
    ("an output with no tensors", entry("dense_0_output", []), "holds no tensors"),
    ("an unexpected entry", entry("something", []), "unexpected entry 'something'"),
    ("a key holding a newline", entry("evil\nkey_output", [encode_tensor(OUTPUT)]), "control"),
    # metadata: the type each reader assumes
    ("metadata not an object", entry("metadata", [1]), "metadata is not an object"),
    ("metadata null", entry("metadata", None), "metadata is not an object"),
    ("runtime a number", meta(runtime=5), "metadata.runtime"),
    ("backend a list", meta(backend=["cpu"]), "metadata.backend"),
    ("variant an object", meta(variant={"f16": True}), "metadata.variant"),
    ("runtime null", meta(runtime=None), "metadata.runtime"),
    ("runtime on two lines", meta(runtime="node\nerror: fake"), "metadata.runtime"),
    ("model_id a number", meta(model_id=12345), "metadata.model_id"),
    ("versions a string", meta(versions="4.22"), "metadata.versions"),
    ("flags a list", meta(flags=["WEBGL_PACK"]), "metadata.flags"),
    ("precision_flags a string", meta(precision_flags="f16"), "metadata.precision_flags"),
    ("evaluated_flags a number", meta(evaluated_flags=1), "metadata.evaluated_flags"),
    ("environment a list", meta(environment=[]), "metadata.environment"),
    ("model a string", meta(model="m.h5"), "metadata.model"),
    ("input_origin a list", meta(input_origin=[]), "metadata.input_origin"),
    ("renderer a number", meta(renderer=3), "metadata.renderer"),
    ("userAgent a list", meta(userAgent=["x"]), "metadata.userAgent"),
    ("platform an object", meta(platform={}), "metadata.platform"),
    ("cpu a number", meta(cpu=4), "metadata.cpu"),
    ("created a number", meta(created=1700000000), "metadata.created"),
    ("timing a list", meta(timing=[1.0]), "metadata.timing"),
    ("timing null", meta(timing=None), "metadata.timing"),
    ("timing without a median", drop_timing_field("median_ms"), "metadata.timing has no median_ms"),
    ("timing without runs", drop_timing_field("runs_ms"), "metadata.timing has no runs_ms"),
    ("median a string", meta(timing={"median_ms": "fast", "runs_ms": [1.0]}), "metadata.timing.median_ms"),
    ("median a bool", meta(timing={"median_ms": True, "runs_ms": [1.0]}), "metadata.timing.median_ms"),
    ("median too large for a float", meta(timing={"median_ms": 10 ** 400, "runs_ms": [1.0]}),
     "metadata.timing.median_ms"),
    ("runs not a list", meta(timing={"median_ms": 1.0, "runs_ms": 3}), "metadata.timing.runs_ms"),
    ("runs holding a string", meta(timing={"median_ms": 1.0, "runs_ms": ["1"]}), "metadata.timing.runs_ms"),
    ("cold a string", meta(timing={"median_ms": 1.0, "runs_ms": [1.0], "cold_ms": "slow"}), "metadata.timing.cold_ms"),
    ("memory a string", meta(memory={"numBytes": "lots"}), "metadata.memory.numBytes"),
    ("memory a list", meta(memory=[1]), "metadata.memory"),
    ("inputs a list", meta(inputs=[1]), "metadata.inputs"),
    ("an input not a tensor", meta(inputs={"input": 5}), "metadata.inputs['input']"),
    ("an input with a negative shape", meta(inputs={"input": {"dtype": "float32", "shape": [-1], "data": []}}),
     "metadata.inputs['input']"),
    ("an input with a huge integer", meta(inputs={"input": {"dtype": "float32", "shape": [1], "data": [10 ** 400]}}),
     "metadata.inputs['input']"),
    ("a v1 input that is no tensor", meta(input="ones"), "metadata.input"),
    ("metadata nested 40 deep", meta(extra=json.loads(nested(40, "0"))), "nested more than 32 deep"),
    ("metadata nested 500 deep", meta(extra=json.loads(nested(500, "0"))), "nested more than 32 deep"),
    ("a lone surrogate in the metadata", meta(renderer="\ud800"), "not valid Unicode"),
    ("a lone surrogate in a metadata key", meta(**{"\udc00": 1}), "not valid Unicode"),
    ("no outputs", lambda doc: doc.pop("dense_0_output"), "holds no layer outputs"),
]

# The original study's files: no metadata, nested lists.
STUDY_CASES = [
    ("study: an integer too large for a float", '{"dense_0_output": [[[1, ' + "1" * 400 + "]]]}",
     "too large for a float"),
    ("study: nested 100 deep", '{"dense_0_output": [' + nested(100) + "]}", "nested more than 64 deep"),
    ("study: nested 500 deep", '{"dense_0_output": [' + nested(500) + "]}", "nested more than 64 deep"),
    ("study: nested thousands deep", '{"dense_0_output": [' + nested(50_000) + "]}", "nested too deep"),
    ("study: ragged", '{"dense_0_output": [[[1.0], [1.0, 2.0]]]}', "not a regular array"),
    ("study: lists beside numbers", '{"dense_0_output": [[1.0, [2.0]]]}', "not a regular array"),
    ("study: null", '{"dense_0_output": [[null, 1.0]]}', "not a number"),
    ("study: a bool", '{"dense_0_output": [[true, 1.0]]}', "not a number"),
    ("study: a string", '{"dense_0_output": [["1.5"]]}', "not a number"),
    ("study: an object", '{"dense_0_output": [[{"a": 1}]]}', "not a number"),
    ("study: a value beyond float32", '{"dense_0_output": [[1e39]]}', "beyond float32"),
    ("study: an empty output", '{"dense_0_output": []}', "not a capture"),
    ("study: a key with a newline", '{"dense_0\\n_output": [[1.0]]}', "control"),
]


def write_json_case(path, content):
    if callable(content):
        doc = document()
        content(doc)
        content = json.dumps(doc)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return path


@pytest.mark.parametrize("content, fragment", [c[1:] for c in JSON_CASES + STUDY_CASES],
                         ids=[c[0] for c in JSON_CASES + STUDY_CASES])
def test_a_hostile_json_capture_is_one_kit_error_naming_the_file(tmp_path, content, fragment):
    path = write_json_case(tmp_path / "keras_model_tfjs_node_evil.json", content)
    with pytest.raises(KitError) as error:
        Capture.load(path)
    message = str(error.value)
    assert str(path) in message and fragment in message, message
    assert "\n" not in message


# --- safetensors captures -------------------------------------------------------------------

def write_safetensors_case(path, capture_change=None, header_change=None, damage=None):
    """Save the small capture as safetensors, then rewrite its header: `capture_change` edits
    the capture document in __metadata__ (or returns a string to put there instead),
    `header_change` the header itself, `damage` the final bytes."""
    capture().save(path)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header, body = json.loads(data[8:8 + size]), data[8 + size:]
    document_ = json.loads(header["__metadata__"]["capture"])
    if capture_change:
        replaced = capture_change(document_)
        header["__metadata__"]["capture"] = replaced if isinstance(replaced, str) else json.dumps(document_)
    if header_change:
        header_change(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    data = len(encoded).to_bytes(8, "little") + encoded + body
    path.write_bytes(damage(data) if damage else data)
    return path


def tensor_entry(**fields):
    def change(header):
        header["dense_0_output/0"].update(fields)
    return change


def capture_meta(**fields):
    def change(doc):
        doc["metadata"].update(fields)
    return change


def keys(value):
    def change(doc):
        doc["keys"] = value
    return change


SAFETENSORS_CASES = [
    # damaged bytes (the library's checks)
    ("truncated", dict(damage=lambda d: d[: len(d) // 2]), "truncated or corrupted"),
    ("a byte of the header changed", dict(damage=lambda d: d[:8] + b"#" + d[9:]), "truncated or corrupted"),
    ("header length beyond the file", dict(damage=lambda d: (10 ** 12).to_bytes(8, "little") + d[8:]),
     "truncated or corrupted"),
    ("header length of 2**64 - 1", dict(damage=lambda d: b"\xff" * 8 + d[8:]), "truncated or corrupted"),
    ("empty", dict(damage=lambda d: b""), "truncated or corrupted"),
    ("only the length", dict(damage=lambda d: d[:8]), "truncated or corrupted"),
    ("an unknown dtype", dict(header_change=tensor_entry(dtype="Q99")), "truncated or corrupted"),
    ("a negative dimension", dict(header_change=tensor_entry(shape=[-1, 2])), "truncated or corrupted"),
    ("a shape whose product overflows", dict(header_change=tensor_entry(shape=[2 ** 40, 2 ** 40, 2 ** 40])),
     "truncated or corrupted"),
    ("offsets beyond the data", dict(header_change=tensor_entry(data_offsets=[0, 10 ** 9])),
     "truncated or corrupted"),
    # what the library reads but the kit does not
    ("a dtype the kit does not use", dict(header_change=tensor_entry(dtype="U8", shape=[8])), "dtype 'U8'"),
    ("bfloat16", dict(header_change=tensor_entry(dtype="BF16", shape=[4])), "dtype 'BF16'"),
    ("too many dimensions", dict(header_change=tensor_entry(shape=[1] * 70 + [2])), "more than 64"),
    # the capture document in the header
    ("no capture in its metadata", dict(header_change=lambda h: h.update(__metadata__={"other": "x"})),
     "not a capture of this kit"),
    ("no metadata at all", dict(header_change=lambda h: h.pop("__metadata__")), "not a capture of this kit"),
    ("capture not JSON", dict(capture_change=lambda doc: "{not json"), "not valid JSON"),
    ("capture nested thousands deep", dict(capture_change=lambda doc: nested(50_000)), "nested too deep"),
    ("capture a list", dict(capture_change=lambda doc: "[1]"), "not a capture of this kit"),
    ("capture without keys", dict(capture_change=lambda doc: doc.pop("keys")), "not a capture of this kit"),
    ("keys not a list", dict(capture_change=keys({"dense_0_output": 1})), "key list"),
    ("keys not pairs", dict(capture_change=keys([["dense_0_weights", 2, 0], ["dense_0_output", 1]])), "key list"),
    ("a huge tensor count", dict(capture_change=keys([["dense_0_weights", 2], ["dense_0_output", 10 ** 12]])),
     "counts"),
    ("a count that is a string", dict(capture_change=keys([["dense_0_weights", "2"], ["dense_0_output", 1]])),
     "tensor count"),
    ("a count that is a bool", dict(capture_change=keys([["dense_0_weights", 2], ["dense_0_output", True]])),
     "tensor count"),
    ("a negative count", dict(capture_change=keys([["dense_0_weights", 3], ["dense_0_output", -1]])),
     "tensor count"),
    ("a key twice", dict(capture_change=keys([["dense_0_weights", 2], ["dense_0_output", 1],
                                              ["dense_0_output", 0]])), "twice"),
    ("a key that is not a capture key", dict(capture_change=keys([["dense_0_weights", 2], ["evil", 1]])),
     "unexpected key 'evil'"),
    ("a key that is a number", dict(capture_change=keys([["dense_0_weights", 2], [7, 1]])), "unexpected key 7"),
    ("a key with a newline", dict(capture_change=keys([["dense_0_weights", 2], ["a\nb_output", 1]])), "control"),
    ("keys that miss a tensor", dict(capture_change=keys([["dense_0_weights", 1], ["dense_1_output", 2]])),
     "do not match"),
    # the same metadata checks as JSON
    ("metadata not an object", dict(capture_change=lambda doc: doc.update(metadata=[])), "metadata is not an object"),
    ("runtime a number", dict(capture_change=capture_meta(runtime=7)), "metadata.runtime"),
    ("variant a list", dict(capture_change=capture_meta(variant=["f16"])), "metadata.variant"),
    ("timing a list", dict(capture_change=capture_meta(timing=[1])), "metadata.timing"),
    ("precision_flags a list", dict(capture_change=capture_meta(precision_flags=[False])), "metadata.precision_flags"),
    ("an input with a bad shape", dict(capture_change=capture_meta(inputs={"x": {"dtype": "float32", "shape": [1.5],
                                                                                 "data": [1]}})),
     "metadata.inputs['x']"),
    ("metadata nested 500 deep", dict(capture_change=capture_meta(x=json.loads(nested(500, "0")))),
     "nested more than 32 deep"),
]


@pytest.mark.parametrize("how, fragment", [c[1:] for c in SAFETENSORS_CASES], ids=[c[0] for c in SAFETENSORS_CASES])
def test_a_hostile_safetensors_capture_is_one_kit_error_naming_the_file(tmp_path, how, fragment):
    path = write_safetensors_case(tmp_path / "keras_model_tfjs_node_evil.safetensors", **how)
    for read in (Capture.load, read_safetensors):  # read_safetensors: what run_node/run_browser call
        with pytest.raises(KitError) as error:
            capture_ = read(path)
            for key in capture_.tensors:  # tensors are read at first use
                capture_.tensors[key]
        message = str(error.value)
        assert str(path) in message and fragment in message, message
        assert "\n" not in message


def test_a_safetensors_file_under_a_json_name_is_read_as_one(tmp_path):
    path = tmp_path / "x.json"
    write_safetensors_case(tmp_path / "x.safetensors", capture_change=capture_meta(runtime=["node"])).rename(path)
    with pytest.raises(KitError, match="metadata.runtime") as error:
        Capture.load(path)
    assert str(path) in str(error.value)


def test_python_capture_that_says_another_runtime_is_refused(tmp_path):
    """--full looks Python's capture up by its runtime: one that says otherwise is named."""
    capture("node", "tensorflow").save(tmp_path / "keras_model_python.json")
    with pytest.raises(KitError, match="keras_model_python.json: Python's capture says runtime 'node'"):
        Capture.load(tmp_path / "keras_model_python.json")


def test_a_folder_and_an_unreadable_file_are_one_line(tmp_path):
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(KitError, match="folder.json: not a file"):
        Capture.load(tmp_path / "folder.json")
    path = tmp_path / "locked.json"
    capture().save(path)
    path.chmod(0)
    try:
        try:
            path.read_bytes()
            return  # root reads anything: nothing more to test
        except PermissionError:
            pass
        with pytest.raises(KitError, match="locked.json: cannot read"):
            Capture.load(path)
    finally:
        path.chmod(0o644)


def test_a_point_missing_from_a_capture_is_a_kit_error_naming_the_file(tmp_path):
    capture().save(tmp_path / "c.json")
    capture().save(tmp_path / "c2.safetensors")
    for path in (tmp_path / "c.json", tmp_path / "c2.safetensors"):
        with pytest.raises(KitError, match=f"{path}: holds no dense_9_output"):
            Capture.load(path).outputs("dense_9")


# --- valid captures still load, bit for bit -------------------------------------------------

SPECIAL = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, np.finfo(np.float32).max, -np.finfo(np.float32).max,
                    np.finfo(np.float32).tiny, np.finfo(np.float32).smallest_subnormal, 1 / 3], np.float32)


def bits(array):
    return np.asarray(array, np.float32).view(np.uint32)


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_a_capture_with_every_metadata_field_and_special_values_loads_bit_for_bit(tmp_path, suffix):
    original = capture(variant="f16", userAgent="Mozilla/5.0", cpu_cores=2, input_origin={"study": "ones"},
                       model={"file": None, "format": "tf_keras", "points": 1}, note="ünïcode ✓")
    original.tensors["dense_0_output"] = [SPECIAL.reshape(2, 5)]
    original.tensors["dense_1_output"] = [np.zeros((0, 3), np.float32), np.float32(2.5).reshape(())]
    original.save(tmp_path / f"c{suffix}")
    loaded = Capture.load(tmp_path / f"c{suffix}")
    assert loaded.metadata == original.metadata and loaded.label == "node/cpu/f16"
    for key, arrays in original.tensors.items():
        for ours, theirs in zip(arrays, loaded.tensors[key]):
            assert theirs.shape == np.shape(ours)
            np.testing.assert_array_equal(bits(theirs), bits(ours))


def test_the_study_own_files_still_load_bit_for_bit(tmp_path):
    """Nested lists as the study's json.dump wrote them (NaN and Infinity as bare literals),
    integers, a scalar, an empty tensor, 60 dimensions: as numpy read them before."""
    values = SPECIAL.reshape(2, 5)
    study = {"dense_0_weights": [values.tolist(), [1, 2], 0.5, []], "dense_0_output": [[[[-0.0]]], nested(60)]}
    text = json.dumps(study).replace(f'"{nested(60)}"', nested(60))
    path = tmp_path / "keras_model_tfjs_browser.json"
    path.write_text(text)
    loaded = Capture.load(path)
    assert loaded.label == "browser/study file"
    expected = [values, np.array([1, 2]), np.array(0.5), np.zeros(0)]
    for ours, theirs in zip(expected, loaded.tensors["dense_0_weights"]):
        assert theirs.dtype == np.float32 and theirs.shape == ours.shape
        np.testing.assert_array_equal(bits(theirs), bits(ours))
    assert bits(loaded.tensors["dense_0_output"][0]).tolist() == [[[0x80000000]]]
    assert loaded.tensors["dense_0_output"][1].shape == (1,) * 60


def test_a_v1_capture_with_one_unnamed_input_and_a_byte_order_mark_loads(tmp_path):
    doc = {"metadata": {"schema": 1, "runtime": "node", "backend": "tensorflow", "timing": {},
                        "input": encode_tensor(np.ones((1, 3), np.float32))},
           "dense_0_output": [{"dtype": "float32", "shape": [3], "data": ["NaN", "-0", 1e-45]}]}
    path = tmp_path / "keras_model_tfjs_node.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    loaded = Capture.load(path)
    np.testing.assert_array_equal(loaded.inputs[None], np.ones((1, 3), np.float32))
    assert bits(loaded.tensors["dense_0_output"][0]).tolist() == [0x7FC00000, 0x80000000, 1]


# --- the real script, on a folder of good captures and one bad one -----------------------------

@pytest.fixture
def results(tmp_path):
    """A results folder of small hand-built captures: Python's, Node's, the browser's and the
    float64 reference (enough for the study's blocks; --full fails on the bad file before it
    needs a converted model)."""
    folder = tmp_path / "results"
    folder.mkdir()
    capture("python", "tensorflow").save(folder / "keras_model_python.json")
    capture("reference", "float64").save(folder / "keras_model_float64.json")
    capture("node", "tensorflow").save(folder / "keras_model_tfjs_node.json")
    capture("browser", "webgl").save(folder / "keras_model_tfjs_browser.json")
    assert run_script("compare_outputs.py", "--out-dir", folder).returncode == 0
    return folder


SCRIPT_CASES = [  # (file written into the folder, case from the tables above)
    ("keras_model_tfjs_node_evil.json", "binary garbage"),
    ("keras_model_tfjs_node_evil.json", "UTF-16 with a byte order mark"),
    ("keras_model_tfjs_node_evil.json", "negative shape"),
    ("keras_model_tfjs_node_evil.json", "runtime a number"),
    ("keras_model_tfjs_node_evil.json", "an integer too large for a float"),
    ("keras_model_tfjs_node_evil.json", "nested thousands deep"),
    ("keras_model_tfjs_node_evil.json", "timing a list"),
    ("keras_model_tfjs_node.json", "study: nested 500 deep"),
    ("keras_model_tfjs_browser.json", "study: an integer too large for a float"),
    ("keras_model_python.json", "precision_flags a string"),
    ("keras_model_tfjs_node_evil.safetensors", "truncated"),
    ("keras_model_tfjs_node_evil.safetensors", "a huge tensor count"),
    ("keras_model_tfjs_node_evil.safetensors", "capture nested thousands deep"),
    ("keras_model_tfjs_node_evil.safetensors", "variant a list"),
]
ALL_CASES = {c[0]: c[1:] for c in JSON_CASES + STUDY_CASES}
ALL_SAFETENSORS = {c[0]: c[1:] for c in SAFETENSORS_CASES}


def write_case(path, case):
    if path.suffix == ".safetensors":
        how, fragment = ALL_SAFETENSORS[case]
        return write_safetensors_case(path, **how), fragment
    content, fragment = ALL_CASES[case]
    return write_json_case(path, content), fragment


@pytest.mark.parametrize("name, case", SCRIPT_CASES, ids=[f"{n}: {c}" for n, c in SCRIPT_CASES])
def test_compare_outputs_prints_one_error_line_for_a_hostile_capture(results, name, case):
    path, fragment = write_case(results / name, case)
    assert_one_line_error(run_script("compare_outputs.py", "--out-dir", results), str(path), fragment)


@pytest.mark.parametrize("case", ["timing without runs", "model_id a number", "metadata nested 500 deep",
                                  "an input not a tensor"])
def test_full_prints_one_error_line_for_a_hostile_reference_or_capture(results, case):
    """With --full (and --json/--html, which read the most metadata): the float64 reference and
    any capture are checked before TensorFlow is imported."""
    path, fragment = write_case(results / "keras_model_float64.json", case)
    args = ["--out-dir", results, "--full", "--json", results / "r.json", "--html", results / "r.html"]
    assert_one_line_error(run_script("compare_outputs.py", *args), str(path), fragment)
    path.unlink()
    capture("reference", "float64").save(path)
    bad, fragment = write_case(results / "keras_model_tfjs_node_evil.json", case)
    assert_one_line_error(run_script("compare_outputs.py", *args), str(bad), fragment)


def test_a_hostile_capture_named_on_the_command_line_is_one_line(results):
    path, fragment = write_case(results / "elsewhere.safetensors", "a key with a newline")
    assert_one_line_error(run_script("compare_outputs.py", path, "--out-dir", results), str(path), fragment)


def test_a_file_name_holding_a_newline_is_still_one_line(results):
    path, _ = write_case(results / "keras_model_tfjs_node_a\nb.json", "binary garbage")
    assert_one_line_error(run_script("compare_outputs.py", "--out-dir", results), "keras_model_tfjs_node_a\\nb.json",
                          "neither a JSON nor a safetensors")
