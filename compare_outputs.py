"""Step 4 of 4: diff the captures layer by layer and print the original study's report.

    python compare_outputs.py [--out-dir results]

Prints two blocks, tf.Keras Python vs tfjs Node and tf.Keras Python vs tfjs Browser, one
line per tensor: how many values differ and their average absolute difference.
"""
import argparse
from pathlib import Path

from tfjs_parity import paths
from tfjs_parity.capture import Capture
from tfjs_parity.cli import run_main
from tfjs_parity.compare import compare_captures
from tfjs_parity.report import study_block

BLOCKS = [("tf.Keras Python vs tfjs Node", paths.NODE_CAPTURE),
          ("tf.Keras Python vs tfjs Browser", paths.BROWSER_CAPTURE)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=paths.DEFAULT_OUT_DIR, help="where the captures are (default: %(default)s)")
    args = parser.parse_args()

    def load(name):
        return Capture.load(args.out_dir / name, made_by=paths.MADE_BY[name])

    reference = load(paths.PYTHON_CAPTURE)
    blocks = [study_block(title, compare_captures(reference, load(name))) for title, name in BLOCKS]
    print("\n\n".join(blocks))


if __name__ == "__main__":
    run_main(main)
