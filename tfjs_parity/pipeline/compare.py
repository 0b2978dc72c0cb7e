"""Step 4 as a library function: `run(CompareOptions(...))` diffs the captures layer by layer
and prints the original study's report; with `full`, judges every point of every capture
against the exact float64 answer; with a gate, says whether every capture is within it;
with `explain`, reruns each mismatching capture with its flags changed and writes a
reproducer. What it prints goes to `emit` (print by default), section by section, as the
script printed it; it returns the step's exit status (1: the gate failed)."""
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import KitError, paths
from ..capture import Capture
from ..compare import check_same_model, compare_captures
from ..files import atomic_write_text, check_output
from ..plan import PLAN_FILE, Plan
from ..report import (full_report, layer_table, not_costed_line, quantization_lines, quantization_tables,
                      study_block, to_json)
from ..runners import column_order

BLOCKS = [("tf.Keras Python vs tfjs Node", paths.NODE_CAPTURE),
          ("tf.Keras Python vs tfjs Browser", paths.BROWSER_CAPTURE)]


@dataclass
class CompareOptions:
    """compare_outputs.py's options, by the names of its flags (None: not given)."""
    captures: list = field(default_factory=list)   # capture files (default: every capture in out_dir)
    out_dir: Path = None
    full: bool = False
    rtol: float = None
    atol: float = None
    max_ulp: float = None
    allow_mismatch: bool = False
    json: Path = None
    html: Path = None
    explain: bool = False
    wait_for_captures: bool = False


def options_from(args):
    """CompareOptions from compare_outputs.py's parsed arguments (the same names)."""
    names = {f.name for f in fields(CompareOptions)}
    return CompareOptions(**{name: value for name, value in vars(args).items() if name in names})


def run(options, emit=print):
    """Step 4 on `options`: its exit status (0, or 1 when the gate failed); KitError for what
    cannot be compared."""
    gating = any(v is not None for v in (options.rtol, options.atol, options.max_ulp))
    if options.allow_mismatch and not gating:  # a usage error: said before anything is read or printed
        raise KitError("--allow-mismatch changes the gate: give --rtol, --atol or --max-ulp with it")
    if options.wait_for_captures:
        from ..steps import ReadySignal
        go = ReadySignal("--wait-for-captures", "every capture", "run_node.py or run_browser.py")
        if not go.wait():
            raise go.missing()
    out_dir = options.out_dir or (options.captures[0].parent if options.captures else paths.DEFAULT_OUT_DIR)

    python_path = paths.find_capture(out_dir, paths.PYTHON_CAPTURE)
    reference = Capture.load(python_path, made_by=paths.MADE_BY[paths.PYTHON_CAPTURE])
    if options.captures:
        # Python's own capture among them is the reference, not a runtime to compare with itself
        named = [path for path in options.captures if not _same_file(path, python_path)]
        loaded = [(path, Capture.load(path)) for path in named]
        others = [c for _, c in loaded]
        titled = [(f"tf.Keras Python vs tfjs {c.label}", c) for c in others]
        missing = []
    else:
        # what the folder has: the study's blocks for the study's captures there, every other capture
        study = [(title, paths.find_capture(out_dir, name), name) for title, name in BLOCKS]
        present = [(title, path, name) for title, path, name in study if path.is_file()]
        loaded = [(path, Capture.load(path, made_by=paths.MADE_BY[name])) for _, path, name in present]
        titled = [(title, c) for (title, _, _), (_, c) in zip(present, loaded)]
        loaded += [(path, Capture.load(path)) for path in paths.extra_captures(out_dir, [n for _, n in BLOCKS])]
        others = [c for _, c in loaded]
        if not others:
            raise KitError(f"{out_dir} holds Python's capture and nothing to compare it with; run "
                           "`python run_node.py` or `python run_browser.py` first")
        missing = [name for _, path, name in study if not path.is_file()]
        if missing:
            note = "; ".join(f"{name} (`python {paths.MADE_BY[name]}`)" for name in missing)
    check_same_model(out_dir / paths.CONVERTED_DIR, [(python_path, reference), *loaded])
    for flag, output in (("--json", options.json), ("--html", options.html)):
        if output:
            check_output(output, flag, inputs=[python_path, *(path for path, _ in loaded)])
    diffs = {id(c): compare_captures(reference, c) for c in others}
    plan_file = out_dir / paths.CONVERTED_DIR / PLAN_FILE
    plan = Plan.load(plan_file) if plan_file.is_file() else None  # captures alone compare without it
    sections = [study_block(headed(title, plan), diffs[id(c)]) for title, c in titled]
    if missing:
        sections.append(f"(the study's full table also needs {note})")
    from ..kinds.graph_convert import conversion_line
    if conversion_line(reference.metadata.get("conversion")):
        sections.append(conversion_line(reference.metadata["conversion"]))
    if len(others) > len(titled) or options.captures:
        others.sort(key=column_order)
        sections.append(layer_table(reference, [diffs[id(c)] for c in others], others))
    quantized = load_quantized(plan, out_dir, python_path, reference)
    if quantized is not None:
        sections.append("\n".join(quantized[2]))
    emit("\n\n".join(sections))

    options.full = options.full or options.explain
    if not (options.full or gating or options.json or options.html):
        return 0
    from ..kinds import local_reference
    from ..verdict import check_captures, closeness, gate as apply_gate, judge_all
    exact_path = paths.find_capture(out_dir, paths.REFERENCE_CAPTURE)
    exact = Capture.load(exact_path, made_by=paths.MADE_BY[paths.REFERENCE_CAPTURE])
    check_same_model(out_dir / paths.CONVERTED_DIR, [(python_path, reference), (exact_path, exact)])
    unquantized = quantized and quantized[0]
    judged = sorted(others, key=column_order)
    check_captures(Plan.load(plan_file), reference, exact, judged, unquantized)  # before the float64 model is built
    local = local_reference(out_dir / paths.CONVERTED_DIR, exact)
    results = judge_all(reference, exact, judged, local, unquantized)
    closest, sentences = closeness(results, local.plan.outputs())
    figures, quantization = quantized and quantized[1], None
    if quantized is not None:  # for the JSON and the page: each weight's step and error, what quantization costs
        from ..quantization import weight_rows
        rows = weight_rows(plan, [reference, *others], unquantized)
        quantization = {"given": plan.quantization["given"], "weights": rows, "cost": figures}
    plan = plan or Plan.load(plan_file)
    groups = {p.name: p.group for p in plan.points} if plan.kind == "graph" else None
    gate_result = apply_gate(results, options.rtol, options.atol, options.max_ulp, options.allow_mismatch) if gating else None
    if options.full:
        emit("\n" + full_report(results, closest, sentences, groups))
        if quantized is not None:
            emit("\n" + quantization_tables(rows, figures, results))
    explanations = []
    if options.explain:
        explanations = explain_mismatches(out_dir, reference, exact, results, judged, local, unquantized, emit)
    if options.json:
        atomic_write_text(options.json, to_json(results, closest, sentences, gate_result, groups, quantization,
                                             [e.to_json() for e in explanations]))
        emit(f"\nwrote {options.json}")
    if options.html:
        from ..html_report import html_report
        atomic_write_text(options.html, html_report(results, closest, sentences, gate_result, quantization))
        emit(f"\nwrote {options.html} (open it in a browser)")
    if gate_result is not None:
        emit("\n" + gate_result.message)
        return 0 if gate_result else 1
    return 0


