"""Step 4 of 4: diff the captures layer by layer and print the original study's report.

    python compare_outputs.py [--out-dir results] [CAPTURE ...] [--full]
                              [--rtol R] [--atol A] [--max-ulp N] [--allow-mismatch]
                              [--json FILE] [--html FILE] [--explain] [--wait-for-captures]

With no CAPTURE files: prints the study's two blocks, tf.Keras Python vs tfjs Node and
tf.Keras Python vs tfjs Browser, one line per tensor (how many values differ, their average
absolute difference); when the folder holds more captures (other backends, flags), then one
table of every capture against Python, a row per layer. With CAPTURE files: a block for
each, then the table (the converted model and Python's capture are taken from the first
CAPTURE's folder unless --out-dir says otherwise). Every capture records the id of the
model it was made from: one made from another model is named stale, not compared.

--explain (docs/explain.md) then reruns each capture with a mismatch with every relevant
tfjs flag changed and on its runtime's other backends, names the change that avoids its
first mismatch, and writes a standalone reproducer of that point to OUT_DIR/repro/.

--full then judges every layer of every capture against the exact answer (the model in
float64, keras_model_float64.json): metrics, a verdict (same bits, float32 rounding,
reduced precision, overflow, mismatch) and who is closest to the truth. --rtol/--atol/
--max-ulp make it a gate: exit 1 naming the first capture and layer beyond them, or with a
mismatch verdict (unless --allow-mismatch). --json
and --html write the whole result for machines and for people.
"""
import argparse
from pathlib import Path

from tfjs_parity import paths
from tfjs_parity.cli import non_negative_float, run_main
from tfjs_parity.pipeline import compare


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("captures", nargs="*", type=Path, metavar="CAPTURE",
                        help="capture files to compare with Python's (default: every capture in --out-dir)")
    parser.add_argument("--out-dir", type=Path,
                        help="where the captures and the converted model are (default: the folder of the first "
                             f"CAPTURE, else {paths.DEFAULT_OUT_DIR})")
    parser.add_argument("--full", action="store_true",
                        help="after the study's blocks, every metric and verdict against the float64 reference")
    gate = parser.add_argument_group("gate (exit 1 when a capture exceeds a limit against float64, or any "
                                     "layer's verdict is mismatch)")
    gate.add_argument("--rtol", type=non_negative_float, help="max |a - exact| / max |exact| per layer")
    gate.add_argument("--atol", type=non_negative_float, help="max |a - exact| per layer (added to rtol's allowance)")
    gate.add_argument("--max-ulp", type=non_negative_float, help="max distance in float32 ULPs of any value")
    gate.add_argument("--allow-mismatch", action="store_true",
                      help="gate on the limits alone, even where a verdict says mismatch")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the full result as JSON")
    parser.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    parser.add_argument("--explain", action="store_true",
                        help="for each capture with a mismatch: rerun its runtime with each relevant tfjs flag "
                             "changed and on its other backends, say which change avoids the first mismatching "
                             "point, and write a standalone reproducer of it to OUT_DIR/repro/ (implies --full; "
                             "docs/explain.md)")
    parser.add_argument("--wait-for-captures", action="store_true",
                        help="start up now, and read the captures only once a line arrives on stdin: to start "
                             "beside the steps that make them, told when they are done (make run does)")
    args = parser.parse_args()
    return compare.run(compare.options_from(args))


if __name__ == "__main__":
    run_main(main)
