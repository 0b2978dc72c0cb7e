"""Step 1 of 4: build the study's Keras model (or load yours), convert it to TensorFlow.js,
run it in TensorFlow Python and capture every layer's weights and output.

    python create_keras_model.py [--depth 10] [--units 50] [--seed 123] [--out-dir results]
    python create_keras_model.py --model PATH [--input FILE | --input-seed 0] [--out-dir results]

Without --model: the original study's model. With --model: a Keras 3 `.keras` file, a
tf-keras `.h5` (or Keras 3's), or a tf-keras SavedModel folder; a Keras 3 model is
translated into the tf-keras form tfjs reads, and its Python capture and float64 reference
come from the original. --input gives the input (.npy, or .npz with an array per input
name); without it a seeded random input that fits each input is used and recorded.

Writes OUT_DIR/keras_converted/ (the tfjs model, probe_plan.json: what every runtime
captures, and input.json: the inputs every runtime sees), OUT_DIR/keras_model_python.json,
and OUT_DIR/keras_model_float64.json: the same model evaluated in float64 from the same
float32 weights, the exact answer every runtime is measured against.

With --model, the model is loaded, converted and run in a sandbox (bubblewrap, installed by
make setup): it reads everything, writes only its staging folder in OUT_DIR, has no network
and bounded time and memory; a write anywhere else (/tmp, say) is refused and named, and
nothing is committed. --trust-model runs it without the sandbox (docs/guarantees.md).
"""
import argparse
import hashlib
import os
import sys
from pathlib import Path

