"""compare_outputs.py --explain: from a wrong number to a workaround.

For a capture whose verdict is mismatch, its first mismatching point is the question. The
same runtime runs the model again with each relevant tfjs flag changed (one at a time, the
capture's own flags kept), and on each of its other backends, and each new capture is judged
as any other. A change that makes that point rounding again, with no mismatch anywhere else,
is a workaround a user can ship today; one that moves the mismatch elsewhere is said so.

Which flags: FLAGS below, per backend, and only those the capture's run consulted (tfjs
records a flag in `evaluated_flags` once anything reads it: a flag no kernel read cannot
change the answer). A boolean is tried at its other value; the WASM switches only off (on
where the runtime lacks SIMD or threads would not load); numbers at the values listed.
Devices cannot be driven from here: their captures get the list of changes to try by hand.
"""
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import KitError

OFF_ONLY = "off only"  # the WASM switches: the runtime's support decides "on"

# The flags tfjs maintainers ask about first (tfjs issues: "try WEBGL_PACK=false"), by the
# backend they belong to: None means "the other boolean", a list the values to try.
FLAGS = {
    "webgl": {
        "WEBGL_PACK": None, "WEBGL_CONV_IM2COL": None, "WEBGL_USE_SHAPES_UNIFORMS": None, "WEBGL_EXP_CONV": None,
        "WEBGL_PACK_DEPTHWISECONV": None, "WEBGL_FORCE_F16_TEXTURES": None, "WEBGL_PACK_BINARY_OPERATIONS": None,
        "WEBGL_PACK_UNARY_OPERATIONS": None, "WEBGL_PACK_ARRAY_OPERATIONS": None, "WEBGL_PACK_IMAGE_OPERATIONS": None,
        "WEBGL_PACK_REDUCE": None, "WEBGL_PACK_CLIP": None, "WEBGL_PACK_NORMALIZATION": None,
        "WEBGL_LAZILY_UNPACK": None, "WEBGL_CPU_FORWARD": None,
    },
    "webgpu": {
        "WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD": [0], "WEBGPU_USE_NAIVE_CONV2D_DEBUG": None,
        "WEBGPU_CONV_SEPARATE_IM2COL_SHADER": None, "WEBGPU_CPU_FORWARD": None,
    },
    "wasm": {"WASM_HAS_SIMD_SUPPORT": OFF_ONLY, "WASM_HAS_MULTITHREAD_SUPPORT": OFF_ONLY},
}
AVOIDED = ("same bits", "float32 rounding", "reduced precision", "no bound")  # not a mismatch, not an overflow


@dataclass
class Trial:
    """One change tried: a flag's value (flags) or another backend."""
    change: str            # "WEBGL_PACK=false", or "backend cpu"
    backend: str
    flags: dict
    verdict: str = ""      # at the point explained; "" when the run failed
    reason: str = ""
    first_mismatch: str = ""  # the first mismatching point of the whole run, if any
    error: str = ""

    @property
    def avoids(self):
        return not self.error and self.verdict in AVOIDED

    @property
    def ships(self):
        """A workaround: the point is right again and nothing else is wrong."""
        return self.avoids and not self.first_mismatch

    def code(self):
        """What a user writes to ship this change."""
        if self.change.startswith("backend "):
            return f"await tf.setBackend('{self.backend}')"
        name, value = next(iter((k, v) for k, v in self.flags.items() if self.change.startswith(k + "=")))
        return f"tf.env().set('{name}', {_js(value)})  // before the backend starts"


@dataclass
class Explanation:
    label: str             # the capture's
    point: str
    layer_class: str
    reason: str            # its verdict's
    trials: list = field(default_factory=list)
    not_tried: list = field(default_factory=list)  # (flag, why)
    note: str = ""         # e.g. "a device: try these by hand"
    repro: dict = None     # repro.py's result, when one was written

    def to_json(self):
        return {"capture": self.label, "point": self.point, "class": self.layer_class, "reason": self.reason,
                "trials": [{"change": t.change, "backend": t.backend, "flags": t.flags, "verdict": t.verdict,
                            "reason": t.reason, "first_mismatch": t.first_mismatch, "error": t.error,
                            "avoids": t.avoids, "workaround": t.ships} for t in self.trials],
                "not_tried": [{"flag": f, "why": why} for f, why in self.not_tried], "note": self.note,
                "repro": self.repro}


