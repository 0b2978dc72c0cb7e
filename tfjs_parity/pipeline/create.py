"""Step 1 as a library function: `run(CreateOptions(...))` loads or builds the model, converts
it to TensorFlow.js, runs it in TensorFlow Python and captures every point and the exact
float64 answer, staged and committed together; it returns the line step 1 prints.

    options = CreateOptions(model=Path("model.keras"), out_dir=Path("results"))
    print(run(checked(options)))

`checked(options)` makes every cross-option check create_keras_model.py makes (one KitError
each, naming the flags) and derives the model's source and kind. A user's model is loaded in
the sandbox (sandbox.py): the child runs create_keras_model.py again with the same options
(command_line(options)) and stages the run; this process commits it.

(A little over 400 lines: the options and their checks, and the conversion into each kind
with its inputs and captures; what both kinds share is here once.)"""
import hashlib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import KitError, paths, sandbox, sources
from ..cli import safe_summary
from ..files import failpoint, remove_tree, staging_dir, writable_out_dir
from ..quantization import UNQUANTIZED_CAPTURE
from ..sandbox import DEFAULT_TIMEOUT
from ..steps import format_note, save_capture
from ..wire import DEFAULTS

STUDY = {"depth": 10, "units": 50, "seed": 123}  # the original study's model: 10 x Dense(50), RandomUniform seed 123


@dataclass
class CreateOptions:
    """create_keras_model.py's options, by the names of its flags (None: not given)."""
    model: Path = None
    kind: str = None                  # --as: "layers" or "graph"
    signature: str = None
    keep_plumbing: bool = False
    input: Path = None
    input_shape: list = field(default_factory=list)   # [(name, [d0, d1, ...])]
    input_seed: int = 0
    input_count: int = None
    quantize: list = field(default_factory=list)      # ["float16", "uint8=conv*/kernel", ...]
    depth: int = None
    units: int = None
    seed: int = None
    trust_model: bool = False
    sandbox_timeout: float = None
    sandbox_memory: int = None
    repeat: int = DEFAULTS["repeat"]
    budget: float = float(DEFAULTS["budget"])
    repeat_check: int = DEFAULTS["repeat_check"]
    out_dir: Path = paths.DEFAULT_OUT_DIR
    format: str = None
    in_sandbox: Path = None           # the sandbox's child: its folder (never from a command line)
    # derived by checked()
    source: object = None             # sources.Source
    qmap: dict = None
    input_shapes: dict = None
    quantized_source: bool = False


# (option, its flag) for command_line(): every option a command line sets
FLAGS = [("model", "--model"), ("kind", "--as"), ("signature", "--signature"), ("keep_plumbing", "--keep-plumbing"),
         ("input", "--input"), ("input_shape", "--input-shape"), ("input_seed", "--input-seed"),
         ("input_count", "--input-count"), ("quantize", "--quantize"), ("depth", "--depth"), ("units", "--units"),
         ("seed", "--seed"), ("trust_model", "--trust-model"), ("sandbox_timeout", "--sandbox-timeout"),
         ("sandbox_memory", "--sandbox-memory"), ("repeat", "--repeat"), ("budget", "--budget"),
         ("repeat_check", "--repeat-check"), ("out_dir", "--out-dir"), ("format", "--format")]


def command_line(options):
    """create_keras_model.py's arguments that give `options` again (the sandbox's child parses them)."""
    defaults = CreateOptions()
    line = []
    for name, flag in FLAGS:
        value = getattr(options, name)
        if value == getattr(defaults, name) or value is None:
            continue
        if value is True:
            line.append(flag)
        elif name == "input_shape":  # FLAG=VALUE: a value may start with '-' (a file named -m.keras)
            line += [f"{flag}={shape_name}={','.join(map(str, dims))}" for shape_name, dims in value]
        elif name == "quantize":
            line += [f"{flag}={mode}" for mode in value]
        else:
            line.append(f"{flag}={value}")
    return line


