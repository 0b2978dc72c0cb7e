"""Step 4 of 4: diff the captures layer by layer and print the original study's report.

    python compare_outputs.py [--out-dir results] [CAPTURE ...] [--full]
                              [--rtol R] [--atol A] [--max-ulp N] [--allow-mismatch]
                              [--json FILE] [--html FILE] [--explain] [--wait-for-captures]

With no CAPTURE files: prints the study's two blocks, tf.Keras Python vs tfjs Node and
tf.Keras Python vs tfjs Browser, one line per tensor (how many values differ, their average
absolute difference); when the folder holds more captures (other backends, flags), then one
table of every capture against Python, a row per layer. With CAPTURE files: a block for
each, then the table (the converted model and Python's capture are taken from the first
CAPTURE's folder unless --out-dir says otherwise). Every capture records the id of the
model it was made from: one made from another model is named stale, not compared.

--explain (docs/explain.md) then reruns each capture with a mismatch with every relevant
tfjs flag changed and on its runtime's other backends, names the change that avoids its
first mismatch, and writes a standalone reproducer of that point to OUT_DIR/repro/.

--full then judges every layer of every capture against the exact answer (the model in
float64, keras_model_float64.json): metrics, a verdict (same bits, float32 rounding,
reduced precision, overflow, mismatch) and who is closest to the truth. --rtol/--atol/
--max-ulp make it a gate: exit 1 naming the first capture and layer beyond them, or with a
mismatch verdict (unless --allow-mismatch). --json
and --html write the whole result for machines and for people.
"""
import argparse
from pathlib import Path

from tfjs_parity import KitError, paths
from tfjs_parity.capture import Capture
from tfjs_parity.files import atomic_write_text, check_output
from tfjs_parity.plan import PLAN_FILE, Plan
from tfjs_parity.cli import non_negative_float, run_main
from tfjs_parity.compare import check_same_model, compare_captures
from tfjs_parity.report import (full_report, layer_table, not_costed_line, quantization_lines, quantization_tables,
                                study_block, to_json)
from tfjs_parity.runners import column_order

