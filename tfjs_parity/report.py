"""Text renderings of comparisons. The default is the original study's exact format."""


def study_block(title, diff):
    """The study's block: a banner, then one line per tensor, e.g.
    `dense_1_output[0]: different values = 40, average difference = 1.7833709716796876e-06`."""
    lines = [f"{'*' * 10} {title} {'*' * 10}"]
    for t in diff.tensors:
        lines.append(f"{t.name}: different values = {t.different_values}, "
                     f"average difference = {t.average_difference!r}")
    return "\n".join(lines)


def _layer_rows(diff):
    """{layer: (different values, average difference)} over each layer's outputs."""
    rows = {}
    for t in diff.tensors:
        if t.key.endswith("_output"):
            count, total, size = rows.get(t.key[: -len("_output")], (0, 0.0, 0))
            rows[t.key[: -len("_output")]] = (count + t.different_values, total + t.average_difference * t.size,
                                               size + t.size)
    return {layer: (count, total / size) for layer, (count, total, size) in rows.items()}


def layer_table(reference, diffs, captures):
    """One compact table against `reference`: rows = layers, columns = captures; each cell is
    'differing values / average difference' of the layer's output; then whether the weights
    match, and each runtime's median prediction time."""
    columns = [_layer_rows(diff) for diff in diffs]
    layers = list(columns[0]) if columns else []
    header = [["", *(c.metadata.get("runtime", "?") for c in captures)],
              ["layer", *("/".join(p for p in (c.metadata.get("backend"), c.metadata.get("variant")) if p)
                          for c in captures)]]
    body = [[layer, *(_cell(*col[layer]) for col in columns)] for layer in layers]
    body.append(["weights", *("identical" if all(t.different_values == 0 for t in d.tensors if t.key.endswith("_weights"))
                              else "DIFFER" for d in diffs)])
    body.append(["median ms", *(_ms(c) for c in captures)])
    rows = header + body
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    title = (f"{reference.label} vs each capture: per layer output, values that differ / average difference"
             f" (reference median {_ms(reference)} ms)")
    lines = [title] + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _cell(count, average):
    return "0" if count == 0 else f"{count} / {average:.2g}"


def _ms(capture):
    median = capture.metadata.get("timing", {}).get("median_ms")
    return "-" if median is None else f"{median:.2f}"
