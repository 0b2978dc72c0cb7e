import json
import subprocess

import numpy as np
import pytest

from conftest import ROOT, leftovers
from tfjs_parity import KitError
from tfjs_parity.capture import Capture
from tfjs_parity.capture_json import decode_tensor, encode_tensor

SPECIAL_VALUES = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0,
                           np.finfo(np.float32).max, np.finfo(np.float32).tiny,
                           np.finfo(np.float32).smallest_subnormal, 0.1, 1 / 3, 3.4e-39], dtype=np.float32)


def bits(array):
    return np.asarray(array, dtype=np.float32).view(np.uint32)


def test_float32_round_trips_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    random = (rng.standard_normal((7, 5)) * 10.0 ** rng.integers(-30, 30, (7, 5))).astype(np.float32)
    capture = Capture({"runtime": "test"}, {"dense_0_weights": [random, SPECIAL_VALUES],
                                            "dense_0_output": [random[:1]]})
    capture.save(tmp_path / "c.json")
    loaded = Capture.load(tmp_path / "c.json")
    assert loaded.metadata == {"runtime": "test"}
    assert list(loaded.tensors) == ["dense_0_weights", "dense_0_output"]
    for original, back in zip(capture.tensors["dense_0_weights"], loaded.tensors["dense_0_weights"]):
        assert back.dtype == np.float32 and back.shape == original.shape
        np.testing.assert_array_equal(bits(back), bits(original))
    assert loaded.layer_names == ["dense_0"]


def test_special_values_are_strings_json_can_hold():
    encoded = encode_tensor(np.array([np.nan, np.inf, -np.inf, -0.0, 0.0], dtype=np.float32))
    assert encoded["data"] == ["NaN", "Infinity", "-Infinity", "-0", 0.0]
    json.dumps(encoded, allow_nan=False)  # strict JSON, readable by JS's JSON.parse


@pytest.mark.slow  # needs Node: the one test here that leaves Python
def test_javascript_side_encodes_the_same_way():
    """inference_common.js (run by real Node on tfjs) must write what capture.py reads."""
    script = """
      const tf = require('@tensorflow/tfjs');
      const common = require('./inference_common.js');
      const values = JSON.parse(process.argv[1]).map(v => ({'NaN': NaN, 'Infinity': Infinity, '-Infinity': -Infinity, '-0': -0})[v] ?? v);
      common.encodeTensor(tf.tensor(values, [values.length], 'float32')).then((e) => console.log(JSON.stringify(e)));
    """
    values = encode_tensor(SPECIAL_VALUES)["data"]
    done = subprocess.run(["node", "-e", script, json.dumps(values)], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    from_js = decode_tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_array_equal(bits(from_js), bits(SPECIAL_VALUES))


def test_missing_file_names_the_script_that_makes_it(tmp_path):
    with pytest.raises(KitError, match=r"keras_model_tfjs_node\.json not found; run `python run_node\.py`"):
        Capture.load(tmp_path / "keras_model_tfjs_node.json", made_by="run_node.py")


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"dense_0_output": []}', "no metadata"),
    ('{"metadata": {}, "dense_0_output": [{"dtype": "float32", "shape": [2], "data": [1]}]}',
     r"dense_0_output\[0\]: shape \[2\] needs 2 values, data has 1"),
    ('{"metadata": {}, "dense_0_output": [{"dtype": "int8", "shape": [1], "data": [1]}]}', "dtype 'int8'"),
    ('{"metadata": {}, "dense_0_output": [{"dtype": "float32", "shape": [1], "data": ["x"]}]}', "not a number"),
    ('{"metadata": {}, "something": []}', "unexpected entry 'something'"),
    ('{"metadata": {}}', "holds no layer outputs"),
])
def test_malformed_capture_is_one_clear_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(KitError, match=message) as error:
        Capture.load(path)
    assert str(path) in str(error.value)


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    old = Capture({"runtime": "old"}, {"a_output": [np.zeros(2, np.float32)]})
    old.save(path)
    before = path.read_text()

    def broken_replace(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("tfjs_parity.files.os.replace", broken_replace)
    with pytest.raises(KitError, match="disk is full"):
        Capture({"runtime": "new"}, {"a_output": [np.ones(2, np.float32)]}).save(path)
    assert path.read_text() == before
    assert leftovers(tmp_path) == []