def checked(options):
    """`options` checked across flags (a KitError naming them), with the model's source and
    kind, the quantization map and the input shapes derived."""
    from ..model_json import is_quantized
    from ..quantization import parse as parse_quantize
    o = options
    if o.model and any(v is not None for v in (o.depth, o.units, o.seed)):
        raise KitError("--depth, --units and --seed build the study's model; they do not apply with --model")
    if o.input and not o.model:
        raise KitError("--input is the input for --model; the study's input is a vector of ones")
    if o.input_count is not None and (o.input or not o.model):
        raise KitError("--input-count is the number of random inputs for --model without --input"
                       + ("" if o.model else "; the study's input is a vector of ones"))
    o.qmap = parse_quantize(o.quantize or None)
    o.source = sources.detect(o.model)
    o.input_shapes = dict(o.input_shape or ())
    if len(o.input_shapes) != len(o.input_shape or ()):
        raise KitError("--input-shape: an input is given twice; give each input's shape once")
    if o.input_shapes and (o.input or not o.model):
        raise KitError("--input-shape sets the shape of --model's random input; "
                       + ("--input gives the arrays, shapes included" if o.input else "the study's input is "
                          "a vector of ones"))
    if o.signature is not None and o.source.name != "saved_model":
        raise KitError("--signature picks a signature of a SavedModel that is not a Keras model; "
                       f"--model {o.model or '(the study)'} is not one")
    o.kind = o.kind or o.source.kinds[0]
    if o.kind not in o.source.kinds and o.source.name == "saved_model":
        raise KitError(f"--model {o.model}: a SavedModel that is not a Keras model has no layers; it converts only as "
                       "a graph model (--as graph)")
    if o.input_shapes and o.kind != "graph":
        raise KitError("--input-shape is for graph models (a layers model's inputs say their shapes); give "
                       "--input to choose the free dimensions of a layers model's input")
    if o.keep_plumbing and o.kind != "graph":
        raise KitError("--keep-plumbing is for graph models (--as graph): a layers model's points are its layers")
    if o.kind not in o.source.kinds:
        raise KitError(f"--model {o.model}: a tfjs {o.source.kinds[0]} model; it runs only as one (--as "
                       f"{o.source.kinds[0]})")
    o.quantized_source = sources.is_converted(o.source) and is_quantized(o.model)
    if o.qmap and o.quantized_source:
        raise KitError(f"--model {o.model}: its weights are quantized already (its weightsManifest says so), and "
                       "the kit reads it as such; drop --quantize")
    if o.trust_model and not o.model:
        raise KitError("--trust-model is for --model: the study's model is the kit's own and runs without the sandbox")
    if (o.sandbox_timeout or o.sandbox_memory) and (o.trust_model or not o.model):
        raise KitError("--sandbox-timeout and --sandbox-memory bound the sandbox --model runs in; "
                       + ("--trust-model runs without it" if o.model else "the study's model runs without it"))
    if not o.model:
        check_memory_for_study(o.depth or STUDY["depth"], o.units or STUDY["units"])
    if o.input:  # what the file declares, before TensorFlow starts (a few bytes may declare terabytes)
        from ..inputs import check_input_file
        check_input_file(o.input)
    return o


def run(options):
    """Step 1 on `checked(options)`: the line it prints, safe for a terminal (the sandbox's
    child: None, its run staged)."""
    if options.kind == "graph":
        # With TensorFlow's oneDNN optimizations on (its default on x86 Linux), grappler fuses ops
        # tfjs has no kernel for into the graph (_FusedHardSwish: MobileNetV3's activation), and
        # tfjs fails on the converted model. Set before TensorFlow is imported; recorded in the
        # Python capture's metadata.
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if options.in_sandbox:  # the sandbox's child: stage the run in its folder; the kit outside commits it
        stage(options, options.in_sandbox / sandbox.RUN, options.in_sandbox)
        return None
    writable_out_dir(options.out_dir)  # before the slow part: a folder that cannot be written fails now
    if options.model and not options.trust_model:
        return run_sandboxed(options)

    from ..commit import commit_run
    run_dir = staging_dir(options.out_dir, "run")  # every file of the run is staged here, then committed together
    try:
        line = stage(options, run_dir)
    except BaseException:
        remove_tree(run_dir)
        raise
    commit_run(run_dir, options.out_dir, paths.CONVERTED_DIR)
    return safe_summary(line)


def run_sandboxed(options):
    """Step 1 for a user's model: staged by a child in the sandbox, committed here."""
    from ..commit import commit_run
    sandbox.bwrap_path()  # no bwrap: one line, before anything is made
    folder = sandbox.make_folder(options.out_dir)
    try:
        readable = sandbox.readable_paths(options.model, options.input)
        line = sandbox.run(folder, command_line(options), readable,
                           options.sandbox_memory or sandbox.default_memory_mib(),
                           options.sandbox_timeout or DEFAULT_TIMEOUT)
        commit_run(sandbox.vetted_run(folder), options.out_dir, paths.CONVERTED_DIR)
    finally:
        remove_tree(folder)
    return line


