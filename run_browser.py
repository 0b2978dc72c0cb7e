"""Step 3 of 4: run the converted model in headless Chromium (tfjs WebGL backend), driven
by pyppeteer, and capture every layer.

    python run_browser.py [--out-dir results] [--backend webgl|wasm|cpu|webgpu|all]
                          [--precision f32|f16] [--flag NAME=VALUE ...] [--repeat 10] [--budget 10]
                          [--format json|safetensors] [--timeout 300] [--launch-timeout 30]
                          [--chromium-arg SWITCH ...]

Serves the page and model on 127.0.0.1 at a free port, takes the capture the page uploads
there (binary, on a one-time path), and writes OUT_DIR/keras_model_tfjs_browser.json
(backend webgl), or keras_model_tfjs_browser_<backend>[_<variant>].json for any other run;
a capture of more than a million values is written as .safetensors instead (--format
chooses). `all` shares one Chromium launch. CHROME_PATH picks the browser. Chromium runs in
its own process group with a fresh profile, both removed on every exit (a run killed with
SIGKILL takes its Chromium with it), and resolves no host name: it calls no one.
"""
import argparse
from pathlib import Path

from tfjs_parity import paths
from tfjs_parity.cli import run_main
from tfjs_parity.files import writable_out_dir
from tfjs_parity import KitError
from tfjs_parity.runners import browser_runner
from tfjs_parity.runs import (PRECISIONS, add_run_arguments, chosen_backends, cpu_model, flags_of, positive_float,
                              save_results, variant_metadata)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=paths.DEFAULT_OUT_DIR, help="where results go (default: %(default)s)")
    parser.add_argument("--chromium-arg", action="append", default=[], metavar="SWITCH",
                        help="extra Chromium switch, repeatable (e.g. --chromium-arg=--disable-webgl)")
    parser.add_argument("--timeout", type=positive_float, default=browser_runner.PAGE_TIMEOUT, metavar="SECONDS",
                        help="seconds each backend's page may take, loading included (default %(default)g)")
    parser.add_argument("--launch-timeout", type=positive_float, default=browser_runner.LAUNCH_TIMEOUT,
                        metavar="SECONDS", help="seconds Chromium may take to start (default %(default)g)")
    add_run_arguments(parser, browser_runner.BACKENDS, default_backend="webgl")
    # f16 emulates a phone GPU that renders to float16 textures (WEBGL_FORCE_F16_TEXTURES).
    parser.add_argument("--precision", choices=list(PRECISIONS), default="f32",
                        help="f16: store WebGL textures as float16, as many mobile GPUs do (default f32)")
    args = parser.parse_args()
    backends = chosen_backends(args.backend, browser_runner.BACKENDS)
    if args.precision == "f16" and backends != ["webgl"]:
        raise KitError("--precision f16 emulates float16 WebGL textures: use it with --backend webgl")
    flags = flags_of(args.flag, args.precision)
    # a page cannot see the CPU's name; this host's is it
    metadata = dict(cpu=cpu_model(), **variant_metadata(flags))
    writable_out_dir(args.out_dir)
    results = browser_runner.run(args.out_dir / paths.CONVERTED_DIR / "model.json", args.out_dir, backends, flags,
                                 args.repeat, args.budget, metadata, chromium_args=args.chromium_arg,
                                 timeout=args.timeout, launch_timeout=args.launch_timeout)
    save_results(results, args.out_dir, browser_runner.NAME, flags, args.format)


if __name__ == "__main__":
    run_main(main)
