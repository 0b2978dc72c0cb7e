"""A reproducer to file: the first mismatching point of a capture as a one-layer model and a
standalone Node script and HTML page that run it with tfjs from npm (no kit code).

OUT_DIR/repro/<point>-<runtime>-<backend>[-<variant>]/ holds:
  case.json     the one-layer tfjs model (topology and weights, as the converter writes
                them; a graph model's node: model.json and weights.bin beside it too), the
                inputs this runtime fed the layer (its own earlier outputs), the
                exact float64 answer on them, TF Python's float32 answer, the kit's rounding
                bound per value, and what the runtime gave inside the whole model
  repro.js      node repro.js [BACKEND]: prints "max error X, bound Y, expected ..., got ..."
  repro.html    the same in a browser (?backend=NAME), tfjs from ./node_modules
  package.json  the tfjs packages, pinned to the versions the capture ran
  README.md     how to run it and attach it to a tfjs issue

The kit runs repro.js itself before it says anything (a Node capture's backend; for a
browser's, the same backend under Node when Node has it) and says whether the mismatch
still reproduces in isolation; a bug that needs its context is worth knowing too.
A graph model's node gets a one-node graph model (kinds/graph_repro.py): the node as the
converter wrote it, its constants as weights, a Placeholder for each input another point
computed, fed what this runtime fed it.
"""
import base64
import errno
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import KitError
from .files import (atomic_write_text, exchange_or_replace_dir, remove_stale_staging, staging_dir,
                    staging_prefix, write_error)
from .paths import NODE_MODULES

REPRO_DIR = "repro"
RESULT_PREFIX = "RESULT "  # repro.js's last line: the figures as JSON, for the kit's own run

# What both files do, the layer run and its answer checked: one text, so the page and the
# script cannot disagree.
CHECK_JS = r"""
const num = (v) => (typeof v === 'string' ? Number(v) : v);  // "NaN", "Infinity", "-Infinity": JSON has none

function check(c, backend, got) {
  let worst = {ratio: -1};
  let offset = 0;
  got.forEach((values, k) => {
    const expected = c.expected[k].data.map(num);
    const bounds = c.bound[k].data.map(num);
    for (let i = 0; i < values.length; i += 1) {
      const same = values[i] === expected[i] || (Number.isNaN(values[i]) && Number.isNaN(expected[i]));
      const error = same ? 0 : Math.abs(values[i] - expected[i]);
      const bound = bounds[i];
      const ratio = error === 0 ? 0 : error / bound;
      if (!(ratio <= worst.ratio)) worst = {ratio, error, bound, index: offset + i, expected: expected[i], got: values[i],
                                            tensorflow: num(c.tensorflow[k].data[i])};
    }
    offset += values.length;
  });
  const wrong = !(worst.ratio <= 1);
  const line = `${c.layer.name} (${c.layer.class_name}) on tfjs ${backend}: max error ${worst.error}, bound ${worst.bound} ` +
    `(${worst.ratio.toPrecision(3)}x) at value ${worst.index}: expected ${worst.expected}, got ${worst.got} ` +
    `(TensorFlow Python: ${worst.tensorflow}) -- ${wrong ? 'WRONG: beyond float32 rounding' : 'correct within float32 rounding'}`;
  return {line, result: Object.assign({backend, wrong}, worst)};
}

async function run(tf, c, backend, weightData) {
  for (const [name, value] of Object.entries(backend === c.backend ? c.flags : {})) tf.env().set(name, value);
  if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} did not start`);
  const artifacts = {modelTopology: c.model.modelTopology, weightSpecs: c.model.weightSpecs, weightData};
  const inputs = c.inputs.map((t) => tf.tensor(t.data.map(num), t.shape, t.dtype));
  let outputs;
  if (c.kind === 'graph') {  // one node of a graph model: fed by name, its outputs by name
    const model = await tf.loadGraphModel(tf.io.fromMemory(Object.assign({format: 'graph-model'}, artifacts)));
    const feeds = Object.fromEntries(c.feeds.map((name, i) => [name, inputs[i]]));
    outputs = [].concat(await model.executeAsync(feeds, c.outputs));
  } else {
    const model = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
    outputs = [].concat(model.predict(inputs.length === 1 ? inputs[0] : inputs));
  }
  return check(c, tf.getBackend(), await Promise.all(outputs.map((t) => t.data())));
}
"""

