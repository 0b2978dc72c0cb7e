"""Benchmark: every step of the kit on three sizes of model, with wall time and peak memory.

    python scripts/bench.py [--models study,dense1000,resnet50,resnet50_graph] [--keep DIR]

(`make bench`.) For the default study, 10 x Dense(1000) (10M weights) and ResNet50 (25.6M
weights, random): step 1 (Python capture + float64 reference), Node (tensorflow backend),
the browser (WebGL), compare (the study's blocks and table) and compare --full (verdicts);
per step the wall time and the peak resident memory of its largest process; the capture
sizes against the raw float32 size; the study's own way of comparing (two JSON files of
nested lists, loaded and diffed with numpy) on the same captures, in the same run; the
start-ups no run can avoid (TensorFlow, Node with tfjs-node, Chromium with tfjs), and
`make run` warm against their sum. Prints figures; asserts nothing.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable

MODELS = {
    "study": [],
    "dense1000": ["--depth", "10", "--units", "1000"],
    "resnet50": None,  # built below, then --model
    "resnet50_graph": None,  # the same ResNet50, --as graph: a graph model beside the layers model
}
STUDY_WAY = """
import json, sys, numpy as np
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for key in a:
    for x, y in zip(a[key], b[key]):
        x, y = np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)
        print(key, int(np.sum(x != y)), float(np.sum(np.abs(x - y)) / x.size))
"""


# Linux counts the memory of the process that forked a child in the child's peak (exec keeps
# the larger of the two): measured straight from this script, which holds hundreds of MB of
# captures by then, every step's peak was at least this script's. A small launcher forks the
# step instead and reports the step's own figures.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{time.perf_counter() - start} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def measure(command, env=None):
    """(wall seconds, peak MiB of the largest process, stdout) of `command`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as figures:
        subprocess.run([PY, "-c", LAUNCHER, figures.name, *map(str, command)], cwd=ROOT, stdout=out, stderr=err,
                       env=dict(os.environ, **(env or {})))
        wall, peak_kib, code = figures.read().split()
        out.seek(0)
        err.seek(0)
        if int(code) != 0:
            raise SystemExit(f"failed: {' '.join(map(str, command))}\n{err.read().decode()[-2000:]}")
        return float(wall), int(peak_kib) / 1024, out.read().decode()