def headed(title, plan):
    """A block's heading naming the model's kind: the study's own for a Keras (layers) model,
    TensorFlow Python's graph for a graph model (no tf.Keras runs it)."""
    if plan is None or plan.kind != "graph":
        return title
    return title.replace("tf.Keras Python vs", "TensorFlow Python (graph model) vs", 1)


def explain_mismatches(out_dir, python, exact, results, captures, local, unquantized, emit=print):
    """--explain: for every capture with a mismatch, the changes that avoid it (explain.py) and
    a reproducer of its first mismatching point (repro.py), printed as they come."""
    from ..explain import check_explainable, explain, explanation_lines, remove
    from ..files import remove_stale_staging, staging_dir
    from ..repro import check_before, write_repro
    explanations = []
    mismatched = [(r, c) for r, c in zip(results[1:], captures) if r.first("mismatch") is not None]
    for _, capture in mismatched:  # before any trial runs: a tampered capture is one line, not a traceback after
        check_explainable(capture)
    if not mismatched:
        emit("\nexplain: no capture has a mismatch; nothing to explain")
    else:
        check_before(out_dir, mismatched)  # the reproducers' folders, before the trials, not after them
    remove_stale_staging(out_dir)  # a killed --explain's working folder
    for result, capture in mismatched:
        workdir = staging_dir(out_dir, "explain")
        try:
            explanation = explain(out_dir / paths.CONVERTED_DIR, python, exact, result, capture, workdir, local,
                                  unquantized)
            emit("\n" + "\n".join(explanation_lines(explanation)))
            explanation.repro = write_repro(out_dir, python, exact, capture, explanation.point, workdir, local)
            emit(explanation.repro["line"])
        finally:
            remove(workdir)
        explanations.append(explanation)
    return explanations


def load_quantized(plan, out_dir, python_path, python):
    """For a quantized model: (the unquantized model's float64 capture or None, what
    quantization costs or None, the report's lines on it); None for a model not quantized."""
    from ..quantization import UNQUANTIZED_CAPTURE, cost
    if plan is None or not plan.quantization:
        return None
    path = paths.find_capture(out_dir, UNQUANTIZED_CAPTURE)
    if not plan.quantization.get("original", True) or not path.is_file():
        return None, None, [not_costed_line(plan)]
    unquantized = Capture.load(path, made_by="create_keras_model.py")
    check_same_model(out_dir / paths.CONVERTED_DIR, [(python_path, python), (path, unquantized)])
    exact = Capture.load(paths.find_capture(out_dir, paths.REFERENCE_CAPTURE),
                         made_by=paths.MADE_BY[paths.REFERENCE_CAPTURE])
    figures = cost(plan, exact, unquantized)
    return unquantized, figures, quantization_lines(plan, figures)


def _same_file(a, b):
    try:
        return a.samefile(b)
    except OSError:
        return False
