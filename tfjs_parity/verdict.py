"""Verdicts: is a runtime's difference float32 rounding, reduced precision, overflow, or a bug?

The rule, per layer and runtime (docs/verdicts-and-bounds.md gives the reasoning):

1. "same bits": weights and output bit-identical to TensorFlow Python's.
2. Weights are checked against the true (Keras) weights: equal, or, on a runtime that
   stores float16, within float16 rounding ("reduced precision"); anything else is a
   "mismatch" (a wrong or corrupted weight).
3. The output is checked against the *local* float64 reference: the layer alone, exact, on
   the inputs this runtime fed it, and the rounding bound of the layer's type on those
   inputs (bounds.py: the most any correct float32 evaluation can be off). Within it:
   "float32 rounding". Within the same bound with float16's u = 2**-11, on a runtime that
   says it stores float16 (WEBGL_RENDER_FLOAT32_ENABLED false): "reduced precision". NaN
   or infinity where the exact answer is finite: "overflow" when the exact values pass the
   largest number the runtime's storage holds (65504 for float16), or when a layer feeding
   it overflowed; otherwise "mismatch". NaN or infinity the exact answer has too (a NaN in
   the input) is inherited, not a fault. Anything else beyond the bound: "mismatch".
   A layer type with no error model gets its metrics and "no bound": never a guess, unless
   its error is beyond the ceiling no float32 rounding reaches (CEILING): "mismatch".
4. An output shaped differently from the exact answer is a "mismatch" there; the points it
   feeds are judged on the exact answer it should have fed them.

(Over 400 lines: the rule, the mismatch line and the summary sentences, and the gate made
from its results: each reads the LayerResults the rule makes, in the rule's own terms.)
"""
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from .compare import Metrics, check_layout, measure
from .numerics import CEILING, CEILING_FACTOR, FLOAT16, FLOAT32, joined, storage_precision
from .quantization import Quantized, check_weight


class Verdict(StrEnum):
    """A point's verdict, best to worst (the order is the ranking): a worse one always wins."""
    SAME_BITS = "same bits"
    ROUNDING = "float32 rounding"
    QUANTIZED = "quantized"  # weights only: within half a step of the quantization grid of their originals
    NO_BOUND = "no bound"
    REDUCED = "reduced precision"
    OVERFLOW = "overflow"
    MISMATCH = "mismatch"

    @property
    def rank(self):
        return VERDICTS.index(self)

    @classmethod
    def worst(cls, verdicts):
        return max((cls(v) for v in verdicts), key=lambda v: v.rank)


VERDICTS = tuple(Verdict)


@dataclass
class LayerResult:
    layer: str
    vs_python: Metrics
    vs_float64: Metrics
    bound_ratio: float  # max |output - local exact| / float32 rounding bound: <= 1 is float32 rounding; NaN: no bound
    bound_rel: float    # the float32 rounding bound itself, relative to the layer's magnitude
    verdict: str
    reason: str
    weights: str = ""         # the verdict of the weights captured here ("" when none are)
    weights_reason: str = ""


@dataclass
class RuntimeResult:
    label: str
    precision: str
    metadata: dict
    layers: list = field(default_factory=list)

    @property
    def verdict(self):
        """The worst verdict over the layers."""
        return Verdict.worst(layer.verdict for layer in self.layers)

    def first(self, *verdicts):
        """The first LayerResult whose verdict is one of `verdicts`, or None."""
        return next((layer for layer in self.layers if layer.verdict in verdicts), None)


