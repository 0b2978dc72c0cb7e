"""Text renderings of comparisons. The default is the original study's exact format."""
from .verdict import Verdict


def study_block(title, diff):
    """The study's block: a banner, then one line per tensor, e.g.
    `dense_1_output[0]: different values = 40, average difference = 1.7833709716796876e-06`."""
    lines = [f"{'*' * 10} {title} {'*' * 10}"]
    for t in diff.tensors:
        lines.append(f"{t.name}: different values = {t.different_values}, "
                     f"average difference = {t.average_difference!r}"
                     + (f" (shape {t.shapes[0]} vs {t.shapes[1]})" if t.shapes else ""))
    return "\n".join(lines)


def _layer_rows(diff):
    """{layer: (different values, average difference)} over each layer's outputs."""
    rows = {}
    for t in diff.tensors:
        if t.key.endswith("_output"):
            count, total, size = rows.get(t.key[: -len("_output")], (0, 0.0, 0))
            rows[t.key[: -len("_output")]] = (count + t.different_values, total + t.average_difference * t.size,
                                               size + t.size)
    # a layer whose outputs hold no value (a detector that kept no box): nothing differs
    return {layer: (count, total / size if size else 0.0) for layer, (count, total, size) in rows.items()}


def layer_table(reference, diffs, captures):
    """One compact table against `reference`: rows = layers, columns = captures; each cell is
    'differing values / average difference' of the layer's output; then whether the weights
    match, and each runtime's median prediction time."""
    columns = [_layer_rows(diff) for diff in diffs]
    layers = list(columns[0]) if columns else []
    body = [[layer, *(_cell(*col[layer]) for col in columns)] for layer in layers]
    body.append(["weights", *("identical" if all(t.different_values == 0 for t in d.tensors if t.key.endswith("_weights"))
                              else "DIFFER" for d in diffs)])
    # the model as shipped (its own prediction): warm median, against Python's; cold (load and
    # the first prediction: shader compilation, weight upload); what tf.memory() says is held
    body.append(["median ms", *(_ms(c) for c in captures)])
    body.append(["x python", *(_speed(c, reference) for c in captures)])
    body.append(["cold ms", *(_ms(c, "cold_ms") for c in captures)])
    body.append(["memory MiB", *(_memory(c) for c in captures)])
    body.append(["repeatable", *(_repeatable(c) for c in captures)])
    title = (f"{reference.label} vs each capture: per layer output, values that differ / average difference"
             f" (reference median {_ms(reference)} ms)")
    return "\n".join([title, _aligned(_header([c.metadata for c in captures]) + body)])


def _header(metadatas):
    """The header row, a column per capture: runtime/backend[/variant] (node/wasm and
    browser/wasm are two columns, each named whole)."""
    return [["layer", *("/".join(p for p in (m.get("runtime", "?"), m.get("backend"), m.get("variant")) if p)
                        for m in metadatas)]]


