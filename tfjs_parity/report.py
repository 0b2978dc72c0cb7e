"""Text renderings of comparisons. The default is the original study's exact format."""


def study_block(title, diff):
    """The study's block: a banner, then one line per tensor, e.g.
    `dense_1_output[0]: different values = 40, average difference = 1.7833709716796876e-06`."""
    lines = [f"{'*' * 10} {title} {'*' * 10}"]
    for t in diff.tensors:
        lines.append(f"{t.name}: different values = {t.different_values}, "
                     f"average difference = {t.average_difference!r}")
    return "\n".join(lines)