def stage(options, run_dir, summary_folder=None):
    """Load, convert and run the model, staging every file of the run in `run_dir`; the line
    step 1 prints once they are committed (written to `summary_folder`, in the sandbox)."""
    from ..model import held_stderr
    if summary_folder is not None:
        run_dir.mkdir(exist_ok=True)
    try:
        with held_stderr():  # TensorFlow's native logs, shown only if something fails
            prepare = convert_as_graph if options.kind == "graph" else convert_as_layers
            plan, capture, exact, unquantized, described = prepare(options, run_dir / paths.CONVERTED_DIR)
        results = [(capture, paths.PYTHON_CAPTURE), (exact, paths.REFERENCE_CAPTURE)]
        if unquantized is not None:
            results.append((unquantized, UNQUANTIZED_CAPTURE))
        for result, _ in results:
            result.metadata.update(model=described, model_id=plan.model_id)
        written = [options.out_dir / save_capture(result, run_dir / name, options.format).name
                   for result, name in results]
    except BaseException:
        remove_tree(run_dir)
        raise
    line = summary_line(options, plan, capture, written)
    if summary_folder is not None:
        sandbox.summary_written(summary_folder, line)
        failpoint("summary written")
    return line


def summary_line(options, plan, capture, written):
    """What step 1 prints: what it wrote, what it filled in for TensorFlow, what it foresees."""
    note = format_note(capture, written[0], options.format)
    what = "capture points" if options.kind == "layers" else "graph nodes captured"
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
    line = (f"wrote {options.out_dir / paths.CONVERTED_DIR}/ ({len(plan.points)} {what}), "
            f"{', '.join(map(str, written[:-1]))} and {written[-1]}" + (f" ({note.removeprefix(', ')})" if note else ""))
    for verb, by_backend in (plan.source.get("foreseen") or {}).items():
        by_reasons = {}  # before anything runs: the backends that will fail (or be wrong), alike on one line
        for backend, reasons in by_backend.items():
            by_reasons.setdefault(tuple(reasons), []).append(backend)
        for reasons, backends in by_reasons.items():
            line += (f"\nforeseen: tfjs's {', '.join(backends)} backend{'s' if len(backends) > 1 else ''} will "
                     f"{'fail at' if verb == 'fail' else 'compute wrongly'} {one_line(reasons[0])}"
                     + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""))
    return line


def one_line(value):
    """Text a model wrote (a node's or attribute's name), for a line of the summary: no newline."""
    return str(value).replace("\n", "\\n").replace("\r", "\\r")


def load_source(options, parse_graph=True):
    """The Keras model: the study's, the user's, or a layers model.json's."""
    from ..model import build_study_model, load_converted_layers_model, load_user_model
    if options.source.name == "layers_json":
        return load_converted_layers_model(options.model, parse_graph)
    if options.model:
        return load_user_model(options.model, parse_graph)
    return build_study_model(options.depth or STUDY["depth"], options.units or STUDY["units"],
                             STUDY["seed"] if options.seed is None else options.seed)


def model_inputs_for(options, specs, graph=None, integer_high=None):
    """(inputs, their origin) for the model's inputs."""
    from .. import inputs as model_inputs
    if options.input:
        feed = model_inputs.load_inputs(options.input, specs, graph)
        return feed, {"file": str(options.input), "sha256": hashlib.sha256(options.input.read_bytes()).hexdigest()}
    if options.model:
        feed = model_inputs.random_inputs(specs, graph, options.input_seed, integer_high, options.input_count)
        count = f" --input-count {options.input_count}" if options.input_count else ""
        return feed, {"random_seed": options.input_seed, "floats": "uniform(-1, 1)",
                      "integers": "uniform over each Embedding's vocabulary, else 0..9",
                      "repeat_with": f"--input-seed {options.input_seed}{count}"}
    return model_inputs.study_inputs(specs), {"study": "a batch of one vector of ones"}


def convert_as_layers(options, model_dir):
    """A Keras model converted to a tfjs layers model in `model_dir`: (plan, Python's capture,
    the float64 reference, the unquantized one or None, the model's description)."""
    from .. import inputs as model_inputs
    from ..kinds import layers_model
    from ..reference import reference_capture
    from ..runners import python_runner
    source = load_source(options)
    failpoint("model built")
    layers_model.check_tfjs_can_run(source.graph)
    flat = layers_model.flat_tf_keras_model(source)
    specs = model_inputs.specs(source.graph)
    feed, origin = model_inputs_for(options, specs, source.graph)
    plan = layers_model.make_plan(source, flat, specs)
    # quantized: the unquantized model's exact answer first, from the weights before quantization
    unquantized = reference_capture(layers_model.float64_probe(source, plan), plan, feed) if options.qmap else None
    layers_model.stage_converted(flat, plan, feed, source, model_dir, options.qmap, options.quantized_source)
    capture = python_runner.capture(layers_model.python_probe(source, plan), plan, feed, options.repeat, options.budget,
                                options.repeat_check)
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


