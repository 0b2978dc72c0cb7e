"""The verdict rule (verdict.judge) on synthetic captures: each branch of the rule reached
with numbers made here, so a change to the rule that moves a verdict fails in seconds."""
import numpy as np
import pytest

from tfjs_parity.capture import Capture
from tfjs_parity.plan import Point
from tfjs_parity.verdict import FLOAT16, FLOAT32, Verdict, gate, judge

U = 2.0 ** -24
EXACT = np.array([[1.0, -2.0, 3.0, 0.5]])
W = [np.array([[0.5, -1.0]], np.float32)]


def point(name="d0", sources=({"input": "x"},), weights=True):
    return Point(name, name, "Dense", 0, list(sources), 1, weights)


def capture(output, weights=W, runtime="node", f16=False, name="d0"):
    metadata = {"runtime": runtime, "backend": "cpu"}
    if f16:
        metadata["precision_flags"] = {"WEBGL_RENDER_FLOAT32_ENABLED": False}
    tensors = {f"{name}_output": [np.asarray(output)]}
    if weights is not None:
        tensors[f"{name}_weights"] = weights
    return Capture(metadata, tensors)


def verdict_of(output, bound=4 * U * np.abs(EXACT), weights=W, f16=False, python_output=None, exact=EXACT,
               f16_bound=None):
    """(verdict, reason) of one point whose local exact answer is `exact`."""
    python = capture(EXACT.astype(np.float32) if python_output is None else python_output, runtime="python")
    reference = capture(exact, weights=W, runtime="reference")
    bounds = {"float32": None if bound is None else [bound], "float16": None if f16_bound is None else [f16_bound]}
    result = judge(capture(output, weights, f16=f16), python, reference, [(point(), [exact], bounds)])
    return result.layers[0].verdict, result.layers[0].reason


def test_bit_identical_to_python_is_same_bits():
    python = EXACT.astype(np.float32) + np.float32(1e-7)
    assert verdict_of(python, python_output=python)[0] is Verdict.SAME_BITS


def test_within_the_bound_is_rounding_and_says_how_close():
    verdict, reason = verdict_of(EXACT * (1 + 2 * U))
    assert verdict is Verdict.ROUNDING and "of the float32 rounding bound" in reason


def test_beyond_the_bound_is_a_mismatch_naming_the_element():
    wrong = EXACT.copy()
    wrong[0, 2] += 1e-3
    verdict, reason = verdict_of(wrong)
    assert verdict is Verdict.MISMATCH and "output[0, 2]" in reason and "x the float32 rounding bound" in reason


def test_without_an_error_model_it_is_no_bound_below_the_ceiling():
    assert verdict_of(EXACT * (1 + 1e-5), bound=None)[0] is Verdict.NO_BOUND


def test_without_an_error_model_far_beyond_the_ceiling_is_a_mismatch_that_says_so():
    """UpSampling2D(bilinear) in tfjs is off by 44% of the layer (tfjs #4340): no error model,
    and still no float32 rounding."""
    verdict, reason = verdict_of(EXACT * 1.44, bound=None)
    assert verdict is Verdict.MISMATCH and "beyond the ceiling of 0.00098" in reason and "not a bound" in reason


def test_the_ceiling_grows_with_python_s_own_error_and_is_off_for_float16():
    off = EXACT * (1 + 5e-3)
    python = EXACT * (1 + 1e-5)  # Python itself is 1e-5 off here: the ceiling is 1000 times that
    assert verdict_of(off, bound=None, python_output=python)[0] is Verdict.NO_BOUND
    assert verdict_of(EXACT * 1.44, bound=None, f16=True)[0] is Verdict.NO_BOUND


def test_a_changed_weight_is_a_mismatch_even_when_the_output_is_fine():
    verdict, reason = verdict_of(EXACT, weights=[np.array([[0.5, -1.0000001]], np.float32)])
    assert verdict is Verdict.MISMATCH and reason.startswith("weights[0][0, 1]")


def test_float16_storage_is_reduced_precision_within_float16_s_bound_only():
    off = EXACT * (1 + 2.0 ** -12)  # far beyond float32's bound, within float16's
    f16_bound = 4 * FLOAT16.unit_roundoff * np.abs(EXACT)
    assert verdict_of(off, f16=True, f16_bound=f16_bound)[0] is Verdict.REDUCED
    assert verdict_of(off, f16=False, f16_bound=f16_bound)[0] is Verdict.MISMATCH  # a float32 runtime: a bug
    weights16 = [np.float16(W[0]).astype(np.float32) + np.float32(2.0 ** -13)]
    assert verdict_of(EXACT, weights=weights16, f16=True)[0] is Verdict.REDUCED


