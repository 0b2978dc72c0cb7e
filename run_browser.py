"""Step 3 of 4: run the converted model in headless Chromium (tfjs WebGL backend), driven
by pyppeteer, and capture every layer; or in Firefox or WebKit here; or in the browsers of
any WebDriver endpoints; or on any device (a phone) that opens the URL it prints.

    python run_browser.py [--out-dir results] [--backend webgl|wasm|cpu|webgpu|all]
                          [--precision f32|f16] [--flag NAME=VALUE ...] [--repeat 10] [--budget 10]
                          [--format json|safetensors] [--timeout 300] [--launch-timeout 30]
                          [--chromium-arg SWITCH ...] [--wait-for-model]
    python run_browser.py --browser firefox|webkit [--backend ...] [the same options]
    python run_browser.py --webdriver URL --capabilities JSON_OR_FILE [--webdriver ... ...]
                          [--listen ADDRESS[:PORT]] [--backend ...] [the same options]
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

--browser webkit runs WebKitGTK (Safari's engine; `make setup-webkit`) through its
WebDriver on a virtual display, and writes keras_model_tfjs_webkit_<backend>.json.

--webdriver asks each endpoint (Selenium Grid, a device cloud, chromedriver) for a session
with its --capabilities (passed untouched), opens the page there and saves what each session
uploads as keras_model_tfjs_webdriver_<backend>_<platform>-<browser>-<version>.json.

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
from tfjs_parity.cli import run_main
from tfjs_parity.files import writable_out_dir
from tfjs_parity.runners import (Job, browser_runner, browsers, device_runner, firefox_runner, webdriver_runner,
                                 webkit_runner)
from tfjs_parity.steps import (PRECISIONS, ReadySignal, add_run_arguments, add_wait_argument, chosen_backends, cpu_model,
                              flags_of, save_results, variant_metadata)

ENGINES = {"chromium": browser_runner, "firefox": firefox_runner, "webkit": webkit_runner}  # --browser: the engines run here
RUNNERS = (*ENGINES.values(), device_runner, webdriver_runner)  # each adds its own flags and reads them (runners/base.py)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=paths.DEFAULT_OUT_DIR, help="where results go (default: %(default)s)")
    parser.add_argument("--browser", choices=list(ENGINES), default="chromium",
                        help="which engine runs the page here (default chromium)")
    browsers.add_arguments(parser)
    add_run_arguments(parser, browser_runner.BACKENDS, default_backend=None)
    add_wait_argument(parser)
    # f16 emulates a phone GPU that renders to float16 textures (WEBGL_FORCE_F16_TEXTURES).
    parser.add_argument("--precision", choices=list(PRECISIONS), default="f32",
                        help="f16: store WebGL textures as float16, as many mobile GPUs do (default f32)")
    for runner in RUNNERS:
        if hasattr(runner, "add_arguments"):
            runner.add_arguments(parser)
    args = parser.parse_args()
    if args.device and args.browser != "chromium":
        raise KitError(f"--browser {args.browser} runs {args.browser} here; --device waits for other browsers: "
                       "choose one")
    if args.webdriver and (args.device or args.browser != "chromium"):
        raise KitError(f"--webdriver runs the page in the endpoints' browsers; {'--device' if args.device else '--browser'}"
                       " chooses another: choose one")
    runner = device_runner if args.device else webdriver_runner if args.webdriver else ENGINES[args.browser]
    browsers.foreign_flags(parser, args, runner, RUNNERS)
    if args.wait_for_model and (args.device or args.webdriver):
        raise KitError("--wait-for-model is for the browsers run here; it does not apply with "
                       + ("--device" if args.device else "--webdriver"))
    # a device runs every backend it has, unless told; a browser here runs WebGL
    backends = chosen_backends(args.backend or ("all" if args.device or args.webdriver else "webgl"), runner.BACKENDS)
    lacking = [backend for backend in backends if backend not in runner.BACKENDS]
    if lacking:
        why = getattr(runner, "LACKS", {}).get(lacking[0]) or f"{runner.NAME} has no {lacking[0]} backend"
        raise KitError(f"--backend {lacking[0]}: {why}")
    if args.precision == "f16" and backends != ["webgl"]:
        raise KitError("--precision f16 emulates float16 WebGL textures: use it with --backend webgl")
    flags = flags_of(args.flag, args.precision)
    # a page cannot see the CPU's name; this host's is it (but not a phone's)
    metadata = dict({} if args.device or args.webdriver else {"cpu": cpu_model()}, **variant_metadata(flags))
    writable_out_dir(args.out_dir)
    job = Job(args.out_dir / paths.CONVERTED_DIR / paths.MODEL_FILE, args.out_dir, backends, flags, args.repeat,
              args.budget, metadata, go=ReadySignal() if args.wait_for_model else None, repeat_check=args.repeat_check,
              options=runner.options(args))
    save_results(runner.run(job), args.out_dir, runner.NAME, flags, args.format)


if __name__ == "__main__":
    run_main(main)