from tfjs_parity import KitError, paths, sandbox
from tfjs_parity.cli import safe_summary, int64, positive_int, run_main, seed32
from tfjs_parity.files import failpoint, remove_tree, staging_dir, writable_out_dir
from tfjs_parity.quantization import UNQUANTIZED_CAPTURE
from tfjs_parity.sandbox import DEFAULT_TIMEOUT
from tfjs_parity.steps import add_format_argument, add_timing_arguments, format_note, positive_float, save_capture


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="your model: a .keras file, a .h5 file, a SavedModel folder (Keras or not), or a "
                             "converted tfjs model.json (default: the study's)")
    parser.add_argument("--as", dest="kind", choices=("layers", "graph"),
                        help="convert to a tfjs layers model (tf.loadLayersModel) or a graph model "
                             "(tf.loadGraphModel: ops, as tensorflowjs_converter --output_format=tfjs_graph_model "
                             "writes; the way for a model tfjs-layers cannot load). Default: layers for a Keras "
                             "model, graph for a SavedModel that is not one; a model.json is what it is")
    parser.add_argument("--signature", metavar="NAME",
                        help="the signature of a (non-Keras) SavedModel to convert (default: serving_default)")
    parser.add_argument("--keep-plumbing", action="store_true",
                        help="graph models: capture the Identity-like nodes too (left out by default: they "
                             "copy a value; constants and inputs are captured as weights and inputs)")
    parser.add_argument("--input", type=Path, metavar="FILE",
                        help="the input for --model: .npy (one input) or .npz (an array per input name)")
    parser.add_argument("--input-shape", action="append", type=input_shape, metavar="NAME=D0,D1,...",
                        help="graph models: the shape of input NAME, batch first (1,224,224,3), for an input whose "
                             "shape or rank the model does not say, or has free dimensions; repeat per input")
    parser.add_argument("--input-seed", type=seed32, default=0, metavar="N",
                        help="seed of the random input used with --model when no --input is given (default 0)")
    parser.add_argument("--input-count", type=positive_int, metavar="N",
                        help="with --model and no --input: a batch of N seeded random inputs (default 1); with "
                             "--quantize, how often the top-1 class stays is counted over them")
    parser.add_argument("--quantize", action="append", metavar="MODE[=WEIGHT_PATTERN,...]",
                        help="quantize the converted weights as tensorflowjs_converter --quantize_MODE does: MODE "
                             "is float16, uint8 or uint16, for every weight or only those matching the patterns "
                             "(names or wildcards: conv*/kernel); repeat for several modes. Every runtime is "
                             "judged on the quantized model, and the report says what quantization costs")
    # Defaults are the original study's model: 10 x Dense(50), RandomUniform(-1, 1, seed=123).
    study = parser.add_argument_group("the study's model (without --model)")
    study.add_argument("--depth", type=positive_int, help="number of Dense layers (default 10)")
    study.add_argument("--units", type=positive_int, help="units per layer and input size (default 50)")
    study.add_argument("--seed", type=int64, help="seed of the RandomUniform(-1, 1) initializer (default 123)")
    confine = parser.add_argument_group("the sandbox (with --model)")
    confine.add_argument("--trust-model", action="store_true",
                         help="load, convert and run --model without the sandbox (bubblewrap), as the kit's own "
                              "model is: only for a model you trust (a SavedModel runs code when it loads)")
    confine.add_argument("--sandbox-timeout", type=positive_float, metavar="SECONDS",
                         help=f"stop the sandboxed step after this long (default {DEFAULT_TIMEOUT})")
    confine.add_argument("--sandbox-memory", type=positive_int, metavar="MIB",
                         help="stop the sandboxed step once its processes hold more resident memory than this, "
                              "counting what it wrote to its /tmp, /var/tmp and /dev/shm (default: the memory "
                              "available when the step starts)")
    parser.add_argument("--in-sandbox", type=Path, help=argparse.SUPPRESS)  # the child the sandbox runs
    add_timing_arguments(parser)
    parser.add_argument("--out-dir", type=Path, default=paths.DEFAULT_OUT_DIR, help="where results go (default: %(default)s)")
    add_format_argument(parser)
    args = parser.parse_args()
    if args.in_sandbox:
        sandbox.started_inside(args.in_sandbox)
    if args.model and any(v is not None for v in (args.depth, args.units, args.seed)):
        raise KitError("--depth, --units and --seed build the study's model; they do not apply with --model")
    if args.input and not args.model:
        raise KitError("--input is the input for --model; the study's input is a vector of ones")
    if args.input_count is not None and (args.input or not args.model):
        raise KitError("--input-count is the number of random inputs for --model without --input"
                       + ("" if args.model else "; the study's input is a vector of ones"))
    from tfjs_parity.model_json import is_quantized
    from tfjs_parity.quantization import parse as parse_quantize
    args.qmap = parse_quantize(args.quantize)
    source_kind = model_source_kind(args.model)
    args.input_shapes = dict(args.input_shape or ())
    if len(args.input_shapes) != len(args.input_shape or ()):
        raise KitError("--input-shape: an input is given twice; give each input's shape once")
    if args.input_shapes and (args.input or not args.model):
        raise KitError("--input-shape sets the shape of --model's random input; "
                       + ("--input gives the arrays, shapes included" if args.input else "the study's input is "
                          "a vector of ones"))
    if args.signature is not None and source_kind != "saved_model":
        raise KitError("--signature picks a signature of a SavedModel that is not a Keras model; "
                       f"--model {args.model or '(the study)'} is not one")
    kind = args.kind or ("graph" if source_kind in ("saved_model", "graph_json") else "layers")
    if kind == "layers" and source_kind == "saved_model":
        raise KitError(f"--model {args.model}: a SavedModel that is not a Keras model has no layers; it converts "
                       "only as a graph model (--as graph)")
    if args.input_shapes and kind != "graph":
        raise KitError("--input-shape is for graph models (a layers model's inputs say their shapes); give "
                       "--input to choose the free dimensions of a layers model's input")
    if args.keep_plumbing and kind != "graph":
        raise KitError("--keep-plumbing is for graph models (--as graph): a layers model's points are its layers")
    if kind == "layers" and source_kind == "graph_json":
        raise KitError(f"--model {args.model}: a tfjs graph model; it runs only as one (--as graph)")
    args.quantized_source = source_kind in ("graph_json", "layers_json") and is_quantized(args.model)
    if args.qmap and args.quantized_source:
        raise KitError(f"--model {args.model}: its weights are quantized already (its weightsManifest says so), and "
                       "the kit reads it as such; drop --quantize")
    if args.trust_model and not args.model:
        raise KitError("--trust-model is for --model: the study's model is the kit's own and runs without the sandbox")
    if (args.sandbox_timeout or args.sandbox_memory) and (args.trust_model or not args.model):
        raise KitError("--sandbox-timeout and --sandbox-memory bound the sandbox --model runs in; "
                       + ("--trust-model runs without it" if args.model else "the study's model runs without it"))
    if not args.model:
        check_memory_for_study(args.depth or 10, args.units or 50)
    if args.input:  # what the file declares, before TensorFlow starts (a few bytes may declare terabytes)
        from tfjs_parity.inputs import check_input_file
        check_input_file(args.input)
    if kind == "graph":
        # With TensorFlow's oneDNN optimizations on (its default on x86 Linux), grappler fuses ops
        # tfjs has no kernel for into the graph (_FusedHardSwish: MobileNetV3's activation), and
        # tfjs fails on the converted model. Set before TensorFlow is imported; recorded in the
        # Python capture's metadata.
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if args.in_sandbox:  # the sandbox's child: stage the run in its folder; the kit outside commits it
        stage(args, source_kind, kind, args.in_sandbox / sandbox.RUN, args.in_sandbox)
        return
    writable_out_dir(args.out_dir)  # before the slow part: a folder that cannot be written fails now
    if args.model and not args.trust_model:
        run_sandboxed(args)
        return

    from tfjs_parity.commit import commit_run

    run_dir = staging_dir(args.out_dir, "run")  # every file of the run is staged here, then committed together
    try:
        line = stage(args, source_kind, kind, run_dir)
    except BaseException:
        remove_tree(run_dir)
        raise
    commit_run(run_dir, args.out_dir, paths.CONVERTED_DIR)
    print(safe_summary(line))


