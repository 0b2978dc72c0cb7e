"""Step 2 of 4: run the converted model under Node with @tensorflow/tfjs-node (TensorFlow's
native backend) and capture every layer.

    python run_node.py [--out-dir results]

Reads OUT_DIR/keras_converted/ and writes OUT_DIR/keras_model_tfjs_node.json.
"""
import argparse
from pathlib import Path

from tfjs_parity import paths
from tfjs_parity.cli import run_main
from tfjs_parity.runners import node_runner


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=paths.DEFAULT_OUT_DIR, help="where results go (default: %(default)s)")
    args = parser.parse_args()
    capture = node_runner.run(args.out_dir / paths.CONVERTED_DIR / "model.json")
    capture.save(args.out_dir / paths.NODE_CAPTURE)
    print(f"wrote {args.out_dir / paths.NODE_CAPTURE} ({capture.label})")


if __name__ == "__main__":
    run_main(main)