NODE_JS = """// Reproducer: layer {name!r} ({class_name}) of a tfjs {tfjs} model, alone, on backend {backend}.
// Standalone: `npm install` (package.json here), then `node repro.js [BACKEND]`.
const fs = require('fs');
const path = require('path');
const c = JSON.parse(fs.readFileSync(path.join(__dirname, 'case.json'), 'utf8'));
const backend = process.argv[2] || c.backend;
const tf = backend === 'tensorflow' ? require('@tensorflow/tfjs-node') : require('@tensorflow/tfjs');
if (backend === 'wasm') require('@tensorflow/tfjs-backend-wasm');
{check}
async function main() {{
  const {{line, result}} = await run(tf, c, backend, new Uint8Array(Buffer.from(c.model.weightData, 'base64')).buffer);
  console.log(line);
  console.log('{prefix}' + JSON.stringify(result));
}}
main().catch((error) => {{ console.error(error); process.exit(1); }});
"""

HTML = """<!doctype html>
<meta charset="utf-8">
<title>tfjs reproducer: {name} ({class_name}) on {backend}</title>
<!-- Standalone: `npm install` here (package.json), serve this folder (python3 -m http.server),
     open repro.html?backend={backend} (or another backend). tfjs comes from ./node_modules. -->
<script src="node_modules/@tensorflow/tfjs/dist/tf.min.js"></script>
<script src="node_modules/@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js"></script>
<script src="node_modules/@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js"></script>
<pre id="result">running...</pre>
<script>
{check}
(async () => {{
  const c = await (await fetch('case.json')).json();
  const backend = new URLSearchParams(location.search).get('backend') || c.backend;
  tf.wasm.setWasmPaths('node_modules/@tensorflow/tfjs-backend-wasm/dist/');
  const weightData = Uint8Array.from(atob(c.model.weightData), (ch) => ch.charCodeAt(0)).buffer;
  const {{line, result}} = await run(tf, c, backend, weightData);
  document.getElementById('result').textContent = line;
  console.log(line);
  window.reproResult = result;
}})().catch((error) => {{ document.getElementById('result').textContent = 'error: ' + error; window.reproResult = {{error: String(error)}}; }});
</script>
"""

README = """# tfjs reproducer: layer `{name}` ({class_name}) on backend `{backend}`

tfjs {tfjs} ({runtime}{flags_text}) computes this one layer beyond float32 rounding of the exact
answer. `case.json` holds the layer as a one-layer tfjs model, the input it was fed, the exact
(float64) answer on that input, TensorFlow Python's answer, and the float32 rounding bound of
each value.

    npm install                 # the pinned tfjs packages (package.json)
    node repro.js {backend}          # the backend above; `node repro.js cpu` for comparison
    python3 -m http.server      # then open http://127.0.0.1:8000/repro.html?backend={backend}

What the kit saw when it wrote this folder:

    {seen}

To file it: open an issue at https://github.com/tensorflow/tfjs/issues/new/choose, paste the
line `node repro.js {backend}` prints under "Describe the current behavior", the one of
`node repro.js cpu` under "expected", and attach this folder as a zip (repro.js, repro.html,
case.json, package.json): it is the "standalone code to reproduce the issue" the template asks
for, with nothing else needed.
"""


def _tensor(array, dtype=None):
    array = np.asarray(array)
    dtype = dtype or ("bool" if array.dtype == bool else "int32" if np.issubdtype(array.dtype, np.integer)
                      else "float32")
    values = array.astype(np.float64 if dtype == "float64" else np.float32 if dtype == "float32" else np.int32)
    # JSON has no NaN or infinities: written as JavaScript's Number() reads them back (num() in CHECK_JS)
    return {"shape": list(array.shape), "dtype": dtype,
            "data": [v if np.isfinite(v) else "NaN" if v != v else "Infinity" if v > 0 else "-Infinity"
                     for v in values.ravel().tolist()]}