def run_sandboxed(args):
    """Step 1 for a user's model: staged by a child in the sandbox, committed here."""
    from tfjs_parity.commit import commit_run
    sandbox.bwrap_path()  # no bwrap: one line, before anything is made
    folder = sandbox.make_folder(args.out_dir)
    try:
        readable = sandbox.readable_paths(args.model, args.input)
        line = sandbox.run(folder, sys.argv[1:], readable,
                           args.sandbox_memory or sandbox.default_memory_mib(),
                           args.sandbox_timeout or DEFAULT_TIMEOUT)
        commit_run(sandbox.vetted_run(folder), args.out_dir, paths.CONVERTED_DIR)
    finally:
        remove_tree(folder)
    print(line)


def stage(args, source_kind, kind, run_dir, summary_folder=None):
    """Load, convert and run the model, staging every file of the run in `run_dir`; the line
    step 1 prints once they are committed (written to `summary_folder`, in the sandbox)."""
    from tfjs_parity.model import held_stderr
    if summary_folder is not None:
        run_dir.mkdir(exist_ok=True)
    try:
        with held_stderr():  # TensorFlow's native logs, shown only if something fails
            prepare = convert_as_graph if kind == "graph" else convert_as_layers
            plan, capture, exact, unquantized, described = prepare(args, source_kind, run_dir / paths.CONVERTED_DIR)
        results = [(capture, paths.PYTHON_CAPTURE), (exact, paths.REFERENCE_CAPTURE)]
        if unquantized is not None:
            results.append((unquantized, UNQUANTIZED_CAPTURE))
        for result, _ in results:
            result.metadata.update(model=described, model_id=plan.model_id)
        written = [args.out_dir / save_capture(result, run_dir / name, args.format).name for result, name in results]
    except BaseException:
        remove_tree(run_dir)
        raise
    note = format_note(capture, written[0], args.format)
    what = "capture points" if kind == "layers" else "graph nodes captured"
    flow = plan.source.get("control_flow")
    if flow:
        what += (f"; {flow['not_captured']} inside loops or conditional branches are not (no single value; "
                 f"{paths.CONVERTED_DIR}/probe_plan.json lists them)")
    if plan.quantization:
        what += f"; {len(plan.quantization['weights'])} weights quantized ({plan.quantization['given']})"
    for change in (plan.source.get("normalized") or {}).get("changes", ()):  # an older converter's graph
        change = {k: one_line(v) for k, v in change.items()}  # names the model wrote: no line of their own
        what += (f"; {change['attr']} of {change['nodes']} {change['op']} node(s) "
                 f"{change['action'].replace(':', ' as', 1) if change['action'].startswith('derived') else change['action']}"
                 " for TensorFlow (tfjs reads none of it)")
    line = (f"wrote {args.out_dir / paths.CONVERTED_DIR}/ ({len(plan.points)} {what}), "
            f"{', '.join(map(str, written[:-1]))} and {written[-1]}" + (f" ({note.removeprefix(', ')})" if note else ""))
    for verb, by_backend in (plan.source.get("foreseen") or {}).items():
        by_reasons = {}  # before anything runs: the backends that will fail (or be wrong), alike on one line
        for backend, reasons in by_backend.items():
            by_reasons.setdefault(tuple(reasons), []).append(backend)
        for reasons, backends in by_reasons.items():
            line += (f"\nforeseen: tfjs's {', '.join(backends)} backend{'s' if len(backends) > 1 else ''} will "
                     f"{'fail at' if verb == 'fail' else 'compute wrongly'} {one_line(reasons[0])}"
                     + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""))
    if summary_folder is not None:
        sandbox.summary_written(summary_folder, line)
        failpoint("summary written")
    return line