def _js(value):
    return "true" if value is True else "false" if value is False else repr(value)


_VARIANT = re.compile(r"[A-Za-z0-9_.+-]{1,200}")  # what variant_of and a device's name make


def check_explainable(capture):
    """KitError naming the capture's file unless the metadata --explain acts on is what a
    runner writes (a capture is a file anyone can edit): flags a map of names to booleans,
    numbers or short text, a variant a short plain name."""
    where = capture.source or capture.label
    flags = capture.metadata.get("flags") or {}
    if not isinstance(flags, dict) or not all(
            isinstance(k, str) and len(k) <= 100 and (isinstance(v, (bool, int, float)) or
                                                      isinstance(v, str) and len(v) <= 100)
            for k, v in flags.items()):
        raise KitError(f"{where}: its metadata's flags are not a map of flag names to values (true, false, a number "
                       "or short text), as run_node.py and run_browser.py write them; run that step again")
    variant = capture.metadata.get("variant")
    if variant is not None and not (isinstance(variant, str) and _VARIANT.fullmatch(variant)):
        raise KitError(f"{where}: its metadata's variant is not a short plain name (letters, digits, _ . + -, at "
                       "most 200), as the runners write it; run that step again")


def flag_trials(capture):
    """([Trial] with the flags to try on this capture's own backend, [(flag, why not)])."""
    backend = capture.metadata.get("backend")
    consulted = capture.metadata.get("evaluated_flags") or {}
    own = dict(capture.metadata.get("flags") or {})
    trials, not_tried = [], []
    for name, values in FLAGS.get(backend, {}).items():
        current = own.get(name, consulted.get(name))
        if name not in consulted and name not in own:
            not_tried.append((name, "not read by this run: it cannot change the answer"))
            continue
        if values is None or values == OFF_ONLY:
            if not isinstance(current, bool):
                not_tried.append((name, f"its value here is {current!r}, not a boolean"))
                continue
            if values == OFF_ONLY and current is False:
                not_tried.append((name, "already off"))
                continue
            values = [not current]
        for value in values:
            if value == current:
                continue
            trials.append(Trial(f"{name}={_js(value)}", backend, dict(own, **{name: value})))
    return trials, not_tried


def backend_trials(capture, runner):
    """A Trial per other backend of the capture's runtime, with the capture's flags that are
    not its own backend's (those mean nothing elsewhere)."""
    from .wire import FLAG_PREFIXES
    backend = capture.metadata.get("backend")
    prefix = FLAG_PREFIXES.get(backend)
    flags = {k: v for k, v in (capture.metadata.get("flags") or {}).items() if not (prefix and k.startswith(prefix))}
    return [Trial(f"backend {other}", other, flags) for other in runner.BACKENDS if other != backend]


