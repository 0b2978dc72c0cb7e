"""What a model controls, handled as data (issue 33): messages escaped and bounded, trees
walked and removed without recursion, a model.json's signature type-checked field by field."""
import json
import os

import pytest

from tfjs_parity import KitError
from tfjs_parity.cli import error_lines, safe_text
from tfjs_parity.files import remove_tree, walk_bounded
from tfjs_parity.model_json import check_signature, read_model_json
from tfjs_parity.steps import BackendsFailed


def test_control_characters_are_escaped_and_a_message_is_bounded():
    assert safe_text("Relu\x1b[31m\x07\x9b") == "Relu\\x1b[31m\\x07\\x9b"
    assert safe_text("a\tb\nc") == "a\tb\nc"
    long = safe_text("x" * 10_000, 100)
    assert long.startswith("x" * 100) and long.endswith("(9,900 more characters)")


def test_an_error_line_cannot_start_a_line_of_its_own():
    shown = error_lines(KitError("node 'y' is op Relu\nerror: all good\x1b[0m"))
    assert shown.count("\n") == 0 and shown.startswith("error: node 'y'") and "\\x1b[0m" in shown
    failed = BackendsFailed(["node/cpu: failed", "node/wasm: failed\nerror: spoof"], saved=1)
    assert error_lines(failed).splitlines() == ["error: node/cpu: failed", "error: node/wasm: failed\\nerror: spoof"]
    assert failed.status == 3 and BackendsFailed(["x"], saved=0).status == 2


def deep_tree(root, levels, name="a"):
    os.mkdir(root)
    descriptor = os.open(root, os.O_RDONLY)
    try:
        for _ in range(levels):  # relative to the last folder: no path is ever long
            os.mkdir(name, dir_fd=descriptor)
            inner = os.open(name, os.O_RDONLY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
        os.close(os.open("MARK", os.O_CREAT | os.O_WRONLY, dir_fd=descriptor))
    finally:
        os.close(descriptor)


def test_a_tree_deeper_than_any_path_is_walked_to_its_last_file_and_removed(tmp_path):
    deep_tree(tmp_path / "deep", 500, "f" * 20)  # 10,500 characters of path: beyond PATH_MAX
    try:
        entries = list(walk_bounded(tmp_path / "deep", 100_000, max_depth=1000))
        assert entries[-1][0].endswith("/MARK") and len(entries[-1][0]) > 10_000 and not entries[-1][1]
        assert list(walk_bounded(tmp_path / "deep", 10))[-1] == (None, "entries", None)
        assert list(walk_bounded(tmp_path / "deep", 100_000))[-1] == (None, "depth", None)  # 256 deep at most
    finally:
        assert remove_tree(tmp_path / "deep") and os.listdir(tmp_path) == []


def test_remove_tree_of_a_tree_thousands_deep(tmp_path):
    deep_tree(tmp_path / "deep", 3000)  # (pytest's own clean-up of it would meet RecursionError)
    assert remove_tree(tmp_path / "deep") and os.listdir(tmp_path) == []


def test_remove_tree_removes_a_link_and_never_what_it_points_to(tmp_path):
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "file").write_text("mine")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "link").symlink_to(tmp_path / "kept")
    assert remove_tree(tmp_path / "tree")
    assert (tmp_path / "kept" / "file").read_text() == "mine"


@pytest.mark.parametrize("signature, field", [
    ([], "signature"),
    ({"inputs": []}, "inputs"),
    ({"inputs": {"x": {"name": 3}}}, "inputs.x.name"),
    ({"inputs": {"x": {"name": "x:0", "dtype": ["DT_FLOAT"]}}}, "inputs.x.dtype"),
    ({"inputs": {"x": {"name": "x:0", "tensorShape": {"dim": {"size": 1}}}}}, "inputs.x.tensorShape.dim"),
    ({"inputs": {"x": {"name": "x:0", "tensorShape": {"dim": [{"size": [1]}]}}}}, "inputs.x.tensorShape.dim[0].size"),
    ({"inputs": {"x": {"name": "x:0", "tensorShape": {"dim": [{"size": "one"}]}}}}, "inputs.x.tensorShape.dim[0].size is 'one'"),
    ({"outputs": {"y": {"name": "y:0", "tensorShape": {"unknownRank": "yes"}}}}, "outputs.y.tensorShape.unknownRank"),
])
def test_every_field_of_a_signature_is_type_checked_by_name(signature, field):
    with pytest.raises(KitError, match=r"model.json: its signature's " + field.replace("[", r"\[").replace("]", r"\]")):
        check_signature(signature, "model.json")