BLOCKS = [("tf.Keras Python vs tfjs Node", paths.NODE_CAPTURE),
          ("tf.Keras Python vs tfjs Browser", paths.BROWSER_CAPTURE)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("captures", nargs="*", type=Path, metavar="CAPTURE",
                        help="capture files to compare with Python's (default: every capture in --out-dir)")
    parser.add_argument("--out-dir", type=Path,
                        help="where the captures and the converted model are (default: the folder of the first "
                             f"CAPTURE, else {paths.DEFAULT_OUT_DIR})")
    parser.add_argument("--full", action="store_true",
                        help="after the study's blocks, every metric and verdict against the float64 reference")
    gate = parser.add_argument_group("gate (exit 1 when a capture exceeds a limit against float64, or any "
                                     "layer's verdict is mismatch)")
    gate.add_argument("--rtol", type=non_negative_float, help="max |a - exact| / max |exact| per layer")
    gate.add_argument("--atol", type=non_negative_float, help="max |a - exact| per layer (added to rtol's allowance)")
    gate.add_argument("--max-ulp", type=non_negative_float, help="max distance in float32 ULPs of any value")
    gate.add_argument("--allow-mismatch", action="store_true",
                      help="gate on the limits alone, even where a verdict says mismatch")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the full result as JSON")
    parser.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    parser.add_argument("--explain", action="store_true",
                        help="for each capture with a mismatch: rerun its runtime with each relevant tfjs flag "
                             "changed and on its other backends, say which change avoids the first mismatching "
                             "point, and write a standalone reproducer of it to OUT_DIR/repro/ (implies --full; "
                             "docs/explain.md)")
    parser.add_argument("--wait-for-captures", action="store_true",
                        help="start up now, and read the captures only once a line arrives on stdin: to start "
                             "beside the steps that make them, told when they are done (make run does)")
    args = parser.parse_args()
    gating = any(v is not None for v in (args.rtol, args.atol, args.max_ulp))
    if args.allow_mismatch and not gating:  # a usage error: said before anything is read or printed
        raise KitError("--allow-mismatch changes the gate: give --rtol, --atol or --max-ulp with it")
    if args.wait_for_captures:
        from tfjs_parity.steps import ReadySignal
        go = ReadySignal("--wait-for-captures", "every capture", "run_node.py or run_browser.py")
        if not go.wait():
            raise go.missing()
    out_dir = args.out_dir or (args.captures[0].parent if args.captures else paths.DEFAULT_OUT_DIR)

    python_path = paths.find_capture(out_dir, paths.PYTHON_CAPTURE)
    reference = Capture.load(python_path, made_by=paths.MADE_BY[paths.PYTHON_CAPTURE])
    if args.captures:
        # Python's own capture among them is the reference, not a runtime to compare with itself
        named = [path for path in args.captures if not _same_file(path, python_path)]
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
    for flag, output in (("--json", args.json), ("--html", args.html)):
        if output:
            check_output(output, flag, inputs=[python_path, *(path for path, _ in loaded)])
    diffs = {id(c): compare_captures(reference, c) for c in others}
    sections = [study_block(title, diffs[id(c)]) for title, c in titled]
    if missing:
        sections.append(f"(the study's full table also needs {note})")
    from tfjs_parity.kinds.graph_model import conversion_line
    if conversion_line(reference.metadata.get("conversion")):
        sections.append(conversion_line(reference.metadata["conversion"]))
    if len(others) > len(titled) or args.captures:
        others.sort(key=column_order)
        sections.append(layer_table(reference, [diffs[id(c)] for c in others], others))
    plan_file = out_dir / paths.CONVERTED_DIR / PLAN_FILE
    plan = Plan.load(plan_file) if plan_file.is_file() else None  # captures alone compare without it
    quantized = load_quantized(plan, out_dir, python_path, reference)
    if quantized is not None:
        sections.append("\n".join(quantized[2]))
    print("\n\n".join(sections))

    args.full = args.full or args.explain
    if not (args.full or gating or args.json or args.html):
        return 0
    from tfjs_parity.kinds import local_reference
    from tfjs_parity.verdict import check_captures, closeness, gate as apply_gate, judge_all
    exact_path = paths.find_capture(out_dir, paths.REFERENCE_CAPTURE)
    exact = Capture.load(exact_path, made_by=paths.MADE_BY[paths.REFERENCE_CAPTURE])
    check_same_model(out_dir / paths.CONVERTED_DIR, [(python_path, reference), (exact_path, exact)])
    unquantized = quantized and quantized[0]
    judged = sorted(others, key=column_order)
    check_captures(Plan.load(plan_file), reference, exact, judged, unquantized)  # before the float64 model is built
    local = local_reference(out_dir / paths.CONVERTED_DIR, exact)
    results = judge_all(reference, exact, judged, local, unquantized)
    closest, sentences = closeness(results)
    figures, quantization = quantized and quantized[1], None
    if quantized is not None:  # for the JSON and the page: each weight's step and error, what quantization costs
        from tfjs_parity.quantization import weight_rows
        rows = weight_rows(plan, [reference, *others], unquantized)
        quantization = {"given": plan.quantization["given"], "weights": rows, "cost": figures}
    plan = plan or Plan.load(plan_file)
    groups = {p.name: p.group for p in plan.points} if plan.kind == "graph" else None
    gate_result = apply_gate(results, args.rtol, args.atol, args.max_ulp, args.allow_mismatch) if gating else None
    if args.full:
        print("\n" + full_report(results, closest, sentences, groups))
        if quantized is not None:
            print("\n" + quantization_tables(rows, figures, results))
    explanations = []
    if args.explain:
        explanations = explain_mismatches(out_dir, reference, exact, results, judged, local,
                                          unquantized)
    if args.json:
        atomic_write_text(args.json, to_json(results, closest, sentences, gate_result, groups, quantization,
                                             [e.to_json() for e in explanations]))
        print(f"\nwrote {args.json}")
    if args.html:
        from tfjs_parity.html_report import html_report
        atomic_write_text(args.html, html_report(results, closest, sentences, gate_result, quantization))
        print(f"\nwrote {args.html} (open it in a browser)")
    if gate_result is not None:
        print("\n" + gate_result.message)
        return 0 if gate_result else 1
    return 0


def explain_mismatches(out_dir, python, exact, results, captures, local, unquantized):
    """--explain: for every capture with a mismatch, the changes that avoid it (explain.py) and
    a reproducer of its first mismatching point (repro.py), printed as they come."""
    from tfjs_parity.explain import check_explainable, explain, explanation_lines, remove
    from tfjs_parity.files import remove_stale_staging, staging_dir
    from tfjs_parity.repro import check_before, write_repro
    explanations = []
    mismatched = [(r, c) for r, c in zip(results[1:], captures) if r.first("mismatch") is not None]
    for _, capture in mismatched:  # before any trial runs: a tampered capture is one line, not a traceback after
        check_explainable(capture)
    if not mismatched:
        print("\nexplain: no capture has a mismatch; nothing to explain")
    else:
        check_before(out_dir, mismatched)  # the reproducers' folders, before the trials, not after them
    remove_stale_staging(out_dir)  # a killed --explain's working folder
    for result, capture in mismatched:
        workdir = staging_dir(out_dir, "explain")
        try:
            explanation = explain(out_dir / paths.CONVERTED_DIR, python, exact, result, capture, workdir, local,
                                  unquantized)
            print("\n" + "\n".join(explanation_lines(explanation)))
            explanation.repro = write_repro(out_dir, python, exact, capture, explanation.point, workdir, local)
            print(explanation.repro["line"])
        finally:
            remove(workdir)
        explanations.append(explanation)
    return explanations


def load_quantized(plan, out_dir, python_path, python):
    """For a quantized model: (the unquantized model's float64 capture or None, what
    quantization costs or None, the report's lines on it); None for a model not quantized."""
    from tfjs_parity.quantization import UNQUANTIZED_CAPTURE, cost
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


if __name__ == "__main__":
    run_main(main)