def explain(converted_dir, python, reference, result, capture, workdir, local, unquantized=None):
    """The Explanation of `capture`'s first mismatch (`result`: its RuntimeResult): every
    trial run by the capture's own runner in `workdir` (removed after) and judged with
    `local`, the model's local reference (built once for every capture)."""
    from .runners import RUNNERS, device_runner, webdriver_runner
    first = result.first("mismatch")
    point = next(p for p in _plan(converted_dir).points if p.name == first.layer)
    explanation = Explanation(capture.label, first.layer, point.class_name, first.reason)
    runtime = capture.metadata.get("runtime")
    runner = RUNNERS.get(runtime)
    trials, explanation.not_tried = flag_trials(capture)
    trials += backend_trials(capture, runner) if runner is not None else []
    explanation.trials = trials
    if runtime in (device_runner.NAME, webdriver_runner.NAME) or runner is None or not hasattr(runner, "run"):
        again = "--webdriver URL --capabilities ..." if runtime == webdriver_runner.NAME else "--device"
        explanation.note = (f"a {runtime} capture: the kit cannot run that browser again from here; try these on the "
                            f"device (run_browser.py {again} --flag NAME=VALUE, or --backend)")
        return explanation
    captures = _run_trials(runner, converted_dir, capture, trials, Path(workdir))
    ran = [t for t in trials if id(t) in captures]
    if ran:
        from .verdict import judge_all
        judged = judge_all(python, reference, [captures[id(t)] for t in ran], local, unquantized)[1:]
        for trial, judged_run in zip(ran, judged):
            layer = next((l for l in judged_run.layers if l.layer == first.layer), None)
            trial.verdict, trial.reason = (layer.verdict, layer.reason) if layer else ("", "")
            mismatch = judged_run.first("mismatch")
            trial.first_mismatch = mismatch.layer if mismatch else ""
    return explanation


def _plan(converted_dir):
    from .plan import PLAN_FILE, Plan
    return Plan.load(Path(converted_dir) / PLAN_FILE)


def _run_trials(runner, converted_dir, capture, trials, workdir):
    """{id(trial): Capture} of every trial that ran; a trial that failed gets its error. The
    other backends share one Job (one process, one browser); each flag change is its own."""
    from .paths import MODEL_FILE
    from .runners import Job
    from .runners.base import results as all_results
    from .steps import variant_metadata
    model_json = Path(converted_dir) / MODEL_FILE
    groups = {}
    for trial in trials:
        key = (tuple(sorted(trial.flags.items())), trial.change.startswith("backend "))
        groups.setdefault(key, []).append(trial)
    captures = {}
    for group in groups.values():
        flags = group[0].flags
        folder = workdir / f"run{len(captures)}_{group[0].backend}"
        folder.mkdir(parents=True, exist_ok=True)
        metadata = dict(variant_metadata(flags))
        if capture.metadata.get("cpu"):
            metadata["cpu"] = capture.metadata["cpu"]
        job = Job(model_json, folder, [t.backend for t in group], flags, repeat=1, budget=1.0, metadata=metadata,
                  repeat_check=1)
        results = all_results(job, runner)
        for trial in group:
            outcome = results.get(trial.backend, KitError("no capture came back"))
            if isinstance(outcome, KitError):
                trial.error = str(outcome)
            else:
                captures[id(trial)] = outcome
    return captures


def remove(workdir):
    shutil.rmtree(workdir, ignore_errors=True)


def explanation_lines(explanation):
    """The report's lines for one Explanation."""
    lines = [f"explain {explanation.label}: first mismatch at {explanation.point} ({explanation.layer_class}): "
             f"{explanation.reason}"]
    if explanation.note:
        lines.append(f"  {explanation.note}")
    rows = [("change", f"at {explanation.point}", "whole model", "")]
    for t in explanation.trials:
        if explanation.note:
            rows.append((t.change, "(not run)", "", ""))
            continue
        if t.error:
            rows.append((t.change, "did not run", t.error[:80], ""))
            continue
        whole = f"mismatch from {t.first_mismatch}" if t.first_mismatch else "no mismatch"
        mark = "<- avoids it" if t.ships else "<- avoids it there, not elsewhere" if t.avoids else ""
        rows.append((t.change, t.verdict, whole, mark))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines += ["  " + "  ".join(r[i].ljust(widths[i]) for i in range(3)) + ("  " + r[3] if r[3] else "")
              for r in rows]
    for name, why in explanation.not_tried:
        lines.append(f"  not tried: {name} ({why})")
    shipped = [t for t in explanation.trials if t.ships]
    if shipped:
        lines.append("  workaround: " + "; or ".join(f"{t.change} ({t.code()})" for t in shipped))
    elif not explanation.note:
        lines.append("  no flag or backend tried avoids it here: a bug to file (the reproducer below)")
    return lines
