"""Step 3 of 4: run the converted model in headless Chromium (tfjs WebGL backend), driven
by pyppeteer, and capture every layer; or in Firefox; or on any device (a phone) that opens
the URL it prints.

    python run_browser.py [--out-dir results] [--backend webgl|wasm|cpu|webgpu|all]
                          [--precision f32|f16] [--flag NAME=VALUE ...] [--repeat 10] [--budget 10]
                          [--format json|safetensors] [--timeout 300] [--launch-timeout 30]
                          [--chromium-arg SWITCH ...] [--wait-for-model]
    python run_browser.py --browser firefox [--backend ...] [the same options]
    python run_browser.py --device [--listen ADDRESS[:PORT]] [--devices N] [--idle-timeout 600]
                          [--backend ...] [the same options]

Serves the page and model on 127.0.0.1 at a free port, takes the capture the page uploads
there (binary, on a one-time path), and writes OUT_DIR/keras_model_tfjs_browser.json
(backend webgl), or keras_model_tfjs_browser_<backend>[_<variant>].json for any other run;
a capture of more than a million values is written as .safetensors instead (--format
chooses). `all` shares one Chromium launch. CHROME_PATH picks the browser. Chromium runs in
its own process group with a fresh profile, both removed on every exit (a run killed with
SIGKILL takes its Chromium with it), and resolves no host name: it calls no one.

--browser firefox runs Firefox ESR (FIREFOX_PATH, or firefox-esr on PATH; `make
setup-firefox`) on a virtual display, and writes keras_model_tfjs_firefox_<backend>.json.

--device serves the page, tfjs and the model on --listen (default 127.0.0.1, a free port;
give this machine's LAN address for a phone on the same network) under a fresh random
token, prints the URL and a QR code, and saves each capture a device uploads as
keras_model_tfjs_device_<backend>_<device>.json (the device named from its browser's
User-Agent). Every backend runs unless --backend says otherwise; a backend the device
lacks is reported, not fatal. It ends after --devices N devices, after --idle-timeout
seconds without a request, or on Ctrl-C.
"""
import argparse
from pathlib import Path

from tfjs_parity import KitError, paths
from tfjs_parity.cli import positive_int, run_main
from tfjs_parity.files import writable_out_dir
from tfjs_parity.runners import Job, browser_runner, device_runner, firefox_runner
from tfjs_parity.steps import (PRECISIONS, ReadySignal, add_run_arguments, add_wait_argument, chosen_backends, cpu_model,
                              flags_of, positive_float, save_results, variant_metadata)


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
    add_run_arguments(parser, browser_runner.BACKENDS, default_backend=None)
    add_wait_argument(parser)
    parser.add_argument("--browser", choices=["chromium", "firefox"], default="chromium",
                        help="which engine runs the page here (default chromium)")
    device = parser.add_argument_group("a real device (a phone, any browser)")
    device.add_argument("--device", action="store_true",
                        help="serve the page for devices to open, and save what they upload")
    device.add_argument("--listen", type=device_runner.parse_listen, metavar="ADDRESS[:PORT]",
                        help="where to serve with --device (default 127.0.0.1, a free port): never more than this")
    device.add_argument("--devices", type=positive_int, metavar="N",
                        help="end once N devices have reported on every backend (default: on Ctrl-C)")
    device.add_argument("--idle-timeout", type=positive_float, metavar="SECONDS",
                        help=f"end after this long without a request (default {device_runner.IDLE_TIMEOUT:g})")
    # f16 emulates a phone GPU that renders to float16 textures (WEBGL_FORCE_F16_TEXTURES).
    parser.add_argument("--precision", choices=list(PRECISIONS), default="f32",
                        help="f16: store WebGL textures as float16, as many mobile GPUs do (default f32)")
    args = parser.parse_args()
    if (args.listen or args.devices) and not args.device:
        raise KitError("--listen and --devices are for --device")
    if args.device and args.browser == "firefox":
        raise KitError("--browser firefox runs Firefox here; --device waits for other browsers: choose one")
    if args.chromium_arg and (args.device or args.browser == "firefox"):
        raise KitError("--chromium-arg is for Chromium; it does not apply with --device or --browser firefox")
    if args.idle_timeout is not None and not args.device:
        raise KitError("--idle-timeout is for --device")
    if args.wait_for_model and args.device:
        raise KitError("--wait-for-model is for Chromium and Firefox runs here; it does not apply with --device")
    # a device runs every backend it has, unless told; Chromium and Firefox here run WebGL
    backends = chosen_backends(args.backend or ("all" if args.device else "webgl"), browser_runner.BACKENDS)
    if args.precision == "f16" and backends != ["webgl"]:
        raise KitError("--precision f16 emulates float16 WebGL textures: use it with --backend webgl")
    flags = flags_of(args.flag, args.precision)
    # a page cannot see the CPU's name; this host's is it (but not a phone's)
    metadata = dict({} if args.device else {"cpu": cpu_model()}, **variant_metadata(flags))
    writable_out_dir(args.out_dir)
    runner = device_runner if args.device else firefox_runner if args.browser == "firefox" else browser_runner
    job = Job(args.out_dir / paths.CONVERTED_DIR / paths.MODEL_FILE, args.out_dir, backends, flags, args.repeat,
              args.budget, metadata, go=ReadySignal() if args.wait_for_model else None, repeat_check=args.repeat_check,
              save=lambda backend, capture, variant: save_results({backend: capture}, args.out_dir, runner.NAME,
                                                                  flags, args.format, variant=variant),
              options={"chromium_args": args.chromium_arg, "timeout": args.timeout,
                       "launch_timeout": args.launch_timeout, "listen": args.listen, "devices": args.devices,
                       "idle_timeout": args.idle_timeout})
    save_results(runner.run(job), args.out_dir, runner.NAME, flags, args.format)

if __name__ == "__main__":
    run_main(main)