def test_infinity_is_overflow_only_beyond_the_storage_s_largest_number():
    big = np.array([[7e4, 1.0, 1.0, 1.0]])
    inf = np.array([[np.inf, 1.0, 1.0, 1.0]])
    assert verdict_of(inf, exact=big, bound=4 * U * np.abs(big), f16=True)[0] is Verdict.OVERFLOW
    assert verdict_of(inf, exact=big, bound=4 * U * np.abs(big), f16=False)[0] is Verdict.MISMATCH  # float32 holds 7e4
    assert verdict_of(inf)[0] is Verdict.MISMATCH


def test_nan_the_exact_answer_has_too_is_inherited_not_a_fault():
    exact = np.array([[np.nan, 1.0, 2.0, 3.0]])
    verdict, reason = verdict_of(exact, exact=exact, bound=4 * U * np.abs(exact))
    assert verdict is Verdict.ROUNDING and "inherited" in reason


def test_an_overflow_is_passed_on_only_to_the_points_it_feeds():
    big, inf = np.array([[7e4]]), np.array([[np.inf]])
    points = [point("a"), point("b", sources=[{"point": "a", "index": 0}]), point("c")]
    outputs = {"a": inf, "b": np.array([[np.nan]]), "c": np.array([[np.nan]])}
    runtime = Capture({"runtime": "browser", "backend": "webgl",
                       "precision_flags": {"WEBGL_RENDER_FLOAT32_ENABLED": False}},
                      {f"{n}_output": [o] for n, o in outputs.items()})
    exact = Capture({"runtime": "reference"}, {f"{n}_output": [big if n == "a" else np.array([[1.0]])]
                                               for n in outputs})
    local = [(p, [big if p.name == "a" else np.array([[1.0]])], {"float32": [np.array([[1e-3]])], "float16": None})
             for p in points]
    verdicts = [layer.verdict for layer in judge(runtime, exact, exact, local).layers]
    assert verdicts == [Verdict.OVERFLOW, Verdict.OVERFLOW, Verdict.MISMATCH]


def test_the_worst_point_is_the_capture_s_verdict_and_the_gate_fails_on_it():
    wrong = EXACT + 1.0
    python = capture(EXACT.astype(np.float32), runtime="python")
    local = [(point(), [EXACT], {"float32": [4 * U * np.abs(EXACT)], "float16": None})]
    result = judge(capture(wrong), python, capture(EXACT, runtime="reference"), local)
    assert result.verdict is Verdict.MISMATCH
    assert not gate([result], rtol=10.0) and gate([result], rtol=10.0, allow_mismatch=True)


@pytest.mark.parametrize("precision, u", [(FLOAT32, 2.0 ** -24), (FLOAT16, 2.0 ** -11)])
def test_precisions_are_the_formats_unit_roundoffs(precision, u):
    assert precision.unit_roundoff == u and precision.largest == (3.4028234663852886e38 if u < 1e-5 else 65504.0)


def test_python_against_itself_is_measure_of_itself_without_the_arithmetic():
    from tfjs_parity.compare import measure
    from tfjs_parity.verdict import _itself
    for values in ([1.5, -2.0, 0.0], [1.0, float("nan"), float("inf"), -3.0], [], [float("-inf")]):
        array = np.asarray(values, np.float64)
        assert repr(_itself(array)) == repr(measure(array, array)), values


def test_a_mismatch_quotes_the_element_that_decided_it_and_the_largest_error_apart():
    """WebGL's packed depthwise kernel gives 0 for an output of -1.4e-23 (its absolute error
    floor): that element, far beyond its tiny bound, decides the verdict; the element with the
    largest absolute error (one ulp of a value near 1) is within its bound, and is named apart.
    The error against the point's own values says it is harmless."""
    exact = np.array([[1.04674648, -1.4e-23, 0.5, 0.25]])
    output = np.array([[1.04674661, 0.0, 0.5, 0.25]])  # one ulp off at [0, 0], the tiny value lost at [0, 1]
    verdict, reason = verdict_of(output, bound=4 * U * np.abs(exact), exact=exact)
    assert verdict is Verdict.MISMATCH
    assert reason.split(";")[0].endswith("output[0, 1] is 0, exact -1.4e-23 from this runtime's own inputs"), reason
    assert "the largest absolute error is at output[0, 0]: 1.04674661, exact 1.04674648" in reason, reason
    assert "the error is 1.2e-07 of the point's largest value (1.05)" in reason, reason