def judge(capture, python, reference, local, exact_fed=None, quantized=None):
    """Judge every point of `capture` (Python's own capture included).

    `python`, `reference`: the TF Python and float64 captures; `local`: the capture's
    LocalReference.evaluate_capture(), point by point; `exact_fed`: {point: source} of the
    points it fed the exact answer of a source this runtime shaped differently (filled as
    `local` goes); `quantized`: a quantized model's Quantized (its weights are judged
    against their originals)."""
    precision = storage_precision(capture)
    result = RuntimeResult(capture.label, precision.name, capture.metadata)
    overflowed_points = set()  # an overflow is passed on only to the points it feeds
    exact_fed = {} if exact_fed is None else exact_fed
    for point, local_outputs, bounds in local:
        shapes = [list(np.shape(a)) for a in capture.outputs(point.name)]
        exact_shapes = [list(np.shape(a)) for a in reference.outputs(point.name)]
        if shapes != exact_shapes:  # another shape: every value differs; the report goes on
            unknown = _unmeasured(max(sum(int(np.prod(s)) for s in shapes), 1))
            result.layers.append(LayerResult(point.name, unknown, unknown, float("nan"), float("nan"),
                                             Verdict.MISMATCH, f"output shape {_shapes_text(shapes)} here, the exact "
                                             f"answer's {_shapes_text(exact_shapes)}: another computation"))
            continue
        overflowed = any(s.get("point") in overflowed_points for s in point.sources)
        output = joined(capture.outputs(point.name))
        exact = joined(reference.outputs(point.name))
        local_output = joined(local_outputs)
        bound = None if bounds["float32"] is None else joined(bounds["float32"])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            # NaN or infinity where the exact answer has the same (a NaN in the input) is no error
            inherited = (np.isnan(output) & np.isnan(local_output)) | (np.isinf(output) & (output == local_output))
            error = np.where(inherited, 0.0, np.abs(output.astype(np.float64) - local_output))
            ratio = float("nan") if bound is None else _max_ratio(error, bound)
            magnitude = float(np.max(np.abs(exact), initial=0.0))
            largest_bound = float("nan") if bound is None else float(np.max(np.where(np.isnan(bound), -np.inf, bound),
                                                                             initial=-np.inf))
            bound_rel = largest_bound / magnitude if magnitude > 0 and largest_bound >= 0 else float("nan")

        verdict, reason, weights_verdict, weights_reason = Verdict.ROUNDING, "", "", ""
        if point.weights:
            verdict, reason = _judge_weights(capture.weights(point.name), reference.weights(point.name), precision,
                                             quantized and quantized.of(point))
            if reference.weights(point.name):  # a layer without weights has none to judge
                weights_verdict, weights_reason = verdict, reason
            if verdict == Verdict.QUANTIZED:  # as the model holds them: its output is judged as any other
                verdict, reason = Verdict.ROUNDING, ""
        if verdict != Verdict.MISMATCH:
            if capture is not python and _same_bits(capture, python, point):
                verdict, reason = Verdict.SAME_BITS, "bit-identical to TensorFlow Python"
            elif not np.all(np.isfinite(output) | inherited):
                verdict, reason = _judge_nonfinite(output[~inherited], exact, local_output[~inherited], precision,
                                                   overflowed)
            elif overflowed and not np.all(np.isfinite(output)):
                verdict = Verdict.OVERFLOW
                reason = f"{int(np.sum(~np.isfinite(output)))} NaN/inf passed on from an earlier overflow"
            elif bound is None:
                ceiling = _ceiling(python, exact, point, precision)
                worst = float(np.max(error, initial=0.0))
                relative = worst / magnitude if magnitude > 0 else (0.0 if worst == 0 else float("inf"))
                if ceiling is not None and relative > ceiling:
                    index = int(np.nanargmax(np.where(np.isnan(error), np.inf, error)))
                    verdict = Verdict.MISMATCH
                    reason = (f"no error model for {point.class_name}, but off by {relative:.3g} of the layer's "
                              f"magnitude, beyond the ceiling of {ceiling:.2g} that float32 rounding never reaches "
                              f"(a ceiling, not a bound): {_element(capture, point, index)} is {output[index]:.9g}, "
                              f"exact {local_output[index]:.9g} from this runtime's own inputs")
                else:
                    verdict = _worse(verdict, Verdict.NO_BOUND)
                    reason = f"no error model for {point.class_name} here: metrics only"
            elif ratio <= 1:
                verdict = _worse(verdict, Verdict.ROUNDING)
                reason = reason or f"{ratio:.2g} of the float32 rounding bound"
                if np.any(inherited & ~np.isfinite(output)):
                    reason += (f"; {int(np.sum(inherited & ~np.isfinite(output)))} NaN/inf inherited from its "
                               "inputs, as the exact answer has them")
            elif precision is FLOAT16 and bounds.get("float16") is not None and \
                    _max_ratio(error, joined(bounds["float16"])) <= 1:
                verdict = Verdict.REDUCED
                reason = f"{ratio:.3g}x the float32 bound, within float16's"
            else:
                verdict = Verdict.MISMATCH
                reason = _mismatch_reason(capture, point, ratio, precision, output, local_output, error, bound,
                                          magnitude)
        if point.name in exact_fed:
            reason += (("; " if reason else "") + f"fed the exact answer of {exact_fed[point.name]}, whose output "
                       "this runtime shaped differently")
        if verdict == Verdict.OVERFLOW:
            overflowed_points.add(point.name)
        vs_python = _itself(output) if capture is python else measure(output, joined(python.outputs(point.name)))
        result.layers.append(LayerResult(point.name, vs_python, measure(output, exact), ratio, bound_rel, verdict, reason,
                                         str(weights_verdict), weights_reason))
    return result