def one_line(value):
    """Text a model wrote (a node's or attribute's name), for a line of the summary: no newline."""
    return str(value).replace("\n", "\\n").replace("\r", "\\r")


def input_shape(text):
    """--input-shape NAME=D0,D1,... -> (NAME, [D0, D1, ...])."""
    name, equals, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")] if dims.strip() else []
    except ValueError:
        shape = None
    if not equals or not name or shape is None or any(d < 1 or d > 2 ** 31 - 1 for d in shape):
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: expected NAME=D0,D1,... with whole sizes of at least 1 "
                                         "(batch first: image=1,224,224,3)")
    return name, shape


def model_source_kind(path):
    """What --model names: None (the study), "keras" (a Keras file or SavedModel),
    "saved_model" (a SavedModel that is not a Keras model), "graph_json" or "layers_json"
    (a converted tfjs model.json)."""
    if path is None:
        return None
    if path.is_dir() and (path / "saved_model.pb").is_file() and not (path / "keras_metadata.pb").is_file():
        return "saved_model"
    if path.suffix == ".json":
        from tfjs_parity.model_json import GRAPH_FORMAT, read_model_json
        return "graph_json" if read_model_json(path)["format"] == GRAPH_FORMAT else "layers_json"
    return "keras"


def load_source(args, source_kind, parse_graph=True):
    """The Keras model (the study's, the user's, or a layers model.json's) and the inputs'
    origin description."""
    from tfjs_parity.model import build_study_model, load_converted_layers_model, load_user_model
    if source_kind == "layers_json":
        return load_converted_layers_model(args.model, parse_graph)
    if args.model:
        return load_user_model(args.model, parse_graph)
    return build_study_model(args.depth or 10, args.units or 50, 123 if args.seed is None else args.seed)