def convert_as_graph(options, model_dir):
    """The model converted to (or given as) a tfjs graph model in `model_dir`, read back and
    run as tfjs runs it: (plan, Python's capture, the float64 reference, the unquantized one
    or None, the description)."""
    from ..kinds import graph_backends, graph_convert, graph_model
    from ..reference import reference_capture
    from ..runners import python_runner
    graph_source, integer_high, original = None, None, None
    source_name = options.source.name
    if source_name == "graph_json":
        graph_convert.copy_converted(options.model, model_dir)
        origin_format = "tfjs graph model.json"
    elif source_name == "saved_model":
        model_dir.mkdir()
        signature = graph_convert.convert_saved_model(options.model, options.signature or "serving_default", model_dir)
        origin_format = "SavedModel"

        def original(feed, graph):
            import tensorflow as tf
            inputs = {key: tf.constant(feed[entry["name"].split(":")[0]])
                      for key, entry in graph.signature["inputs"].items()}
            return {key: value.numpy() for key, value in signature(**inputs).items()}
    else:
        source = load_source(options, parse_graph=False)
        failpoint("model built")
        model_dir.mkdir()
        graph_convert.convert_keras(source.model, source.keras, model_dir)
        origin_format = source.format
        graph_source = source.graph
        integer_high = source.smallest_vocabulary()

        def original(feed, graph):
            names = getattr(source.model, "input_names", None) or [t.name.split(":")[0] for t in source.model.inputs]
            names = names if all(name in feed for name in names) else list(feed)
            predictions = source.model.predict_on_batch([feed[name] for name in names] if len(names) > 1
                                                        else feed[names[0]])
            return list(predictions) if isinstance(predictions, (list, tuple)) else [predictions]
    graph = graph_model.read_graph_model(model_dir, options.model if source_name == "graph_json" else None)
    unquantized_graph = None
    if options.qmap:  # the converted graph read back before and after quantization: the original weights kept
        from ..quantization import quantize_converted
        quantize_converted(model_dir, options.qmap)
        graph, unquantized_graph = graph_model.read_graph_model(model_dir), graph
    graph_backends.check_tfjs_can_run(graph)
    specs = graph_model.specs(graph, options.input_shapes)
    feed, origin = model_inputs_for(options, specs, graph_source, integer_high)
    described = {"format": origin_format, "signature": options.signature or "serving_default"} \
        if source_name == "saved_model" else {"format": origin_format}
    foreseen = graph_backends.foreseen(graph)
    if foreseen:
        described["foreseen"] = foreseen
    session = graph_model.tensorflow_session(graph)
    plan = graph_model.make_plan(graph, specs, described, session, keep_plumbing=options.keep_plumbing)
    if graph.quantized:
        graph_model.record_quantization(graph, plan, options.qmap)
    probe = graph_model.python_probe(graph, plan, session)
    capture = python_runner.capture(probe, plan, feed, options.repeat, options.budget, options.repeat_check)
    if original is not None:  # the converter's optimizations, checked apart: the source against its graph
        try:
            outputs = original(feed, graph)
        except Exception as error:  # the original's own call (TensorFlow, Keras) failing says so, no more
            check = {"verdict": "not checked", "why": f"the original model fails on the input: {str(error)[:200]}"}
        else:
            # of the graph the converter wrote: before quantization, whose cost is measured apart
            converted = probe if unquantized_graph is None else graph_model.python_probe(unquantized_graph, plan)
            check = graph_convert.conversion_check(graph, converted, feed, outputs)
            del converted
        capture.metadata["conversion"] = check
    del probe, session  # the float32 graph's memory, before the float64 one's (ResNet50: hundreds of MB)
    exact = reference_capture(graph_model.float64_probe(graph, plan), plan, feed)
    unquantized = None if unquantized_graph is None else \
        reference_capture(graph_model.float64_probe(unquantized_graph, plan), plan, feed)
    graph_model.stage_plan(plan, feed, model_dir)
    return plan, *with_origin(origin, capture, exact, unquantized), \
        dict(described, file=str(options.model) if options.model else None, kind="graph", points=len(plan.points))


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


def options_from(args):
    """CreateOptions from create_keras_model.py's parsed arguments (the same names)."""
    names = {f.name for f in fields(CreateOptions)}
    given = {name: value for name, value in vars(args).items() if name in names}
    given["input_shape"] = given.get("input_shape") or []
    given["quantize"] = given.get("quantize") or []
    return CreateOptions(**given)