def _mismatch_reason(capture, point, ratio, precision, output, local_output, error, bound, magnitude):
    """A mismatch beyond the bound, said by the element that decided it (the largest error
    against its own bound, which may be a tiny value given as 0), then how large the error is
    against the point's own values (1e-23 against values near 1 harms no one; 0.3 does), and
    the element with the largest absolute error when that is another one."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(error == 0, 0.0, error / bound)
    deciding = int(np.nanargmax(np.where(np.isnan(ratios), np.inf, ratios)))
    largest = int(np.nanargmax(np.where(np.isnan(error), np.inf, error)))
    reason = (f"{ratio:.3g}x the {precision.name} rounding bound: {_element(capture, point, deciding)} is "
              f"{output[deciding]:.9g}, exact {local_output[deciding]:.9g} from this runtime's own inputs")
    if magnitude > 0 and np.isfinite(error[largest]):
        reason += f"; the error is {error[largest] / magnitude:.2g} of the point's largest value ({magnitude:.3g})"
    if largest != deciding and error[largest] > error[deciding]:
        reason += (f"; the largest absolute error is at {_element(capture, point, largest)}: {output[largest]:.9g}, "
                   f"exact {local_output[largest]:.9g}")
    return reason


def _ceiling(python, exact, point, precision):
    """The ceiling for `point` of a float32 runtime; None for float16 storage (its rounding
    alone is 2**-11: no ceiling this low would hold)."""
    if precision is not FLOAT32:
        return None
    python_error = measure(joined(python.outputs(point.name)), exact).max_rel
    return max(CEILING, CEILING_FACTOR * python_error) if np.isfinite(python_error) else CEILING


def _itself(output):
    """measure(output, output) without the arithmetic: Python's capture against itself."""
    finite = np.isfinite(output)
    magnitude = float(np.max(np.abs(output[finite]), initial=0.0))
    average = 0.0 if output.size and np.all(finite) else float("nan")  # sum(|a - a|) / size: inf - inf, NaN, 0/0
    return Metrics(int(np.sum(np.isnan(output))), average, 0.0, 0.0, 0.0, 0.0, 0, magnitude)


def _unmeasured(size):
    """Metrics of an output that cannot be measured against the exact answer (another shape)."""
    nan = float("nan")
    return Metrics(size, nan, nan, nan, nan, nan, 0, nan)


def _shapes_text(shapes):
    return " + ".join(str(s) for s in shapes)


def _element(capture, point, flat_index):
    """'output[0, 3]' (or 'output 2 [1, 4]' for a later output) for an index into joined()."""
    for i, array in enumerate(capture.outputs(point.name)):
        if flat_index < array.size:
            where = [int(v) for v in np.unravel_index(flat_index, array.shape)]
            return f"output{where}" if i == 0 else f"output {i} {where}"
        flat_index -= array.size
    return "output"


def _max_ratio(error, bound):
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(error == 0, 0.0, error / bound)
    return float("nan") if np.any(np.isnan(ratios)) else float(np.max(ratios, initial=0.0))


