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
from pathlib import Path

from tfjs_parity import paths, sandbox
from tfjs_parity.cli import int64, positive_int, run_main, seed32
from tfjs_parity.pipeline import create
from tfjs_parity.sandbox import DEFAULT_TIMEOUT
from tfjs_parity.steps import add_format_argument, add_timing_arguments, positive_float


def main():
    args = arguments().parse_args()
    if args.in_sandbox:
        sandbox.started_inside(args.in_sandbox)
    line = create.run(create.checked(create.options_from(args)))
    if line is not None:  # (the sandbox's child prints nothing: the kit outside prints its line)
        print(line)


def arguments():
    """Step 1's command line (pipeline/create.py's CreateOptions, by the same names)."""
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
    return parser


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


if __name__ == "__main__":
    run_main(main)
