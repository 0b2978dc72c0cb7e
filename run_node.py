"""Step 2 of 4: run the converted model under Node with @tensorflow/tfjs-node (TensorFlow's
native backend) and capture every layer.

    python run_node.py [--out-dir results] [--backend tensorflow|cpu|wasm|all]
                       [--flag NAME=VALUE ...] [--repeat 10] [--budget 10] [--format json|safetensors]
                       [--wait-for-model]

Reads OUT_DIR/keras_converted/ and writes OUT_DIR/keras_model_tfjs_node.json (backend
tensorflow), or keras_model_tfjs_node_<backend>[_<flags>].json for any other run; a capture
of more than a million values is written as .safetensors instead (--format chooses).
"""
import argparse
from pathlib import Path

from tfjs_parity import paths
from tfjs_parity.cli import run_main
from tfjs_parity.files import writable_out_dir
from tfjs_parity.runners import Job, node_runner
from tfjs_parity.steps import (ReadySignal, add_run_arguments, add_wait_argument, chosen_backends, flags_of, save_results,
                              variant_metadata)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=paths.DEFAULT_OUT_DIR, help="where results go (default: %(default)s)")
    add_run_arguments(parser, node_runner.BACKENDS, default_backend="tensorflow")
    add_wait_argument(parser)
    args = parser.parse_args()
    flags = flags_of(args.flag)
    metadata = variant_metadata(flags)
    writable_out_dir(args.out_dir)
    job = Job(args.out_dir / paths.CONVERTED_DIR / paths.MODEL_FILE, args.out_dir,
              chosen_backends(args.backend, node_runner.BACKENDS), flags, args.repeat, args.budget, metadata,
              go=ReadySignal() if args.wait_for_model else None, repeat_check=args.repeat_check,
              options=node_runner.Options())
    save_results(node_runner.run(job), args.out_dir, node_runner.NAME, flags, args.format)


if __name__ == "__main__":
    run_main(main)