def _worse(a, b):
    return Verdict.worst((a, b))


def _same_bits(capture, python, point):
    ours = capture.weights(point.name) + capture.outputs(point.name)
    theirs = python.weights(point.name) + python.outputs(point.name)
    if len(ours) != len(theirs):
        return False
    return all(a.shape == b.shape and np.array_equal(a.astype(np.float32).view(np.uint32),
                                                     b.astype(np.float32).view(np.uint32))
               for a, b in zip(ours, theirs))


def _judge_weights(weights, true_weights, precision, quantized=None):
    """('float32 rounding' | 'quantized' | 'reduced precision' | 'mismatch', reason) for a
    layer's weights; `quantized`: a (scheme, original) per weight, None for one not quantized."""
    verdict, reason, notes = Verdict.ROUNDING, "", []
    for i, (w, t) in enumerate(zip(weights, true_weights)):
        scheme = quantized[i] if quantized else None
        if scheme is not None:
            checked = check_weight(w, scheme[1], scheme[0], dequantized=t, precision=precision)
            if not checked.within:
                where = [int(v) for v in checked.index]
                truth = "its original" if scheme[1] is not None else "the quantized model's"
                value = (scheme[1] if scheme[1] is not None else t)[tuple(where)]
                return Verdict.MISMATCH, (f"weights[{i}]{where} is {np.asarray(w)[tuple(where)]:.9g}, {truth} "
                                          f"{value:.9g}: {checked.error_steps:.3g} steps of its {checked.dtype} grid "
                                          f"(step {checked.step:.3g}) away" + (", beyond the half step quantization "
                                          "moves a weight" if scheme[1] is not None else ", off the grid"))
            verdict = Verdict.QUANTIZED if verdict != Verdict.REDUCED else verdict
            notes.append(f"weights[{i}] {checked.dtype}, step {checked.step:.3g}, largest error "
                         f"{checked.error_steps:.2f} step" if scheme[1] is not None
                         else f"weights[{i}] {checked.dtype}, step {checked.step:.3g}, as the file holds them")
            continue
        w, t = w.astype(np.float64), t.astype(np.float64)
        if np.array_equal(w, t):
            continue
        with np.errstate(invalid="ignore"):
            # float16 keeps 11 significant bits; below its smallest normal (6.1e-5) the step
            # is 2**-24, so rounding moves a value by at most half of that.
            within_f16 = np.abs(w - t) <= FLOAT16.unit_roundoff * np.abs(t) + 2.0 ** -25
        if precision is FLOAT16 and np.all(within_f16):
            verdict, reason = Verdict.REDUCED, "weights rounded to float16"
            continue
        bad = np.unravel_index(np.argmax(~within_f16 | (w != t)), w.shape)
        # 9 significant digits: enough to tell any two float32 values apart (a 1-ulp change)
        return Verdict.MISMATCH, f"weights[{i}]{[int(v) for v in bad]} is {w[bad]:.9g}, the model's is {t[bad]:.9g}"
    if notes:
        reason = "; ".join(([reason] if reason else []) + notes)
    return verdict, reason


def _judge_nonfinite(output, exact, local_output, precision, overflowed):
    count = int(np.sum(~np.isfinite(output)))
    with np.errstate(invalid="ignore"):
        values = np.abs(np.concatenate([exact.ravel(), local_output.ravel()]))
    largest = float(np.max(values[np.isfinite(values)], initial=0.0))
    if overflowed:
        return Verdict.OVERFLOW, f"{count} NaN/inf passed on from an earlier overflow"
    if largest > precision.largest:
        return Verdict.OVERFLOW, (f"{count} NaN/inf: exact values reach {largest:.3g}, beyond {precision.name}'s "
                            f"largest {precision.largest:.6g}")
    return Verdict.MISMATCH, f"{count} NaN/inf where the exact answer is finite (at most {largest:.3g})"