def model_inputs_for(args, specs, graph=None, integer_high=None):
    """(inputs, their origin) for the model's inputs."""
    from tfjs_parity import inputs as model_inputs
    if args.input:
        feed = model_inputs.load_inputs(args.input, specs, graph)
        return feed, {"file": str(args.input), "sha256": hashlib.sha256(args.input.read_bytes()).hexdigest()}
    if args.model:
        feed = model_inputs.random_inputs(specs, graph, args.input_seed, integer_high, args.input_count)
        count = f" --input-count {args.input_count}" if args.input_count else ""
        return feed, {"random_seed": args.input_seed, "floats": "uniform(-1, 1)",
                      "integers": "uniform over each Embedding's vocabulary, else 0..9",
                      "repeat_with": f"--input-seed {args.input_seed}{count}"}
    return model_inputs.study_inputs(specs), {"study": "a batch of one vector of ones"}


def convert_as_layers(args, source_kind, model_dir):
    """A Keras model converted to a tfjs layers model in `model_dir`: (plan, Python's capture,
    the float64 reference, the model's description)."""
    from tfjs_parity import inputs as model_inputs
    from tfjs_parity.kinds import layers_model
    from tfjs_parity.reference import reference_capture
    from tfjs_parity.runners import python_runner
    source = load_source(args, source_kind)
    failpoint("model built")
    layers_model.check_tfjs_can_run(source.graph)
    flat = layers_model.flat_tf_keras_model(source)
    specs = model_inputs.specs(source.graph)
    feed, origin = model_inputs_for(args, specs, source.graph)
    plan = layers_model.make_plan(source, flat, specs)
    # quantized: the unquantized model's exact answer first, from the weights before quantization
    unquantized = reference_capture(layers_model.float64_probe(source, plan), plan, feed) if args.qmap else None
    layers_model.stage_converted(flat, plan, feed, source, model_dir, args.qmap, args.quantized_source)
    capture = python_runner.run(layers_model.python_probe(source, plan), plan, feed, args.repeat, args.budget,
                                args.repeat_check)
    exact = reference_capture(layers_model.float64_probe(source, plan), plan, feed)
    return plan, *with_origin(origin, capture, exact, unquantized), \
        {"file": str(source.file) if source.file else None, "format": source.format, "kind": "layers",
         "points": len(plan.points)}


def with_origin(origin, capture, exact, unquantized):
    """The captures of step 1, each recording where the inputs came from; the unquantized
    model's exact answer (None unless --quantize) says what it is."""
    for result in (capture, exact, unquantized):
        if result is not None:
            result.metadata.update(input_origin=origin)
    if unquantized is not None:
        unquantized.metadata.update(variant="unquantized", quantization="none: the model before quantization")
    return capture, exact, unquantized


