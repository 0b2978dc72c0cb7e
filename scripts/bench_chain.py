"""compare_outputs.py --full on chains of Relu nodes (issue 33): how the steps grow with the
number of nodes of a graph model. Builds a bare graph model.json of N chained Relu nodes (no
weights), runs step 1, Node's tensorflow backend and compare --full, and prints wall time and
peak memory per step. Figures, no pass/fail.

    make bench-chain
    python scripts/bench_chain.py [--sizes 1000,10000,100000] [--out-dir results/bench_chain]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def chain(folder, size):
    """A graph model.json: x -> Relu -> Relu -> ... (`size` nodes), as the converter writes one."""
    nodes = [{"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"},
                                                         "shape": {"shape": {"dim": [{"size": "1"}, {"size": "8"}]}}}}]
    previous = "x"
    for k in range(size):
        nodes.append({"name": f"relu_{k}", "op": "Relu", "input": [previous], "attr": {"T": {"type": "DT_FLOAT"}}})
        previous = f"relu_{k}"
    document = {"format": "graph-model", "modelTopology": {"node": nodes, "versions": {"producer": 1395}},
                "weightsManifest": [],
                "signature": {"inputs": {"x": {"name": "x:0", "dtype": "DT_FLOAT",
                                               "tensorShape": {"dim": [{"size": "1"}, {"size": "8"}]}}},
                              "outputs": {"y": {"name": f"{previous}:0", "dtype": "DT_FLOAT"}}}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(document))
    return folder / "model.json"


def timed(*command):
    """(seconds, peak MiB) of one step: its own rusage (os.wait4), not its siblings'."""
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, *map(str, command)], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    stderr = child.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {stderr.strip().splitlines()[-1:]}")
    return time.monotonic() - started, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="chain lengths, comma-separated (default %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "results" / "bench_chain")
    args = parser.parse_args()
    print(f"{'nodes':>8}  {'step 1':>14}  {'node/tensorflow':>16}  {'compare --full':>16}")
    for size in (int(s) for s in args.sizes.split(",")):
        out = args.out_dir / f"chain_{size}"
        model = chain(args.out_dir / f"model_{size}", size)
        figures = [timed("create_keras_model.py", "--model", model, "--out-dir", out, "--repeat", "1"),
                   timed("run_node.py", "--out-dir", out, "--repeat", "1"),
                   timed("compare_outputs.py", "--out-dir", out, "--full")]
        print(f"{size:>8}  " + "  ".join(f"{s:>7.1f} s {m:>5.0f} MiB" for s, m in figures), flush=True)


if __name__ == "__main__":
    main()