def closeness(results, outputs=None):
    """Who is closest to the exact answer: per layer, the runtime with the smallest error
    against float64; and for each runtime, a sentence comparing it with TF Python. A runtime
    "loses the answer from X on" only when every point from X on is beyond its bound; else it
    has a mismatch at N of M points, named. `outputs`: the model's output points (Plan.outputs),
    whose error against the exact answer says how much a mismatch matters for this input."""
    python = next(r for r in results if r.metadata.get("runtime") == "python")
    layers = [layer.layer for layer in python.layers]

    def error(result, i):
        value = result.layers[i].vs_float64.max_abs
        return float("inf") if np.isnan(value) else value

    closest = {}
    for i, name in enumerate(layers):
        best = min(error(r, i) for r in results)
        closest[name] = ", ".join(r.label for r in results if error(r, i) == best)
    sentences = []
    for result in results:
        if result is python:
            continue
        pairs = [(error(result, i), error(python, i)) for i in range(len(layers))]
        closer = sum(ours < theirs for ours, theirs in pairs)
        equal = sum(ours == theirs for ours, theirs in pairs)
        further = len(pairs) - closer - equal
        ratios = [ours / theirs for ours, theirs in pairs if theirs > 0]
        worst = max(ratios, default=1.0)
        lost = result.first(Verdict.OVERFLOW, Verdict.MISMATCH)
        reduced = result.first(Verdict.REDUCED)
        repeat = result.metadata.get("repeat") or {}
        if repeat.get("identical") is False:
            sentences.append(f"{result.label} is NOT REPEATABLE: over {repeat.get('runs')} runs on the same input "
                             f"in one session, {repeat.get('first_difference')} gave other bits (a different answer "
                             "each time is a bug in itself)")
        if result.metadata.get("all_outputs_zero_or_nan"):
            sentences.append(f"{result.label}: ALL OUTPUTS ZERO OR NaN at every layer (its backend passed the "
                             "self-test: this model hits a bug there)")
        elif all(layer.verdict == Verdict.SAME_BITS for layer in result.layers):
            sentences.append(f"{result.label} gives TF Python's answer bit for bit at every layer")
        elif lost:
            before = (f"; reduced precision from {reduced.layer}"
                      if reduced and layers.index(reduced.layer) < layers.index(lost.layer) else "")
            bad = [layer for layer in result.layers if layer.verdict in (Verdict.OVERFLOW, Verdict.MISMATCH)]
            if all(layer.verdict in (Verdict.OVERFLOW, Verdict.MISMATCH)
                   for layer in result.layers[layers.index(lost.layer):]):
                said = f"{result.label} loses the answer from {lost.layer} on ({lost.verdict}){before}"
            else:
                named = ", ".join(layer.layer for layer in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3
                                                                        else "")
                said = f"{result.label} has a mismatch at {len(bad)} of {len(layers)} points: {named}{before}"
            sentences.append(said + _severity(result, python, layers, outputs))
        elif reduced:
            sentences.append(f"{result.label} is float16-accurate only: reduced precision from {reduced.layer}, "
                             f"at worst {worst:.3g}x Python's error")
        elif further == 0:
            sentences.append(f"{result.label} is no further from the exact answer than Python at any layer")
        elif closer + equal >= further:
            sentences.append(f"{result.label} is no further from the exact answer than Python: closer at "
                             f"{closer}, equal at {equal}, further at {further} of {len(pairs)} layers "
                             f"(at worst {worst:.2g}x Python's error)")
        else:
            sentences.append(f"{result.label} is further from the exact answer than Python at {further} of "
                             f"{len(pairs)} layers (at worst {worst:.3g}x Python's error)")
    return closest, sentences


def _severity(result, python, layers, outputs):
    """'; its outputs are ... ': how far the model's outputs are from the exact answer, against
    what float32 rounding reaches there (the ceiling, or 1000x TF Python's own error)."""
    indices = [layers.index(name) for name in outputs or () if name in layers]
    if not indices:
        return ""
    worst, beyond = 0.0, False
    for i in indices:
        ours, theirs = result.layers[i].vs_float64.max_rel, python.layers[i].vs_float64.max_rel
        if not np.isfinite(ours):
            return "; its outputs are no longer the model's (another shape, NaN or infinity): beyond rounding"
        worst = max(worst, ours)
        beyond = beyond or ours > (max(CEILING, CEILING_FACTOR * theirs) if np.isfinite(theirs) else CEILING)
    if beyond:
        return f"; its outputs are off by {worst:.2g} of their magnitude: beyond rounding, a wrong answer for this input"
    return f"; its outputs are within rounding of the exact answer ({worst:.2g} of their magnitude): harmless for this input"


