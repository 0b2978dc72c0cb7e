"""Step 1 of 4: build the study's Keras model, convert it to TensorFlow.js, run it in
TensorFlow Python and capture every layer's weights and output.

    python create_keras_model.py [--depth 10] [--units 50] [--seed 123] [--out-dir results]

Writes OUT_DIR/keras_converted/ (the tfjs model plus input.json, the input every runtime
sees), OUT_DIR/keras_model_python.json, and OUT_DIR/keras_model_float64.json: the same
model evaluated in float64 from the same float32 weights, the exact answer every runtime
is measured against.
"""
import argparse
from pathlib import Path

from tfjs_parity import paths
from tfjs_parity.cli import positive_int, run_main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # Defaults are the original study's model: 10 x Dense(50), RandomUniform(-1, 1, seed=123).
    parser.add_argument("--depth", type=positive_int, default=10, help="number of Dense layers (default 10)")
    parser.add_argument("--units", type=positive_int, default=50, help="units per layer and input size (default 50)")
    parser.add_argument("--seed", type=int, default=123, help="seed of the RandomUniform(-1, 1) initializer (default 123)")
    parser.add_argument("--repeat", type=positive_int, default=10, metavar="N",
                        help="timed predictions after one warm-up (default 10)")
    parser.add_argument("--out-dir", type=Path, default=paths.DEFAULT_OUT_DIR, help="where results go (default: %(default)s)")
    args = parser.parse_args()

    from tfjs_parity.model import build_study_model, held_stderr, save_converted, study_input
    from tfjs_parity.reference import reference_capture
    from tfjs_parity.runners import python_runner

    with held_stderr():  # TensorFlow's native logs, shown only if something fails
        model = build_study_model(args.depth, args.units, args.seed)
        inputs = study_input(model)
        capture = python_runner.run(model, inputs, args.repeat)
        exact = reference_capture(model, inputs)
        save_converted(model, inputs, args.out_dir / paths.CONVERTED_DIR)
    capture.save(args.out_dir / paths.PYTHON_CAPTURE)
    exact.save(args.out_dir / paths.REFERENCE_CAPTURE)
    print(f"wrote {args.out_dir / paths.CONVERTED_DIR}/, {args.out_dir / paths.PYTHON_CAPTURE} "
          f"and {args.out_dir / paths.REFERENCE_CAPTURE}")


if __name__ == "__main__":
    run_main(main)