def convert_as_graph(args, source_kind, model_dir):
    """The model converted to (or given as) a tfjs graph model in `model_dir`, read back and
    run as tfjs runs it: (plan, Python's capture, the float64 reference, the description)."""
    from tfjs_parity.kinds import graph_model
    from tfjs_parity.reference import reference_capture
    from tfjs_parity.runners import python_runner
    graph_source, integer_high, original = None, None, None
    if source_kind == "graph_json":
        graph_model.copy_converted(args.model, model_dir)
        origin_format = "tfjs graph model.json"
    elif source_kind == "saved_model":
        model_dir.mkdir()
        signature = graph_model.convert_saved_model(args.model, args.signature or "serving_default", model_dir)
        origin_format = "SavedModel"

        def original(feed, graph):
            import tensorflow as tf
            inputs = {key: tf.constant(feed[entry["name"].split(":")[0]])
                      for key, entry in graph.signature["inputs"].items()}
            return {key: value.numpy() for key, value in signature(**inputs).items()}
    else:
        source = load_source(args, source_kind, parse_graph=False)
        failpoint("model built")
        model_dir.mkdir()
        graph_model.convert_keras(source.model, source.keras, model_dir)
        origin_format = source.format
        graph_source = source.graph
        integer_high = source.smallest_vocabulary()

        def original(feed, graph):
            names = getattr(source.model, "input_names", None) or [t.name.split(":")[0] for t in source.model.inputs]
            names = names if all(name in feed for name in names) else list(feed)
            predictions = source.model.predict_on_batch([feed[name] for name in names] if len(names) > 1
                                                        else feed[names[0]])
            return list(predictions) if isinstance(predictions, (list, tuple)) else [predictions]
    graph = graph_model.read_graph_model(model_dir, args.model if source_kind == "graph_json" else None)
    unquantized_graph = None
    if args.qmap:  # the converted graph read back before and after quantization: the original weights kept
        from tfjs_parity.quantization import quantize_converted
        quantize_converted(model_dir, args.qmap)
        graph, unquantized_graph = graph_model.read_graph_model(model_dir), graph
    graph_model.check_tfjs_can_run(graph)
    specs = graph_model.specs(graph, args.input_shapes)
    feed, origin = model_inputs_for(args, specs, graph_source, integer_high)
    described = {"format": origin_format, "signature": args.signature or "serving_default"} \
        if source_kind == "saved_model" else {"format": origin_format}
    foreseen = graph_model.foreseen(graph)
    if foreseen:
        described["foreseen"] = foreseen
    session = graph_model.tensorflow_session(graph)
    plan = graph_model.make_plan(graph, specs, described, session, keep_plumbing=args.keep_plumbing)
    if graph.quantized:
        graph_model.record_quantization(graph, plan, args.qmap)
    probe = graph_model.python_probe(graph, plan, session)
    capture = python_runner.run(probe, plan, feed, args.repeat, args.budget, args.repeat_check)
    if original is not None:  # the converter's optimizations, checked apart: the source against its graph
        try:
            outputs = original(feed, graph)
        except Exception as error:  # the original's own call (TensorFlow, Keras) failing says so, no more
            check = {"verdict": "not checked", "why": f"the original model fails on the input: {str(error)[:200]}"}
        else:
            # of the graph the converter wrote: before quantization, whose cost is measured apart
            converted = probe if unquantized_graph is None else graph_model.python_probe(unquantized_graph, plan)
            check = graph_model.conversion_check(graph, converted, feed, outputs)
            del converted
        capture.metadata["conversion"] = check
    del probe, session  # the float32 graph's memory, before the float64 one's (ResNet50: hundreds of MB)
    exact = reference_capture(graph_model.float64_probe(graph, plan), plan, feed)
    unquantized = None if unquantized_graph is None else \
        reference_capture(graph_model.float64_probe(unquantized_graph, plan), plan, feed)
    graph_model.stage_plan(plan, feed, model_dir)
    return plan, *with_origin(origin, capture, exact, unquantized), \
        dict(described, file=str(args.model) if args.model else None, kind="graph", points=len(plan.points))


# Measured by make bench: 10 x Dense(1000) (10M weights) peaks at 1.8 GB in this step, about
# 180 bytes a weight beyond TensorFlow's own 0.7 GB (the model, its float64 copy, the
# conversion, the captures).
BYTES_PER_WEIGHT = 180
TENSORFLOW_BYTES = 700 * 2 ** 20


def check_memory_for_study(depth, units):
    """Refuse a study model this machine cannot hold, before TensorFlow runs out of memory
    (a 60-line error, or the kernel's OOM killer)."""
    import psutil
    weights = depth * units * (units + 1)
    needed = TENSORFLOW_BYTES + BYTES_PER_WEIGHT * weights
    available = psutil.virtual_memory().available
    if needed > available:
        raise KitError(f"--depth {depth} --units {units} is {weights:,} weights: about {needed / 2 ** 30:,.1f} GiB "
                       f"to build, convert and capture, and {available / 2 ** 30:.1f} GiB is available; "
                       "choose a smaller --units or --depth")


if __name__ == "__main__":
    run_main(main)
