import numpy as np
import pytest

from tfjs_parity import KitError
from tfjs_parity.capture import Capture
from tfjs_parity.compare import compare_captures, diff_arrays
from tfjs_parity.report import study_block


def test_diff_counts_differing_values_and_averages_over_all():
    a = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    b = np.array([1.0, 2.5, 3.0, 3.0], dtype=np.float32)
    assert diff_arrays(a, b) == (2, 0.375)  # (0.5 + 1.0) / 4


def test_identical_arrays_give_zero():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert diff_arrays(a, a.copy()) == (0, 0.0)


def test_signed_zeros_are_equal_and_nan_is_different():
    assert diff_arrays(np.array([0.0]), np.array([-0.0])) == (0, 0.0)
    count, average = diff_arrays(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert count == 1 and np.isnan(average)


def test_difference_is_exact_in_float64_not_float32():
    a = np.array([16777216.0], dtype=np.float32)  # 2**24: the next float32 is 2 away
    b = np.array([16777218.0], dtype=np.float32)
    assert diff_arrays(a, b) == (1, 2.0)
    tiny = np.array([1e-45], dtype=np.float32)  # smallest subnormal
    assert diff_arrays(tiny, np.zeros(1, np.float32)) == (1, float(tiny[0]))


def capture(label, **tensors):
    return Capture({"runtime": label, "backend": "x"}, {k: [np.asarray(a, np.float32) for a in v]
                                                        for k, v in tensors.items()})


def test_compare_walks_every_tensor_in_the_reference_order():
    ref = capture("python", dense_0_weights=[[[1, 2]], [0]], dense_0_output=[[[1, 2]]])
    other = capture("node", dense_0_weights=[[[1, 2]], [0]], dense_0_output=[[[1, 3]]])
    result = compare_captures(ref, other)
    assert [t.name for t in result.tensors] == ["dense_0_weights[0]", "dense_0_weights[1]", "dense_0_output[0]"]
    assert [t.different_values for t in result.tensors] == [0, 0, 1]
    assert not result and compare_captures(ref, ref)


def test_a_layer_missing_from_the_other_capture_is_named():
    ref = capture("python", dense_0_output=[[1]], dense_1_output=[[1]])
    other = capture("node", dense_0_output=[[1]])
    with pytest.raises(KitError, match="layer dense_1: dense_1_output is missing from node/x"):
        compare_captures(ref, other)


def test_weights_shaped_differently_are_another_model_named_by_layer_and_shapes():
    ref = capture("python", dense_0_weights=[[[1, 2]]], dense_0_output=[[[1, 2]]])
    other = capture("node", dense_0_weights=[[[1, 2, 3]]], dense_0_output=[[[1, 2]]])
    with pytest.raises(KitError, match=r"layer dense_0: dense_0_weights\[0\] has shape \[1, 2\] in python/x "
                                       r"but \[1, 3\] in node/x"):
        compare_captures(ref, other)


def test_an_output_shaped_differently_is_a_difference_there_and_the_rest_is_compared():
    ref = capture("python", dense_0_output=[[[1, 2]]], dense_1_output=[[[5.0]]])
    other = capture("node", dense_0_output=[[[1, 2, 3]]], dense_1_output=[[[5.0]]])
    diff = compare_captures(ref, other)
    shaped, rest = diff.tensors
    assert (shaped.different_values, shaped.shapes) == (3, ([1, 2], [1, 3])) and shaped.average_difference != 0
    assert rest.different_values == 0
    assert "dense_0_output[0]: different values = 3, average difference = nan (shape [1, 2] vs [1, 3])" in \
        study_block("t", diff)


def test_study_block_uses_the_study_line_format():
    ref = capture("python", dense_1_output=[[[1.0, 2.0, 3.0, 4.0]]])
    other = capture("browser", dense_1_output=[[[1.0, 2.5, 3.0, 3.0]]])
    assert study_block("tf.Keras Python vs tfjs Browser", compare_captures(ref, other)) == (
        "********** tf.Keras Python vs tfjs Browser **********\n"
        "dense_1_output[0]: different values = 2, average difference = 0.375")


# --- the metrics of --full, on arrays checkable by hand ---------------------------------
from tfjs_parity.compare import measure  # noqa: E402


def test_metrics_on_plain_numbers():
    m = measure(np.array([1.0, 2.0, 4.0], np.float32), np.array([1.0, 2.5, 3.0]))
    assert (m.different_values, m.average_difference, m.max_abs, m.magnitude) == (2, 0.5, 1.0, 3.0)
    assert m.max_rel == 1.0 / 3.0
    # float32 spacing: 2**-22 at 2.5 (in [2, 4)), 2**-22 at 3.0; so 0.5 and 1.0 are 2**21 and 2**22 ULPs
    assert (m.ulp_max, m.ulp_median) == (2.0 ** 22, 2.0 ** 21)
    assert m.nonfinite == 0


def test_identical_values_including_zeros_signed_zeros_and_infinities_differ_by_nothing():
    values = np.array([0.0, -0.0, np.inf, -np.inf, 5.0], np.float32)
    m = measure(values, np.array([-0.0, 0.0, np.inf, -np.inf, 5.0]))
    assert (m.different_values, m.max_abs, m.max_rel, m.ulp_max) == (0, 0.0, 0.0, 0.0)
    zeros = measure(np.zeros(3, np.float32), np.zeros(3))
    assert (zeros.max_rel, zeros.magnitude) == (0.0, 0.0)


def test_relative_error_is_scaled_by_the_layer_so_zero_crossings_cannot_blow_it_up():
    # the reference crosses zero at 1e-9; elementwise relative error would be 2 there
    m = measure(np.array([-1e-9, 100.0], np.float32), np.array([1e-9, 100.0]))
    assert m.max_rel == pytest.approx(2e-9 / 100.0)
    assert m.ulp_max > 1e6  # ULPs, by contrast, are elementwise: huge next to zero


def test_nan_and_infinity_are_never_hidden():
    m = measure(np.array([np.nan, 1.0], np.float32), np.array([1.0, 1.0]))
    assert np.isnan(m.max_abs) and np.isnan(m.max_rel) and np.isnan(m.ulp_max) and m.nonfinite == 1
    m = measure(np.array([np.inf, 1.0], np.float32), np.array([70000.0, 1.0]))
    assert m.max_abs == np.inf and m.nonfinite == 1 and m.magnitude == 70000.0
    m = measure(np.array([np.nan], np.float32), np.array([np.nan]))  # NaN in both: not this runtime's doing
    assert m.max_abs == 0.0 and m.nonfinite == 0 and m.different_values == 1  # the study's count keeps NaN != NaN


def _measure_as_before(a, r):
    """measure() as it was before its single-pass rewrite (the oracle: no metric may change)."""
    from tfjs_parity.compare import Metrics, _nan_max, diff_arrays
    with np.errstate(invalid="ignore"):
        a = np.asarray(a, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
    count, average = diff_arrays(a, r)
    same = (a == r) | (np.isnan(a) & np.isnan(r))
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.where(same, 0.0, np.abs(a - r))
        magnitude = float(np.max(np.abs(r[np.isfinite(r)]), initial=0.0))
        spacing = np.spacing(np.abs(r).astype(np.float32)).astype(np.float64)
        ulps = np.where(same, 0.0, error / spacing)
    max_abs = _nan_max(error)
    return Metrics(count, average, max_abs,
                   max_abs / magnitude if magnitude > 0 else (0.0 if max_abs == 0 else float("inf")),
                   _nan_max(ulps), float(np.median(ulps)) if ulps.size else 0.0,
                   int(np.sum(~np.isfinite(a) & np.isfinite(r))), magnitude)


@pytest.mark.parametrize("seed", range(6))
def test_measure_gives_the_metrics_it_always_gave(seed):
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 10, 200)
    a = (r + rng.normal(0, 1e-6, 200) * (rng.random(200) < 0.7)).astype(np.float32)
    if seed % 3 == 1:  # NaN, infinities, the same infinity on both sides
        a[[3, 7, 11]] = [np.nan, np.inf, -np.inf]
        r[[7, 12]] = [np.inf, np.nan]
    if seed % 3 == 2:
        a[:] = r  # bit-identical
        r = r.astype(np.float32).astype(np.float64)
        a = r.copy()
    got, want = measure(a, r), _measure_as_before(a, r)
    assert repr(got) == repr(want)


def test_a_layer_whose_output_holds_no_value_is_a_row_not_a_division_by_zero():
    """A detector that kept no box: its gather's output has shape [0, 4] (handtrack's SSD)."""
    from tfjs_parity.report import layer_table
    ref = capture("python", boxes_output=[np.zeros((0, 4))], head_output=[[1.0, 2.0]])
    other = capture("node", boxes_output=[np.zeros((0, 4))], head_output=[[1.0, 2.5]])
    table = layer_table(ref, [compare_captures(ref, other)], [other])
    assert "boxes" in table and "head" in table
