"""One self-contained HTML page: a verdict banner, the error of every capture per layer on
a log scale against float64 with the float32 rounding band drawn in (inline SVG, nothing to
fetch), the verdict table, who is closest to the truth, and each capture's environment."""
import html
import math

from .report import SHORT_VERDICTS
from .numerics import FLOAT16, FLOAT32
from .verdict import VERDICTS, Verdict

COLOURS = {Verdict.SAME_BITS: "#1b7837", Verdict.ROUNDING: "#5aae61", Verdict.QUANTIZED: "#80cdc1", Verdict.NO_BOUND: "#878787", Verdict.REDUCED: "#e6ab02",
           Verdict.OVERFLOW: "#e66101", Verdict.MISMATCH: "#b2182b"}
LINE_COLOURS = ["#333333", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#bcbd22", "#7f7f7f", "#d62728"]
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.banner { padding: .8em 1em; border-radius: 6px; color: #fff; font-size: 1.15em; font-weight: 600; }
.banner p { margin: .2em 0; font-weight: normal; font-size: .9em; }
table { border-collapse: collapse; font-size: .85em; } td, th { padding: .25em .45em; border: 1px solid #ddd; }
th { background: #f4f4f4; text-align: left; } td.v { color: #fff; text-align: center; white-space: nowrap; }
.legend span { display: inline-block; padding: .1em .6em; margin-right: .4em; color: #fff; border-radius: 3px; }
.scroll { overflow-x: auto; } .tall { max-height: 80vh; overflow: auto; }
.tall th { position: sticky; top: 0; } .tall tr th:first-child { position: sticky; left: 0; } code { font-size: .9em; } .env td { vertical-align: top; } .muted { color: #666; }
"""


def html_report(results, closest, sentences, gate_result=None, quantization=None):
    """The page as a string; `quantization` (a quantized model's: compare_outputs.py) adds
    what quantization costs, per layer on the chart beside the runtimes' errors."""
    cost = (quantization or {}).get("cost")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>tfjs parity report</title><style>{STYLE}</style></head><body>",
             "<h1>Does the model give the same numbers everywhere?</h1>",
             f"<p class='muted'>{len(results)} captures of {len(results[0].layers)} layers, each judged "
             "layer by layer against the exact answer (the model evaluated in float64).</p>",
             _banner(results, gate_result),
             "<h2>Error against the exact answer, per layer</h2>", "<div class='scroll'>", _chart(results, cost=cost),
             "</div>", *_quantization(quantization),
             "<h2>Verdicts</h2>", _legend(), _verdict_table(results),
             "<h2>Who is closest to the truth</h2><ul>",
             *(f"<li>{html.escape(s)}</li>" for s in sentences), "</ul>",
             "<p>Closest per layer: " + ", ".join(f"{html.escape(layer)}: <b>{html.escape(label)}</b>"
                                                    for layer, label in closest.items()) + "</p>",
             "<h2>Environment of each capture</h2>", _environment(results),
             "</body></html>"]
    return "\n".join(parts)


def _banner(results, gate_result):
    worst = Verdict.worst(r.verdict for r in results)
    problems = []
    for r in results:
        for verdict in (Verdict.MISMATCH, Verdict.OVERFLOW, Verdict.REDUCED):
            first = r.first(verdict)
            if first:
                problems.append(f"<p><b>{html.escape(r.label)}</b>: {verdict} from {first.layer} "
                                f"({html.escape(first.reason)})</p>")
    if worst in (Verdict.SAME_BITS, Verdict.ROUNDING):
        headline = "Every capture is within float32 rounding of the exact answer at every layer."
    else:
        headline = {Verdict.NO_BOUND: "Every judged layer is within float32 rounding; some layers have no error model "
                                "(metrics only).",
                    Verdict.REDUCED: "Some captures compute in reduced precision.",
                    Verdict.OVERFLOW: "Some captures overflow: their outputs become NaN or infinite.",
                    Verdict.MISMATCH: "Mismatch: some captures compute something else (a bug, not rounding)."}[worst]
    gate = f"<p>{html.escape(gate_result.message)}</p>" if gate_result is not None else ""
    return f"<div class='banner' style='background:{COLOURS[worst]}'>{headline}{''.join(problems)}{gate}</div>"


def _legend():
    return "<p class='legend'>" + "".join(f"<span style='background:{COLOURS[v]}'>{v}</span>" for v in VERDICTS) + \
        "</p>"


def _verdict_table(results):
    layers = [layer.layer for layer in results[0].layers]
    head = "<tr><th>layer</th>" + "".join(f"<th>{html.escape(r.label).replace('/', '/<wbr>')}</th>"
                                          for r in results) + "</tr>"
    rows = []
    for i, name in enumerate(layers):
        cells = []
        for r in results:
            layer = r.layers[i]
            m = layer.vs_float64
            tip = (f"max rel {m.max_rel:.3g}, max abs {m.max_abs:.3g}, ULP max {m.ulp_max:.3g}, "
                   f"{layer.bound_ratio:.3g} of the float32 bound. {layer.reason}")
            cells.append(f"<td class='v' style='background:{COLOURS[layer.verdict]}' title='{html.escape(tip, True)}'>"
                         f"{SHORT_VERDICTS[layer.verdict]}<br><small>{_fmt(m.max_rel)}</small></td>")
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return ("<div class='scroll tall'><table>" + head + "".join(rows) + "</table></div><p class='muted'>Small figures: max relative "
            "error against float64 (max |a - exact| / max |exact| of the layer). Hover for more.</p>")


def _environment(results):
    rows = []
    for r in results:
        m = r.metadata
        versions = m.get("versions", {})
        facts = {
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("tfjs", "tensorflow", "tf_keras",
                                                                                   "node", "numpy") and v),
            "stores": r.precision,
            "renderer": m.get("renderer"),
            "flags set": ", ".join(f"{k}={v}" for k, v in m.get("flags", {}).items()) or None,
            "precision flags": ", ".join(f"{k}={v}" for k, v in m.get("precision_flags", {}).items()) or None,
            "platform": " ".join(str(x) for x in (m.get("platform"), m.get("cpu")) if x),
            "TF_ENABLE_ONEDNN_OPTS": m.get("environment", {}).get("TF_ENABLE_ONEDNN_OPTS"),
            "prediction, as shipped": _timing(m),
            "memory (tf.memory)": ", ".join(f"{k} {v}" for k, v in (m.get("memory") or {}).items()) or None,
            "user agent": m.get("userAgent"),
            "captured": m.get("created"),
        }
        body = "<br>".join(f"<b>{k}</b>: {html.escape(str(v))}" for k, v in facts.items() if v)
        rows.append(f"<tr><th>{html.escape(r.label)}</th><td>{body}</td></tr>")
    return "<table class='env'>" + "".join(rows) + "</table>"


def _timing(metadata):
    """Warm median over its runs, and cold (load and the first prediction) where recorded."""
    timing = metadata.get("timing")
    if not timing:
        return None
    text = f"warm median {timing['median_ms']:.2f} ms over {len(timing['runs_ms'])} runs"
    if isinstance(timing.get("cold_ms"), (int, float)):
        text += f"; cold {timing['cold_ms']:.1f} ms" + (f" (load {timing['load_ms']:.1f} ms)"
                                                       if isinstance(timing.get("load_ms"), (int, float)) else "")
    return text


def _fmt(value):
    return "NaN" if isinstance(value, float) and math.isnan(value) else f"{value:.2g}"


def _quantization(quantization):
    """The page's section on a quantized model: what it costs, and each weight's step and error."""
    if not quantization:
        return []
    parts = [f"<h2>What quantization costs ({html.escape(quantization['given'])})</h2>"]
    cost = quantization.get("cost")
    if cost:
        parts.append("<p>The black line on the chart: how far quantization alone moves each layer's output (the "
                     "quantized model's exact answer against the unquantized one's, relative to the layer's "
                     "magnitude), beside each runtime's own error on the quantized model.</p><ul>")
        for out in cost["outputs"]:
            text = (f"output {out['output']}: at most {out['max_relative']:.3g} of its magnitude, "
                    f"{out['mean_relative']:.3g} on average")
            if "top1_same" in out:
                text += f"; top-1 class the same at {out['top1_same']} of {out['top1_of']} inputs"
            parts.append(f"<li>{html.escape(text)}</li>")
        parts.append("</ul>")
    else:
        parts.append("<p>No unquantized model to measure the cost against.</p>")
    rows = "".join(f"<tr><th>{html.escape(r['weight'])}</th><td>{r['dtype']}</td><td>{r['step']:.3g}</td>"
                   f"<td>{r['largest_error_steps']:.2f} step</td><td class='v' style='background:"
                   f"{COLOURS[Verdict.QUANTIZED if r['within'] else Verdict.MISMATCH]}'>"
                   f"{'quantized' if r['within'] else 'MISMATCH'}</td></tr>" for r in quantization["weights"])
    parts.append("<div class='scroll tall'><table><tr><th>weight</th><th>dtype</th><th>step</th><th>largest error"
                 "</th><th>verdict</th></tr>" + rows + "</table></div>")
    return parts


def _chart(results, height=420, cost=None):
    """Max relative error against float64 per layer, log scale, one line per capture; the
    float32 rounding band (one rounding, u, up to the layer's worst-case bound) shaded;
    float16's unit roundoff dashed; NaN/overflow drawn as crosses along the top; `cost` (a
    quantized model's) the quantization's own change per layer, as a black line. Wider
    than the page for many layers (it scrolls), names slanted, every k-th one if crowded."""
    layers = [layer.layer for layer in results[0].layers]
    slanted = len(layers) > 12
    label_every = max(1, math.ceil(len(layers) / 80))
    longest = max((len(name) for name in layers[::label_every]), default=0)
    left, right, top = 70, 210, 20
    bottom = min(40 + 6 * longest, 200) if slanted else 50
    width = max(1000, left + right + 9 * len(layers))
    height += bottom - 50
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [layer.vs_float64.max_rel for r in results for layer in r.layers]
    costs = {p["point"]: p["relative"] for p in (cost or {}).get("points", [])}
    values += list(costs.values())
    finite = [v for v in values if math.isfinite(v) and v > 0]
    bands = [layer.bound_rel for layer in results[0].layers if math.isfinite(layer.bound_rel)]
    low = math.floor(math.log10(min(finite + [FLOAT32.unit_roundoff]))) - 1
    high = math.ceil(math.log10(max(finite + bands + [FLOAT16.unit_roundoff]))) + 1

    def x(i):
        return left + (plot_w * i / max(len(layers) - 1, 1))

    def y(v):
        v = max(v, 10.0 ** low)
        return top + plot_h * (high - math.log10(v)) / (high - low)

    svg = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='12' "
           "font-family='system-ui, sans-serif' role='img' aria-label='error per layer'>"]
    band = [layer.bound_rel if math.isfinite(layer.bound_rel) else FLOAT32.unit_roundoff  # no bound: no band
            for layer in results[0].layers]
    band_top = " ".join(f"{x(i):.1f},{y(value):.1f}" for i, value in enumerate(band))
    band_bottom = " ".join(f"{x(i):.1f},{y(FLOAT32.unit_roundoff):.1f}" for i in reversed(range(len(layers))))
    svg.append(f"<polygon points='{band_top} {band_bottom}' fill='#5aae61' fill-opacity='0.18'/>")
    svg.append(f"<text x='{x(0) + 4:.1f}' y='{y(band[0]) - 6:.1f}' fill='#1b7837'>"
               "float32 rounding band (one rounding up to the worst case for any summation order)</text>")
    svg.append(f"<line x1='{left}' x2='{left + plot_w}' y1='{y(FLOAT16.unit_roundoff):.1f}' "
               f"y2='{y(FLOAT16.unit_roundoff):.1f}' stroke='#e6ab02' stroke-dasharray='6 4'/>")
    svg.append(f"<text x='{left + plot_w - 4}' y='{y(FLOAT16.unit_roundoff) - 5:.1f}' text-anchor='end' "
               "fill='#9a7400'>float16 unit roundoff (4.9e-4)</text>")
    for exponent in range(low, high + 1):
        svg.append(f"<line x1='{left}' x2='{left + plot_w}' y1='{y(10.0 ** exponent):.1f}' "
                   f"y2='{y(10.0 ** exponent):.1f}' stroke='#eee'/>")
        svg.append(f"<text x='{left - 8}' y='{y(10.0 ** exponent) + 4:.1f}' text-anchor='end'>1e{exponent}</text>")
    for i, name in list(enumerate(layers))[::label_every]:
        if slanted:
            svg.append(f"<text x='{x(i):.1f}' y='{top + plot_h + 12}' text-anchor='end' font-size='10' "
                       f"transform='rotate(-60 {x(i):.1f} {top + plot_h + 12})'>{html.escape(name)}</text>")
        else:
            svg.append(f"<text x='{x(i):.1f}' y='{top + plot_h + 20}' text-anchor='middle'>{html.escape(name)}</text>")
    svg.append(f"<text x='14' y='{top + plot_h / 2:.1f}' transform='rotate(-90 14 {top + plot_h / 2:.1f})' "
               "text-anchor='middle'>max relative error vs float64</text>")
    for n, r in enumerate(results):
        colour = LINE_COLOURS[n % len(LINE_COLOURS)]
        points = [(x(i), y(layer.vs_float64.max_rel)) for i, layer in enumerate(r.layers)
                  if math.isfinite(layer.vs_float64.max_rel)]
        dash = " stroke-dasharray='2 3'" if n % 2 else ""
        if len(points) > 1:
            svg.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2'{dash} points='"
                       + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + "'/>")
        for px, py in points:
            svg.append(f"<circle cx='{px:.1f}' cy='{py:.1f}' r='3' fill='{colour}'/>")
        for i, layer in enumerate(r.layers):
            if not math.isfinite(layer.vs_float64.max_rel):
                cx, cy = x(i), top + 8 + 10 * (n % 3)
                svg.append(f"<text x='{cx:.1f}' y='{cy:.1f}' text-anchor='middle' fill='{colour}' "
                           f"font-weight='bold'>✕ NaN</text>")
        legend_y = top + 16 * n + 10
        svg.append(f"<line x1='{left + plot_w + 15}' x2='{left + plot_w + 40}' y1='{legend_y}' y2='{legend_y}' "
                   f"stroke='{colour}' stroke-width='2'{dash}/>")
        svg.append(f"<text x='{left + plot_w + 46}' y='{legend_y + 4}'>{html.escape(r.label)}</text>")
    if costs:
        points = [(x(i), y(costs[name])) for i, name in enumerate(layers)
                  if math.isfinite(costs.get(name, float("nan"))) and costs[name] > 0]
        if points:
            svg.append("<polyline fill='none' stroke='#000' stroke-width='3' points='"
                       + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + "'/>")
        legend_y = top + 16 * len(results) + 10
        svg.append(f"<line x1='{left + plot_w + 15}' x2='{left + plot_w + 40}' y1='{legend_y}' y2='{legend_y}' "
                   "stroke='#000' stroke-width='3'/>")
        svg.append(f"<text x='{left + plot_w + 46}' y='{legend_y + 4}'>quantization's cost</text>")
    svg.append(f"<rect x='{left}' y='{top}' width='{plot_w}' height='{plot_h}' fill='none' stroke='#999'/>")
    svg.append("</svg>")
    return "\n".join(svg)