def _one_layer_model(local, point, arrays, weights, keras):
    """A float32 tf-keras model of `point`'s layer alone, on inputs shaped as `arrays`."""
    layer64 = local.layer(point)
    config = dict(layer64.get_config(), dtype="float32")
    layer = type(layer64).from_config(config)
    inputs = [keras.Input(batch_shape=a.shape, dtype="int32" if np.issubdtype(a.dtype, np.integer) else "float32",
                          name=f"repro_input_{i}") for i, a in enumerate(arrays)]
    kwargs = {k: v for k, v in point.kwargs.items() if k != "mask"}
    outputs = layer(inputs[0] if len(inputs) == 1 else inputs, **kwargs)
    model = keras.Model(inputs, outputs)
    layer.set_weights([np.asarray(w, np.float32) for w in weights])
    return model


def _tfjs_model(model, folder):
    """The converter's tfjs layers model of `model`: {modelTopology, weightSpecs, weightData}."""
    import warnings
    from .model import held_stderr
    with held_stderr(), warnings.catch_warnings():  # the converter's HDF5 notes: it saves and loads one
        warnings.simplefilter("ignore")
        # imported here, under held_stderr: tensorflow_decision_forests, which the converter
        # imports, prints a banner to stderr on import
        from tensorflowjs.converters import save_keras_model
        save_keras_model(model, str(folder))
    document = json.loads((folder / "model.json").read_text())
    data = b"".join((folder / path).read_bytes() for group in document["weightsManifest"] for path in group["paths"])
    return {"modelTopology": document["modelTopology"],
            "weightSpecs": [w for group in document["weightsManifest"] for w in group["weights"]],
            "weightData": base64.b64encode(data).decode("ascii")}


def folder_name(capture, point):
    parts = [point, capture.metadata.get("runtime"), capture.metadata.get("backend"), capture.metadata.get("variant")]
    return "-".join(str(p) for p in parts if p).replace("/", "_")


def build_case(out_dir, exact, capture, point_name, workdir, local):
    """case.json's document for `point_name` of `capture` (`local`: the model's local
    reference), or raise KitError saying why none."""
    from .numerics import FLOAT32
    plan = local.plan
    point = next(p for p in plan.points if p.name == point_name)
    for each, outputs, bounds in local.evaluate_capture(capture, [FLOAT32]):
        if each.name == point_name:
            break
    if bounds["float32"] is None:
        raise KitError(f"{point_name} has no rounding bound to check against (its verdict came from the ceiling)")
    metadata = capture.metadata
    case = {"tfjs": (metadata.get("versions") or {}).get("tfjs"), "runtime": metadata.get("runtime"),
            "backend": metadata.get("backend"), "flags": metadata.get("flags") or {},
            "layer": {"name": point.layer, "class_name": point.class_name},
            "expected": [_tensor(a, "float64") for a in outputs],
            "bound": [_tensor(b, "float64") for b in bounds["float32"]],
            "in_the_model": [_tensor(a, "float32") for a in capture.outputs(point_name)]}
    if plan.kind == "graph":
        from .kinds import graph_repro
        if point.name in getattr(local, "exact_fed", {}).get(id(capture), {}):
            raise KitError(f"{point_name} was judged on the exact inputs (this runtime's had another shape), "
                           "which a reproducer cannot feed it")
        model, feeds, fed, names, graph_def = graph_repro.node_graph(local, point, capture)
        tensorflow = graph_repro.tensorflow_answer(graph_def, feeds, fed, names)
        return dict(case, about="one node of a tfjs graph model, alone: its inputs, the exact answer, the float32 "
                                "rounding bound", kind="graph", model=model, feeds=feeds, outputs=names,
                    inputs=[_tensor(a) for a in fed], tensorflow=[_tensor(a, "float32") for a in tensorflow])
    arrays = [np.asarray(a) for a in local.point_inputs(point, capture)]
    fed = []  # as the runtime held them: float32 (or int32 token ids)
    for source, array in zip(point.sources, arrays):
        own = capture.inputs[source["input"]] if "input" in source else capture.outputs(source["point"])[source["index"]]
        fed.append(np.asarray(own))
    model = _one_layer_model(local, point, fed, exact.weights(point.name), local.keras)
    tensorflow = model.predict(fed[0] if len(fed) == 1 else fed, verbose=0)
    tensorflow = list(tensorflow) if isinstance(tensorflow, (list, tuple)) else [tensorflow]
    return dict(case, about="one layer of a tfjs model, alone: its input, the exact answer, the float32 rounding bound",
                kind="layers", model=_tfjs_model(model, Path(tempfile.mkdtemp(dir=workdir))),
                inputs=[_tensor(a) for a in fed], tensorflow=[_tensor(a, "float32") for a in tensorflow])