def test_a_good_signature_passes():
    check_signature({"inputs": {"x": {"name": "x:0", "dtype": "DT_UINT8", "tensorShape": {"dim": [{"size": "-1"},
                                                                                                 {"size": 3}]}}},
                     "outputs": {"y": {"name": "y:0", "tensorShape": {"unknownRank": True}}}}, "model.json")


@pytest.mark.parametrize("content, said", [
    (b"\xef\xbb\xbf{}", "not UTF-8 JSON"),
    ('{"modelTopology": {}}'.encode("utf-16"), "not UTF-8 JSON"),
    (b"[" + b"{}," * 2_000_001 + b"{}]", "JSON objects and arrays, more than the 2,000,000"),
])
def test_a_model_json_is_refused_before_it_is_parsed(tmp_path, content, said):
    (tmp_path / "model.json").write_bytes(content)
    with pytest.raises(KitError, match=said):
        read_model_json(tmp_path / "model.json")


def test_a_weight_file_name_too_long_for_a_file_is_one_line(tmp_path):
    document = {"format": "graph-model", "modelTopology": {"node": []},
                "weightsManifest": [{"paths": ["w" * 5000], "weights": []}]}
    (tmp_path / "model.json").write_text(json.dumps(document))
    with pytest.raises(KitError, match="is not a file name in its folder"):
        read_model_json(tmp_path / "model.json")


@pytest.mark.parametrize("metadata, said", [
    ({"flags": {"WEBGL_PACK": {"nested": 1}}}, "flags are not a map"),
    ({"flags": ["WEBGL_PACK"]}, "flags are not a map"),
    ({"variant": "v" * 400}, "variant is not a short plain name"),
    ({"variant": "a/b"}, "variant is not a short plain name"),
    ({"variant": "../../etc"}, "variant is not a short plain name"),
])
def test_a_tampered_capture_is_refused_before_explain_runs_anything(metadata, said):
    from types import SimpleNamespace
    from tfjs_parity.explain import check_explainable
    capture = SimpleNamespace(metadata=metadata, source="out/keras_model_tfjs_node_wasm.json", label="node/wasm")
    with pytest.raises(KitError, match=f"out/keras_model_tfjs_node_wasm.json: its metadata's {said}"):
        check_explainable(capture)
    for variant in ("webgl_pack-false", "keep_intermediate_tensors-true_wasm_has_multithread_support-false_wasm_has_"
                    "simd_support-false", "android-samsung-sm-s918b-samsung-140-0123abcd_f16_webgl_pack-false",
                    "cpu_handoff_size_threshold-1e+20"):  # what the runners write: three flags, a device, a number
        check_explainable(SimpleNamespace(metadata={"flags": {"WEBGL_PACK": False, "X": 1.5}, "variant": variant},
                                          source="s", label="l"))


def test_a_summary_keeps_only_the_kits_own_lines():
    from tfjs_parity.cli import safe_summary
    text = "wrote out/ (attr zz\nerror: spoofed\x1b[31m)\nforeseen: tfjs's wasm backend will fail at node 'x'"
    assert safe_summary(text).splitlines() == ["wrote out/ (attr zz\\nerror: spoofed\\x1b[31m)",
                                               "foreseen: tfjs's wasm backend will fail at node 'x'"]


def test_a_string_weight_decodes_as_tfjs_writes_it(tmp_path):
    """tfjs's string weights: a uint32 (little-endian) byte length before each value's bytes."""
    from tfjs_parity.quantization import decoded_weights
    values = [b"", "é".encode(), b"boxes"]
    data = b"".join(len(v).to_bytes(4, "little") + v for v in values)
    (tmp_path / "w").write_bytes(data + bytes(4) + b"\x00\x00\xc0\x3f")  # then an empty string and a float32 1.5
    manifest = [{"paths": ["w"], "weights": [{"name": "s", "shape": [3], "dtype": "string"},
                                             {"name": "t", "shape": [], "dtype": "string"},
                                             {"name": "f", "shape": [], "dtype": "float32"}]}]
    decoded = {e["name"]: e["data"] for e in decoded_weights(tmp_path, manifest)[0]}
    assert list(decoded["s"]) == values and decoded["t"].item() == b"" and decoded["f"].item() == 1.5
    (tmp_path / "w").write_bytes(data[:-2])
    with pytest.raises(ValueError, match="runs past its group's files"):
        decoded_weights(tmp_path, manifest)


def test_a_declared_input_of_28_gb_is_one_line_before_numpy_allocates_it():
    from tfjs_parity.inputs import random_inputs
    from tfjs_parity.plan import Input
    with pytest.raises(KitError, match=r"input 'image' of shape \[100000, 100000, 700\] is 28,000,000,000,000 bytes"):
        random_inputs([Input("image", [100000, 100000, 700], "int32", "uint8")], None, 0)