@dataclass
class GateResult:
    passed: bool
    message: str

    def __bool__(self):
        return self.passed


def gate(results, rtol=None, atol=None, max_ulp=None, allow_mismatch=False):
    """Every runtime's every layer against float64: max |a - r| <= atol + rtol * max |r|
    and max ULPs <= max_ulp, and (unless `allow_mismatch`) no layer judged "mismatch": a
    wrong weight or output within the limits is still wrong. Fails on the first runtime and
    layer that does not hold."""
    rtol_, atol_ = rtol or 0.0, atol or 0.0
    limits = ", ".join(f"{name} {value:g}" for name, value in
                       (("--rtol", rtol), ("--atol", atol), ("--max-ulp", max_ulp)) if value is not None)
    for result in results:
        for layer in result.layers:
            m = layer.vs_float64
            if not allow_mismatch and layer.verdict == Verdict.MISMATCH:
                return GateResult(False, f"FAILED: {result.label} at {layer.layer}: verdict mismatch ({layer.reason}); "
                                         "--allow-mismatch gates on the limits alone")
            if (rtol is not None or atol is not None) and not m.max_abs <= atol_ + rtol_ * m.magnitude:
                return GateResult(False, f"FAILED: {result.label} exceeds {limits} at {layer.layer} "
                                         f"(max abs difference {m.max_abs:.3g}, max relative {m.max_rel:.3g})")
            if max_ulp is not None and not m.ulp_max <= max_ulp:
                return GateResult(False, f"FAILED: {result.label} exceeds --max-ulp {max_ulp:g} at {layer.layer} "
                                         f"({m.ulp_max:.3g} ULPs)")
    no_mismatch = "" if allow_mismatch else ", no mismatch verdict"
    return GateResult(True, f"PASSED: every capture within {limits} of the float64 reference at every layer"
                            + no_mismatch)


JUDGES = 2  # captures judged at once (judge_all)


def check_captures(plan, python, reference, captures, unquantized=None):
    """Each capture as this model's plan captures it, and laid out as Python's, before any math
    (a KitError naming the file)."""
    for capture in [python, reference, *captures]:
        plan.check_capture(capture)
        if capture is not python:
            check_layout(python, capture)
    if unquantized is not None:
        check_layout(reference, unquantized)


def judge_all(python, reference, captures, local, unquantized=None):
    """RuntimeResults for Python and every capture, each judged point by point.

    `local`: the model's local reference (kinds.local_reference: each point alone in float64,
    its weights from `reference`), built once by the caller and kept for every judgement;
    `unquantized`: a quantized model's unquantized float64 capture (its weights are the
    originals the quantized ones are judged against)."""
    plan = local.plan
    check_captures(plan, python, reference, captures, unquantized)
    quantized = Quantized(plan, unquantized) if plan.quantization else None
    for capture in [python, *captures]:  # afresh: an id of a capture judged before (--explain) may be reused
        local.exact_fed[id(capture)] = {}

    def judged(capture):
        precisions = [FLOAT32] + ([FLOAT16] if storage_precision(capture) is FLOAT16 else [])
        return judge(capture, python, reference, local.evaluate_capture(capture, precisions),
                     local.exact_fed[id(capture)], quantized)
    # two captures at once: TensorFlow and numpy leave the GIL while they compute, and each
    # capture's judgement is its own (the float64 layers are only read); the order is kept
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(max_workers=JUDGES, thread_name_prefix="judge")
    try:
        return list(pool.map(judged, [python, *captures]))
    finally:  # a Ctrl-C or a failure does not wait for the other judgement to finish
        pool.shutdown(wait=False, cancel_futures=True)