def _aligned(rows):
    """Rows of cells as left-aligned text columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _cell(count, average):
    return "0" if count == 0 else f"{count} / {average:.2g}"


def _ms(capture, field="median_ms"):
    timing = capture.metadata.get("timing", {})
    value = timing.get(field)
    if value is None:
        return "-"
    runs, repeat = len(timing.get("runs_ms") or []), timing.get("repeat")
    # a median of fewer runs than asked for: the budget (--budget) cut it, and the table says so
    fewer = field == "median_ms" and isinstance(repeat, int) and 0 < runs < repeat
    return f"{value:.2f}" + (f" ({runs} run{'s' if runs > 1 else ''})" if fewer else "")


def _speed(capture, python):
    """A capture's warm median as a multiple of Python's ('2.1x': slower, '0.5x': faster)."""
    ours, theirs = (c.metadata.get("timing", {}).get("median_ms") for c in (capture, python))
    return "-" if not ours or not theirs else f"{ours / theirs:.2g}x"


def _repeatable(capture):
    """'yes (2 runs)', 'NO: dense_3' (the first point whose bits differed), '-' when not checked."""
    repeat = capture.metadata.get("repeat") or {}
    if repeat.get("identical") is None:
        return "-"
    return f"yes ({repeat.get('runs')} runs)" if repeat["identical"] else f"NO: {repeat.get('first_difference')}"


def _memory(capture):
    """MiB tfjs holds once the model ran (+ the GPU's, where it says): '12.3' or '12.3 (GPU 40.1)'."""
    memory = capture.metadata.get("memory") or {}
    if not isinstance(memory.get("numBytes"), (int, float)):
        return "-"
    gpu = memory.get("numBytesInGPU")
    return f"{memory['numBytes'] / 2 ** 20:.3g}" + (f" (GPU {gpu / 2 ** 20:.3g})" if isinstance(gpu, (int, float)) else "")


SHORT_VERDICTS = {Verdict.SAME_BITS: "same bits", Verdict.ROUNDING: "rounding", Verdict.QUANTIZED: "quantized",
                  Verdict.NO_BOUND: "no bound",
                  Verdict.REDUCED: "reduced", Verdict.OVERFLOW: "OVERFLOW", Verdict.MISMATCH: "MISMATCH"}


def full_report(results, closest, sentences, groups=None):
    """Per capture, one line per layer: the metrics against Python and against float64, how
    much of the float32 rounding bound the layer used, and the verdict. Then a verdict
    matrix, who is closest to the exact answer, and one sentence per runtime. `groups`
    ({point: group}, a graph model's): the verdict matrix has a row per group, so a graph of
    thousands of nodes reads as the layers they came from."""
    sections = []
    short = short_names([layer.layer for layer in results[0].layers])
    width = max([10] + [len(name) + 1 for name in short.values()])
    for result in results:
        # "x bound": the largest error against the float32 rounding bound, as a ratio (<= 1: rounding)
        lines = [f"{result.label}  (stores {result.precision}; verdict: {result.verdict})",
                 f"{'layer':<{width}}{'vs Python: differ':>18}{'average':>10}  |{'vs float64: max abs':>20}"
                 f"{'max rel':>10}{'ULP max':>10}{'ULP med':>9}  |{'x bound':>8}  verdict"]
        for layer in result.layers:
            p, f = layer.vs_python, layer.vs_float64
            lines.append(f"{short[layer.layer]:<{width}}{p.different_values:>18}{_g(p.average_difference):>10}  |"
                         f"{_g(f.max_abs):>20}{_g(f.max_rel):>10}{_g(f.ulp_max):>10}{_g(f.ulp_median):>9}  |"
                         f"{_g(layer.bound_ratio) if layer.bound_ratio == layer.bound_ratio else '-':>8}  {layer.verdict}"
                         + (f" ({layer.reason})" if layer.verdict in (Verdict.OVERFLOW, Verdict.MISMATCH, Verdict.NO_BOUND) else "")
                         + ("; weights quantized" if layer.weights == Verdict.QUANTIZED else ""))
        sections.append("\n".join(lines))
    sections.append(verdict_matrix(results) if not groups else grouped_matrix(results, groups))
    layers = "\n".join(f"  {layer}: {label}" for layer, label in closest.items())
    sections.append("Closest to the exact float64 answer, per layer:\n" + layers)
    sections.append("\n".join(sentences))
    return "\n\n".join(sections)


def _short(name, limit=40):
    """A layer name cut in the middle when longer than `limit`, so columns stay readable."""
    return name if len(name) <= limit else name[: limit // 2 - 1] + "…" + name[-(limit // 2):]


def short_names(names, limit=40):
    """{name: its shortened form}, each form naming one name only: a long name is cut in the
    middle (_short); names whose cut forms collide keep more of their tail, where graph nodes
    differ (`.../conv2d_30/BiasAdd` and `.../conv2d_31/BiasAdd`), until each is told apart."""
    short = {name: _short(name, limit) for name in names}
    taken = {}
    for name, form in short.items():
        taken.setdefault(form, []).append(name)
    for form, same in taken.items():
        if len(same) < 2:
            continue
        for keep in range(limit // 2, max(map(len, same)) + 1):
            forms = {name: name if len(name) <= keep + limit // 2 else name[: limit // 2 - 1] + "…" + name[-keep:]
                     for name in same}
            if len(set(forms.values())) == len(same) and not set(forms.values()) & (set(short.values()) - {form}):
                short.update(forms)
                break
        else:
            short.update({name: name for name in same})
    return short


def verdict_matrix(results):
    """Verdicts at a glance: rows = layers, columns = captures."""
    short = short_names([layer.layer for layer in results[0].layers])
    layers = [short[layer.layer] for layer in results[0].layers]
    body = [[name, *(SHORT_VERDICTS[r.layers[i].verdict] for r in results)] for i, name in enumerate(layers)]
    notes = _first_problems(results)
    return "\n".join(["Verdicts (against float64; 'same bits' = identical to TF Python):",
                      _aligned(_header([r.metadata for r in results]) + body), *notes])


def _first_problems(results):
    """A line per capture and verdict (overflow, mismatch): the point where it starts."""
    notes = []
    for r in results:
        for verdict in (Verdict.OVERFLOW, Verdict.MISMATCH):
            first = r.first(verdict)
            if first:
                notes.append(f"{r.label}: {verdict} starts at {first.layer}: {first.reason}")
    return notes


def grouped_matrix(results, groups):
    """Verdicts at a glance for a graph model: a row per group of nodes (the Keras layer or
    name scope they came from), each cell the worst verdict over the group's nodes."""
    members = {}  # group -> its nodes, in first-seen order (one pass each: linear in the nodes)
    for layer in results[0].layers:
        members.setdefault(groups.get(layer.layer, layer.layer), []).append(layer.layer)
    order = list(members)
    verdicts = [{layer.layer: layer.verdict for layer in r.layers} for r in results]
    body = []
    short = short_names(order)
    for group, names in members.items():
        cells = [SHORT_VERDICTS[Verdict.worst(v[name] for name in names if name in v)] for v in verdicts]
        body.append([short[group] + (f" ({len(names)} nodes)" if len(names) > 1 else ""), *cells])
    notes = _first_problems(results)
    return "\n".join([f"Verdicts by layer ({len(results[0].layers)} graph nodes in {len(order)} groups: the worst "
                      "of each group's nodes; against float64, 'same bits' = identical to TF Python):",
                      _aligned(_header([r.metadata for r in results]) + body), *notes])


def _g(value):
    return f"{value:.2g}" if isinstance(value, float) else str(value)


def to_json(results, closest, sentences, gate_result=None, groups=None, quantization=None, explanations=None):
    """Everything, for machines: per capture its metadata (its inputs left out: they are in input.json) and per layer
    both metric sets, the bound ratio and the verdict; for a quantized model, `quantization`
    (each quantized weight's step and largest error, and what quantization costs); with
    --explain, `explanations` (each mismatch's trials and reproducer)."""
    import dataclasses
    import json
    import math

    def clean(value):  # JSON has no NaN or infinity: null and strings
        if isinstance(value, float) and not math.isfinite(value):
            return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    document = {
        "captures": [{"label": r.label, "precision": r.precision, "verdict": r.verdict,
                      "metadata": {k: v for k, v in r.metadata.items() if k not in ("input", "inputs")},
                      "layers": [dict(dataclasses.asdict(layer), **({"group": groups.get(layer.layer)} if groups else {}))
                                 for layer in r.layers]} for r in results],
        "closest_to_float64": closest,
        "summary": sentences,
        "gate": None if gate_result is None else {"passed": gate_result.passed, "message": gate_result.message},
    }
    if quantization is not None:
        document["quantization"] = quantization
    if explanations:
        document["explanations"] = explanations
    return json.dumps(clean(document), indent=1, allow_nan=False)


def quantization_lines(plan, figures):
    """The report's lines on what quantization costs (figures: quantization.cost())."""
    section = plan.quantization
    lines = [f"quantization ({section['given']}, {len(section['weights'])} weights): what it costs, the quantized "
             "model's exact answer against the unquantized one's"]
    by_name = {p["point"]: p for p in figures["points"]}
    for out in figures["outputs"]:
        line = (f"  output {out['output']}: moves by at most {out['max_relative']:.3g} of its magnitude, "
                f"{out['mean_relative']:.3g} on average")
        if "top1_same" in out:
            line += (f"; top-1 class ({out['classifier']}) the same at {out['top1_same']} of {out['top1_of']} "
                     "inputs given")
        lines.append(line)
    if figures["largest"]:
        lines.append(f"  largest at {figures['largest']} ({by_name[figures['largest']]['relative']:.3g} of its "
                     f"magnitude); grows most at {figures['grows_most']} (+{by_name[figures['grows_most']]['added']:.3g})")
    return lines


def not_costed_line(plan):
    """The report's line for a quantized model whose cost cannot be measured."""
    from .quantization import UNQUANTIZED_CAPTURE
    if plan.quantization.get("original", True):
        return (f"quantization ({plan.quantization['given']}): its cost needs {UNQUANTIZED_CAPTURE} "
                "(run create_keras_model.py again)")
    return (f"quantization ({plan.quantization['given']}): the model was given quantized, so there is no unquantized "
            "model to measure its cost against")


def quantization_tables(rows, figures, results):
    """--full: each quantized weight's step and largest error; then per layer, what
    quantization moves it by beside the largest error of any runtime against float64."""
    weight = short_names([r["weight"] for r in rows])  # told apart, as the other tables' names are
    lines = ["Quantized weights (each against its original: within half a step of the grid is 'quantized'):",
             _aligned([["weight", "dtype", "step", "largest error", "verdict"]] +
                      [[weight[r["weight"]], r["dtype"], f"{r['step']:.3g}", f"{r['largest_error_steps']:.2f} step",
                        "quantized" if r["within"] else "MISMATCH"] for r in rows])]
    if figures:
        point = short_names([p["point"] for p in figures["points"]])
        worst = {}
        for result in results:
            for layer in result.layers:
                value = layer.vs_float64.max_rel
                worst[layer.layer] = max(worst.get(layer.layer, 0.0), value if value == value else float("inf"))
        lines += ["", "Quantization cost per layer (relative to the layer's magnitude), beside the largest runtime "
                  "error against the quantized model's exact answer:",
                  _aligned([["layer", "quantization", "runtimes", "ratio"]] +
                           [[point[p["point"]], _g(p["relative"]), _g(worst.get(p["point"], float("nan"))),
                             _ratio(p["relative"], worst.get(p["point"]))] for p in figures["points"]])]
    return "\n".join(lines)


def _ratio(cost, error):
    if not error or error != error or error == float("inf"):
        return "-"
    return f"{cost / error:.2g}x"
