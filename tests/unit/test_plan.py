"""The probe plan and its kind of model: what every runtime executes."""
import pytest

from tfjs_parity import KitError
from tfjs_parity.kinds import KINDS, kind_of
from tfjs_parity.plan import Input, Plan, Point, point_names


def _plan(kind="layers"):
    points = [Point("d0", "d0", "Dense", 0, [{"input": "x"}], 1, True),
              Point("d1", "d1", "Dense", 0, [{"point": "d0", "index": 0}], 1, True)]
    return Plan([Input("x", [None, 3], "float32")], points, {"format": "tf_keras"}, "abc", kind)


def test_a_plan_keeps_its_kind_and_points_through_its_file(tmp_path):
    _plan().save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    assert loaded == _plan() and kind_of(loaded) is KINDS["layers"]


def test_a_plan_from_before_kinds_is_a_layers_model(tmp_path):
    (tmp_path / "plan.json").write_text(_plan().to_json().replace('"kind": "layers", ', ""))
    assert Plan.load(tmp_path / "plan.json").kind == "layers"


def test_a_kind_the_kit_does_not_have_is_one_error_naming_those_it_has():
    with pytest.raises(KitError, match=r"kind 'sparse' this kit does not have \(layers, graph\)"):
        kind_of(_plan("sparse"))


def test_every_kind_has_its_javascript_half_beside_it():
    from tfjs_parity.paths import KINDS_JS
    assert sorted(p.stem for p in KINDS_JS) == sorted(f"{name}_model" for name in KINDS)


def test_shared_layers_get_one_point_per_call_and_clashing_names_are_refused():
    from types import SimpleNamespace as S
    graph = S(layers=[S(name="shared", nodes=[1, 2]), S(name="other", nodes=[1])])
    assert point_names(graph) == {("shared", 0): "shared_call0", ("shared", 1): "shared_call1", ("other", 0): "other"}
    with pytest.raises(KitError, match="would clash"):
        point_names(S(layers=[S(name="shared", nodes=[1, 2]), S(name="shared_call1", nodes=[1])]))


@pytest.mark.parametrize("class_name, op", [("MaxPooling3D", "MaxPool3D"), ("AveragePooling3D", "AvgPool3D")])
def test_a_layer_without_a_float64_kernel_is_refused_by_name_before_anything_runs(class_name, op):
    """TensorFlow cannot compute these in float64 (test_bounds.py's xfails): step 1 says so in
    one line instead of a 49-line traceback from the float64 reference."""
    from tfjs_parity.kinds.layers_model import check_tfjs_can_run
    from tfjs_parity.topology import Graph, Layer
    graph = Graph("m", [Layer("x", "InputLayer", {}), Layer("p", class_name, {"pool_size": 2})], [], [])
    with pytest.raises(KitError, match=f"layer 'p' \\({class_name}\\): TensorFlow has no float64 CPU kernel for {op}"):
        check_tfjs_can_run(graph)


@pytest.mark.parametrize("class_name, config, fragment", [
    ("GlobalAveragePooling2D", {"keepdims": True}, "keepdims=True, which tfjs-layers 4.22 ignores"),
    ("GlobalMaxPooling1D", {"keepdims": True}, "keepdims=True, which tfjs-layers 4.22 ignores"),
    ("Resizing", {"height": 8, "width": 8}, "Resizing computes its output shape without the batch dimension"),
])
def test_what_tfjs_layers_computes_differently_is_refused_by_name_with_the_reason(class_name, config, fragment):
    """Issue 17: MobileNet v1/v3's head (keepdims=True pooling) and Resizing used to pass step 1
    and fail in tfjs naming another layer, or no layer."""
    from tfjs_parity.kinds.layers_model import check_tfjs_can_run
    from tfjs_parity.topology import Graph, Layer
    with pytest.raises(KitError, match=f"layer 'l' \\({class_name}\\): .*{fragment}"):
        check_tfjs_can_run(Graph("m", [Layer("l", class_name, config)], [], []))
    check_tfjs_can_run(Graph("m", [Layer("l", "GlobalAveragePooling2D", {"keepdims": False})], [], []))