def build_resnet50(folder):
    path = folder / "resnet50.h5"
    script = ("import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'\nimport tf_keras\n"
              "tf_keras.utils.set_random_seed(0)\n"
              f"tf_keras.applications.ResNet50(weights=None).save({str(path)!r}, save_format='h5')\n")
    subprocess.run([PY, "-c", script], check=True, capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return path


def capture_files(out):
    return sorted(p for p in out.iterdir() if p.name.startswith("keras_model_") and p.suffix in (".json", ".safetensors"))


def study_way(out, folder):
    """The study's comparison on this run's Python and Node captures: write both as JSON files
    of nested lists, then time loading and diffing them (the JSON writing is not timed)."""
    from tfjs_parity.capture import Capture
    from tfjs_parity.paths import find_capture
    files = []
    for name in ("keras_model_python.json", "keras_model_tfjs_node.json"):
        capture = Capture.load(find_capture(out, name))
        path = folder / f"study_{name}"
        with open(path, "w") as f:
            json.dump({key: [a.tolist() for a in capture.tensors[key]] for key in capture.tensors}, f)
        files.append(path)
    wall, peak, _ = measure([PY, "-c", STUDY_WAY, *map(str, files)])
    size = sum(p.stat().st_size for p in files) / 2
    for path in files:
        path.unlink()
    return wall, peak, size


def sequential_matrix(out):
    """Seconds of make matrix's runs as separate steps, one after the other (its old way)."""
    from tfjs_parity.study import ENGINE_RUNS, MATRIX_RUNS
    steps = [("create_keras_model.py",), *MATRIX_RUNS, *(run for run, *_ in ENGINE_RUNS),
             ("compare_outputs.py", "--html", str(out / "r.html"), "--json", str(out / "r.json"))]
    return sum(measure([PY, str(ROOT / script), "--out-dir", str(out), *rest])[0] for script, *rest in steps)


def startups():
    """Seconds of the start-ups a run cannot avoid, each measured alone (best of 3), up to the
    moment it is ready: not the teardown after (Python's teardown of TensorFlow alone is 0.9 s)."""
    tf = min(measure([PY, "-c", "import os, tensorflow; os._exit(0)"], {"TF_CPP_MIN_LOG_LEVEL": "3"})[0]
             for _ in range(3))
    node = min(measure(["node", "-e", "require('@tensorflow/tfjs-node'); process.exit(0)"],
                       {"TF_CPP_MIN_LOG_LEVEL": "3"})[0] for _ in range(3))
    browser = min(measure([PY, str(Path(__file__)), "--chromium-start"])[0] for _ in range(3))
    return {"import tensorflow": tf, "node + tfjs-node": node, "Chromium + page + tfjs": browser}


def chromium_start():
    """Start headless Chromium as run_browser.py does and load a page with tfjs; then end at
    once (Chromium dies with this process: its parent-death signal)."""
    import asyncio
    import shutil
    from tfjs_parity.paths import NODE_MODULES
    from tfjs_parity.runners.chromium import Chromium, chromium_switches, connect, find_chromium
    from tfjs_parity.server import PageServer
    page_file = Path(tempfile.mkdtemp()) / "page.html"
    page_file.write_text("<script src='tf.min.js'></script>")

    async def run():
        with PageServer({"/page.html": page_file,
                         "/tf.min.js": NODE_MODULES / "@tensorflow/tfjs/dist/tf.min.js"}) as server:
            with Chromium(find_chromium(), chromium_switches()) as chromium:
                browser = await connect(chromium.endpoint)
                page = await browser.newPage()
                await page.goto(f"{server.url}/page.html")
                await page.waitForFunction("typeof tf !== 'undefined'")
                shutil.rmtree(chromium.profile, ignore_errors=True)
                os._exit(0)
    asyncio.run(run())


def _figure(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else format("-", f">{spec.split('.')[0]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--keep", type=Path, help="keep the runs' folders here instead of a temporary folder")
    parser.add_argument("--chromium-start", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chromium_start:
        return chromium_start()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tfjs_parity_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    rows, sizes, ways, shipped = [], [], [], []
    for name in args.models.split(","):
        out = folder / name
        model_args = MODELS[name] if MODELS[name] is not None else ["--model", str(build_resnet50(folder))]
        if name.endswith("_graph"):
            model_args = [*model_args, "--as", "graph"]
        steps = [("create_keras_model.py", [*model_args, "--repeat", "3"]), ("run_node.py", ["--repeat", "3"]),
                 ("run_browser.py", ["--repeat", "3"]), ("compare_outputs.py", []),
                 ("compare_outputs.py", ["--full"])]
        for script, extra in steps:
            wall, peak, _ = measure([PY, str(ROOT / script), "--out-dir", str(out), *extra])
            rows.append((name, f"{script} {' '.join(a for a in extra if a.startswith('--full'))}".strip(), wall, peak))
            print(f"  {rows[-1][0]:<14} {rows[-1][1]:<30} {wall:7.1f} s {peak:7.0f} MiB", file=sys.stderr)
        from tfjs_parity.capture import Capture
        for path in capture_files(out):
            capture = Capture.load(path)
            sizes.append((name, path.name, path.stat().st_size, capture.values * 4))
            timing, memory = capture.metadata.get("timing"), capture.metadata.get("memory") or {}
            if timing:
                shipped.append((name, capture.label, timing.get("cold_ms"), timing["median_ms"],
                                memory.get("numBytes"), memory.get("numBytesInGPU")))
        if not name.startswith("resnet50"):  # its JSON files would be over a gigabyte each
            compare_wall = next(r[2] for r in rows if r[0] == name and r[1] == "compare_outputs.py")
            compare_peak = next(r[3] for r in rows if r[0] == name and r[1] == "compare_outputs.py")
            wall, peak, size = study_way(out, folder)
            ways.append((name, wall, peak, size, compare_wall, compare_peak))
    ups = startups()
    make_times = []
    for _ in range(3):  # the first warms the caches
        make_times.append(measure(["make", "--no-print-directory", "-s", "run"])[0])

    print("Per step (wall time; peak memory of the step's largest process):")
    print(f"{'model':<14} {'step':<30} {'wall s':>8} {'peak MiB':>9}")
    for name, step, wall, peak in rows:
        print(f"{name:<14} {step:<30} {wall:8.1f} {peak:9.0f}")
    print("\nThe model as shipped, per runtime (its own prediction: cold = load + first, warm = median;"
          " tf.memory() after it ran):")
    print(f"{'model':<14} {'runtime':<18} {'cold ms':>9} {'warm ms':>9} {'x python':>9} {'MiB':>8} {'GPU MiB':>8}")
    for name, label, cold, warm, held, gpu in shipped:
        python = next(w for n, lab, _, w, _, _ in shipped if n == name and lab.startswith("python"))
        print(f"{name:<14} {label:<18} {_figure(cold, '9.1f')} {warm:9.2f} {warm / python:8.2g}x "
              f"{_figure(held and held / 2 ** 20, '8.1f')} {_figure(gpu and gpu / 2 ** 20, '8.1f')}")
    print("\nCapture sizes:")
    print(f"{'model':<14} {'file':<48} {'MB':>8} {'raw f32 MB':>10} {'ratio':>6}")
    for name, file, size, raw in sizes:
        print(f"{name:<14} {file:<48} {size / 1e6:8.2f} {raw / 1e6:10.2f} {size / raw:6.3f}")
    print("\nCompare (study blocks + table) against the study's way (2 JSON files of nested lists + numpy):")
    print(f"{'model':<14} {'JSON MB':>8} {'study s':>8} {'study MiB':>9} {'kit s':>7} {'kit MiB':>8} {'faster':>7}")
    for name, wall, peak, size, kit_wall, kit_peak in ways:
        print(f"{name:<14} {size / 1e6:8.1f} {wall:8.2f} {peak:9.0f} {kit_wall:7.2f} {kit_peak:8.0f} "
              f"{wall / kit_wall:6.1f}x")
    total = sum(ups.values())
    print("\nStart-ups: " + ", ".join(f"{k} {v:.2f} s" for k, v in ups.items()) + f"; sum {total:.2f} s")
    print(f"make run (warm, best of {len(make_times) - 1}): {min(make_times[1:]):.2f} s = "
          f"{min(make_times[1:]) / total:.2f}x the start-ups")
    matrix_times = [measure(["make", "--no-print-directory", "-s", "matrix"])[0] for _ in range(2)]
    one_by_one = sequential_matrix(folder / "matrix_one_by_one")
    print(f"make matrix (warm, best of {len(matrix_times)}): {min(matrix_times):.2f} s = "
          f"{min(matrix_times) / total:.2f}x the start-ups; its steps one by one: {one_by_one:.2f} s = "
          f"{one_by_one / total:.2f}x (Firefox's own start-up not counted in the start-ups)")
    if not args.keep:
        import shutil
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
