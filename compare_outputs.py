"""Step 4 of 4: diff the captures layer by layer and print the original study's report.

    python compare_outputs.py [--out-dir results] [CAPTURE ...]

With no CAPTURE files: prints the study's two blocks, tf.Keras Python vs tfjs Node and
tf.Keras Python vs tfjs Browser, one line per tensor (how many values differ, their average
absolute difference); when the folder holds more captures (other backends, flags), then one
table of every capture against Python, a row per layer. With CAPTURE files: a block for
each, then the table.
"""
import argparse
from pathlib import Path

from tfjs_parity import paths
from tfjs_parity.capture import Capture
from tfjs_parity.cli import run_main
from tfjs_parity.compare import compare_captures
from tfjs_parity.report import layer_table, study_block

BLOCKS = [("tf.Keras Python vs tfjs Node", paths.NODE_CAPTURE),
          ("tf.Keras Python vs tfjs Browser", paths.BROWSER_CAPTURE)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("captures", nargs="*", type=Path, metavar="CAPTURE",
                        help="capture files to compare with Python's (default: every capture in --out-dir)")
    parser.add_argument("--out-dir", type=Path, default=paths.DEFAULT_OUT_DIR,
                        help="where the captures are (default: %(default)s)")
    args = parser.parse_args()

    reference = Capture.load(args.out_dir / paths.PYTHON_CAPTURE, made_by=paths.MADE_BY[paths.PYTHON_CAPTURE])
    if args.captures:
        others = [Capture.load(path) for path in args.captures]
        titled = [(f"tf.Keras Python vs tfjs {c.label}", c) for c in others]
    else:
        study = [Capture.load(args.out_dir / name, made_by=paths.MADE_BY[name]) for _, name in BLOCKS]
        titled = [(title, c) for (title, _), c in zip(BLOCKS, study)]
        others = study + [Capture.load(path) for path in sorted(args.out_dir.glob("keras_model_tfjs_*.json"))
                          if path.name not in (name for _, name in BLOCKS)]
    diffs = {id(c): compare_captures(reference, c) for c in others}
    sections = [study_block(title, diffs[id(c)]) for title, c in titled]
    if len(others) > len(BLOCKS) or args.captures:
        others.sort(key=_column_order)
        sections.append(layer_table(reference, [diffs[id(c)] for c in others], others))
    print("\n\n".join(sections))


def _column_order(capture):
    """Node before the browser, each runtime's backends in its runner's order, variants last."""
    from tfjs_parity.runners import RUNNERS
    runtime = capture.metadata.get("runtime")
    backends = list(getattr(RUNNERS.get(runtime), "BACKENDS", ()))
    backend = capture.metadata.get("backend")
    return (list(RUNNERS).index(runtime) if runtime in RUNNERS else len(RUNNERS),
            backends.index(backend) if backend in backends else len(backends),
            capture.metadata.get("variant") or "")


if __name__ == "__main__":
    run_main(main)