def test_a_mismatch_whose_deciding_element_is_the_largest_error_names_it_once():
    wrong = EXACT.copy()
    wrong[0, 2] += 0.3
    verdict, reason = verdict_of(wrong)
    assert verdict is Verdict.MISMATCH and "output[0, 2] is 3.3" in reason
    assert "largest absolute error" not in reason and "the error is 0.1 of the point's largest value (3)" in reason


def _results(verdicts, errors, python_errors=None):
    """Python's RuntimeResult and one runtime's, a point per verdict, each point's error
    against the exact answer relative to its magnitude as given."""
    from tfjs_parity.compare import Metrics
    from tfjs_parity.verdict import LayerResult, RuntimeResult

    def metrics(rel):
        return Metrics(1, rel, rel, rel, 1.0, 1.0, 0, 1.0)

    def result(label, runtime, kinds, rels):
        layers = [LayerResult(f"n{i}", metrics(0.0), metrics(rel), 0.5, U, kind, "")
                  for i, (kind, rel) in enumerate(zip(kinds, rels))]
        return RuntimeResult(label, "float32", {"runtime": runtime}, layers)
    python_errors = python_errors or [1e-7] * len(verdicts)
    return [result("python/tensorflow", "python", [Verdict.ROUNDING] * len(verdicts), python_errors),
            result("browser/webgl", "browser", verdicts, errors)]


def test_a_runtime_loses_the_answer_from_a_point_on_only_when_every_later_point_is_beyond_its_bound():
    from tfjs_parity.verdict import closeness
    lost = [Verdict.ROUNDING, Verdict.MISMATCH, Verdict.MISMATCH, Verdict.OVERFLOW]
    _, sentences = closeness(_results(lost, [1e-7, 0.5, 0.9, float("inf")]), ["n3"])
    assert sentences == ["browser/webgl loses the answer from n1 on (mismatch); its outputs are no longer the "
                         "model's (another shape, NaN or infinity): beyond rounding"]


def test_a_mismatch_at_some_points_names_them_and_says_the_outputs_are_rounding():
    """2 of 92 depthwise nodes beyond their bound (an error of 1e-23), every later node rounding:
    not 'loses the answer', and the outputs say it is harmless for this input."""
    from tfjs_parity.verdict import closeness
    verdicts = [Verdict.ROUNDING, Verdict.MISMATCH, Verdict.ROUNDING, Verdict.MISMATCH, Verdict.ROUNDING]
    _, sentences = closeness(_results(verdicts, [1e-7, 1e-23, 2e-7, 1e-23, 3e-7]), ["n4"])
    assert sentences == ["browser/webgl has a mismatch at 2 of 5 points: n1, n3; its outputs are within rounding of "
                         "the exact answer (3e-07 of their magnitude): harmless for this input"]


def test_a_mismatch_whose_outputs_moved_beyond_rounding_says_it_is_a_wrong_answer():
    from tfjs_parity.verdict import closeness
    verdicts = [Verdict.MISMATCH] + [Verdict.ROUNDING] * 4 + [Verdict.MISMATCH] * 3
    _, sentences = closeness(_results(verdicts, [0.3] * 8), ["n7"])
    assert sentences == ["browser/webgl has a mismatch at 4 of 8 points: n0, n5, n6 and 1 more; its outputs are off "
                         "by 0.3 of their magnitude: beyond rounding, a wrong answer for this input"]


def test_the_plan_s_sinks_are_the_points_no_other_point_reads():
    from tfjs_parity.plan import Plan
    points = [point("a"), point("b", [{"point": "a", "index": 0}]), point("c", [{"point": "a", "index": 0}]),
              point("d", [{"point": "b", "index": 0}, {"input": "x"}])]
    assert Plan([], points).sinks() == ["c", "d"]


def test_the_model_s_outputs_are_what_step_1_recorded_else_the_sinks():
    """A float node read only by a node the plan does not capture (a Cast to int32) is a sink
    but no output: step 1 records the model's own outputs, and the sentence reads those."""
    from tfjs_parity.plan import Plan
    points = [point("a"), point("b", [{"point": "a", "index": 0}]), point("c", [{"input": "x"}])]
    assert Plan([], points).outputs() == ["b", "c"]
    assert Plan([], points, source={"outputs": ["b"]}).outputs() == ["b"]