def run_node_repro(folder, backend):
    """repro.js run on `backend` with the kit's node_modules: its result (backend, wrong, ratio,
    error, bound, index, expected, got, tensorflow), or {"failed": why}."""
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES), TF_CPP_MIN_LOG_LEVEL="2")
    try:
        done = subprocess.run(["node", "repro.js", backend], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"failed": f"node repro.js {backend}: {error}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"failed": f"node repro.js {backend} failed: {tail}"}
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def _run_repro(folder, case):
    """(where it ran, its result on the case's backend, on cpu) or (None, None, None) where the
    kit cannot run that browser: a Chromium capture's page in Chromium, the rest under Node."""
    from .wire import NODE_BACKENDS
    backend = case["backend"]
    others = [] if backend == "cpu" else ["cpu"]
    if case["runtime"] in ("browser", "webkit"):
        from .runners.page import TFJS_FILES
        routes = {f"/{name}": folder / name for name in ("repro.html", "case.json")}
        routes.update({f"/{name}": NODE_MODULES.parent / name for name in TFJS_FILES})
        pages = [f"/repro.html?backend={b}" for b in [backend, *others]]
        try:
            if case["runtime"] == "webkit":  # in WebKit, through its WebDriver
                from .runners.session import page_values
                from .runners.webkit_runner import WebKit
                where, results = "repro.html in WebKit", page_values(WebKit(), routes, pages, "window.reproResult")
            else:
                from .runners.browser_runner import page_results
                where, results = "repro.html in Chromium", page_results(routes, pages, "window.reproResult")
        except KitError as error:
            where, results = f"repro.html in {case['runtime']}", [error] * (1 + len(others))
        results = [{"failed": str(r)} if isinstance(r, KitError) else
                   {"failed": r["error"]} if isinstance(r.get("error"), str) else r for r in results]
        return where, results[0], (results[1] if others else None)
    if case["runtime"] == "node" or backend in NODE_BACKENDS:
        return ("node repro.js" + ("" if case["runtime"] == "node" else f" (the {case['runtime']} capture's backend, "
                                   "under Node)"), run_node_repro(folder, backend),
                run_node_repro(folder, "cpu") if others else None)
    return None, None, None


def write_repro(out_dir, python, exact, capture, point_name, workdir, local):
    """Write OUT_DIR/repro/<name>/ for `point_name` of `capture` and run it: {"folder",
    "isolated" (repro.js's result on the capture's backend under Node, or None), "healthy"
    (on cpu), "line" (what the report says)}. The folder is staged inside OUT_DIR/repro, so
    that moving it in is a rename on one filesystem wherever OUT_DIR/repro points."""
    target = repro_target(out_dir, capture, point_name)
    try:
        case = build_case(out_dir, exact, capture, point_name, workdir, local)
    except KitError as error:
        return {"folder": None, "line": f"  repro: none written for {point_name} of {capture.label}: {error}"}
    check_repro_dirs(out_dir, [target])
    try:
        target.parent.mkdir(exist_ok=True)
    except OSError as error:
        raise write_error(target.parent, error) from None
    remove_stale_staging(target.parent)
    staged = staging_dir(target.parent, "repro")
    try:
        return _write_staged(staged, target, case)
    finally:  # gone already once moved in; what an interrupted or failed one left, or a link it replaced
        if staged.is_symlink():
            staged.unlink()
        shutil.rmtree(staged, ignore_errors=True)


def _write_staged(staged, target, case):
    values = dict(name=case["layer"]["name"], class_name=case["layer"]["class_name"], backend=case["backend"],
                  tfjs=case["tfjs"], runtime=case["runtime"], prefix=RESULT_PREFIX, check=CHECK_JS.strip())
    (staged / "case.json").write_text(json.dumps(case))
    if case.get("kind") == "graph":  # the node's graph model as files too, to read or load as any model.json
        (staged / "weights.bin").write_bytes(base64.b64decode(case["model"]["weightData"]))
        (staged / "model.json").write_text(json.dumps({
            "format": "graph-model", "generatedBy": "tfjs-parity (one node of a converted model)",
            "modelTopology": case["model"]["modelTopology"],
            "weightsManifest": [{"paths": ["weights.bin"], "weights": case["model"]["weightSpecs"]}]}, indent=1))
    (staged / "repro.js").write_text(NODE_JS.format(**values))
    (staged / "repro.html").write_text(HTML.format(**values))
    version = case["tfjs"] or "4.22.0"
    packages = {"@tensorflow/tfjs": version, "@tensorflow/tfjs-backend-wasm": version,
                "@tensorflow/tfjs-backend-webgpu": version}
    if case["backend"] == "tensorflow":
        packages["@tensorflow/tfjs-node"] = version
    (staged / "package.json").write_text(json.dumps({"name": "tfjs-repro", "private": True,
                                                     "dependencies": packages}, indent=2) + "\n")
    backend = case["backend"]
    where, isolated, healthy = _run_repro(staged, case)
    if isolated is None:
        seen = f"(not run here: open repro.html?backend={backend} in the {case['runtime']} browser)"
        verdict = f"not run here: open repro.html?backend={backend} in that browser to run it"
    elif "failed" in isolated:
        seen, verdict = isolated["failed"], f"it did not run alone ({where}): {isolated['failed']}"
    elif isolated["wrong"]:
        seen = f"{where}, {backend}: max error {isolated['error']:.3g}, {isolated['ratio']:.3g}x the bound"
        verdict = (f"reproduces in isolation ({where}, {backend}: max error {isolated['error']:.3g}, "
                   f"{isolated['ratio']:.3g}x the bound)")
    else:
        seen = f"{where}, {backend}: correct alone ({isolated['ratio']:.2g}x the bound)"
        verdict = (f"does NOT reproduce in isolation ({where}, {backend} alone: {isolated['ratio']:.2g}x the bound): "
                   "the bug needs its context in the model (its neighbours, masks, memory), worth knowing too")
    if healthy and "failed" not in healthy:
        verdict += f"; cpu gives {'a wrong' if healthy['wrong'] else 'the right'} answer"
    if case.get("kind") == "graph":  # how much of the graph it took: the node, and what it reads that no point holds
        ops = [n for n in case["model"]["modelTopology"]["node"] if n.get("op") not in ("Const", "Placeholder")]
        verdict += (f"; the graph holds {len(ops)} node{'s' if len(ops) > 1 else ''} ("
                    + ", ".join(f"{n['name']} ({n['op']})" for n in ops[:4]) + (", ..." if len(ops) > 4 else "")
                    + f") and what feeds {'them' if len(ops) > 1 else 'it'}")
    flags = case["flags"]
    # as tfjs spells them: false, not Python's False
    flags_text = (", flags " + ", ".join(f"{k}={json.dumps(v)}" for k, v in flags.items())) if flags else ""
    (staged / "README.md").write_text(README.format(**values, flags_text=flags_text, seen=seen))
    replaced = target.exists()
    exchange_or_replace_dir(staged, target)
    done = "replaced (the earlier one and anything added to it, node_modules too, is gone)" if replaced else "wrote"
    return {"folder": str(target), "isolated": isolated, "healthy": healthy,
            "line": f"  repro: {done} {target}/: {verdict}"}


def repro_target(out_dir, capture, point_name):
    return Path(out_dir) / REPRO_DIR / folder_name(capture, point_name)


def check_before(out_dir, mismatched):
    """--explain's check before any trial runs (minutes of them are not lost to it at the end):
    the reproducer folders that `mismatched` [(RuntimeResult, Capture)] will get can be written."""
    check_repro_dirs(out_dir, [repro_target(out_dir, c, r.first("mismatch").layer) for r, c in mismatched])


def check_repro_dirs(out_dir, targets):
    """Raise write_error's one-line KitError where OUT_DIR/repro, or one of the reproducer
    folders `targets` in it, cannot be written: a file (or a link to none) in the way, a
    read-only or immutable folder."""
    folder = Path(out_dir) / REPRO_DIR
    in_the_way = [p for p in [folder, *targets] if os.path.lexists(p) and not p.is_dir()]
    if in_the_way:
        raise write_error(in_the_way[0], FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST)))
    where = folder if folder.is_dir() else Path(out_dir)
    try:
        os.rmdir(tempfile.mkdtemp(dir=where, prefix=staging_prefix("write-check")))
    except OSError as error:
        raise write_error(folder, error) from None
