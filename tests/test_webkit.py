"""WebKit (Safari's engine, as WebKitGTK) through its WebDriver, used as a user would:
run_browser.py --browser webkit runs every backend WebKit has here, the captures are judged
like the rest, it calls no one outside loopback (strace's log of every socket it connects),
and it leaves nothing behind."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import assert_one_line_error, check, copy_study, run_script
from tfjs_parity.capture import Capture

pytestmark = pytest.mark.slow  # the real steps, as subprocesses: see pytest.ini

STUDY = ("keras_model_python.json", "keras_model_float64.json", "keras_model_tfjs_node.json",
         "keras_model_tfjs_browser.json")
WEBKIT_BACKENDS = ("webgl", "wasm", "cpu")
CONNECT = re.compile(r'connect\(\d+, \{sa_family=(AF_INET6?), (?:sin_port|sin6_port)=htons\((\d+)\), '
                     r'(?:sin_addr=inet_addr\("([^"]+)"\)|sin6_flowinfo=[^,]*, inet_pton\(AF_INET6, "([^"]+)"\))')


def traced_webdriver(folder):
    """A WebKitWebDriver that runs under strace: every socket any WebKit process connects or
    sends to, logged in folder/strace.log (WEBKIT_WEBDRIVER names it)."""
    strace, driver = shutil.which("strace"), shutil.which("WebKitWebDriver")
    assert strace and driver, "make test installs strace and webkit2gtk-driver (scripts/install_webkit.sh)"
    wrapper = folder / "traced-webkitwebdriver"
    wrapper.write_text(f'#!/bin/sh\nexec {strace} -f -qq -e trace=connect,sendto,sendmsg '
                       f'-o {folder / "strace.log"} {driver} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def outside_connections(log):
    """(family, address, port) of every IP socket connected outside loopback, and how many
    IP connections the log holds in all."""
    found = [(family, v4 or v6, int(port)) for family, port, v4, v6 in CONNECT.findall(log)]
    outside = [c for c in found if not (c[1].startswith("127.") or c[1] == "::1")]
    return outside, len(found)


@pytest.fixture(scope="module")
def webkit_study(default_study, tmp_path_factory):
    """The original study's model (the defaults) in WebKit, every backend, under strace."""
    out = copy_study(default_study, tmp_path_factory.mktemp("webkit"), STUDY)
    done = check(run_script("run_browser.py", "--browser", "webkit", "--backend", "all", "--out-dir", out,
                            "--repeat", "2", env={"WEBKIT_WEBDRIVER": str(traced_webdriver(out))}))
    return out, done


def test_webkit_runs_webgl_wasm_and_cpu_and_is_judged_like_the_rest(webkit_study):
    out, done = webkit_study
    for backend in WEBKIT_BACKENDS:
        capture = Capture.load(out / f"keras_model_tfjs_webkit_{backend}.json")
        metadata = capture.metadata
        assert metadata["runtime"] == "webkit" and metadata["backend"] == backend
        # the User-Agent claims a Safari (Version/60.5); the capture says what ran
        assert "Safari/" in metadata["userAgent"] and metadata["engine"]["name"] == "WebKitGTK"
        assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["engine"]["version"]), metadata["engine"]
        assert metadata["webdriver"]["browserVersion"] == metadata["engine"]["version"]
    webgl = Capture.load(out / "keras_model_tfjs_webkit_webgl.json").metadata
    assert webgl["precision_flags"]["WEBGL_VERSION"] == 2 and webgl["gpu_limits"]["color_buffer_float"]
    assert "webgpu" not in done.stdout + done.stderr  # `all` is what WebKit has: no WebGPU here
    report = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "report.json"))
    results = {r["label"]: r for r in json.loads((out / "report.json").read_text())["captures"]}
    for backend in WEBKIT_BACKENDS:
        verdicts = {layer["verdict"] for layer in results[f"webkit/{backend}"]["layers"]}
        assert verdicts <= {"same bits", "float32 rounding"}, (backend, verdicts)
    header = next(line for line in report.stdout.splitlines() if "webkit/webgl" in line and "node/tensorflow" in line)
    assert header.split()[-3:] == ["webkit/webgl", "webkit/wasm", "webkit/cpu"]  # its columns, after Chromium's


def test_webkit_connects_to_nothing_outside_loopback(webkit_study):
    out, _ = webkit_study
    log = "".join(path.read_text(errors="replace") for path in out.glob("strace.log*"))
    outside, connections = outside_connections(log)
    assert connections >= 2  # the log is real: the driver's session and the page's server at least
    assert outside == []


class _Blank(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b"<!doctype html><title>blank</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_webkit_page_that_reaches_out_reaches_no_one(tmp_path, monkeypatch):
    """WebKit as the kit starts it, its page fetching names and addresses outside: every one
    refused, and no socket connected anywhere but loopback (the proxy there is dead)."""
    from tfjs_parity.runners.webdriver import request
    from tfjs_parity.runners.webkit_runner import WebKit
    monkeypatch.setenv("WEBKIT_WEBDRIVER", str(traced_webdriver(tmp_path)))
    server = ThreadingHTTPServer(("127.0.0.2", 0), _Blank)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with WebKit() as webkit:
            webkit.open(f"http://127.0.0.2:{server.server_address[1]}/")
            outcomes = request(webkit.endpoint, "POST", f"/session/{webkit.session}/execute/async", {"args": [], "script": """
                const done = arguments[0];
                Promise.all(['http://example.com/', 'https://www.google.com/', 'http://93.184.215.14/',
                             'http://[2606:4700::1]/', 'http://127.0.0.1.nip.io/', 'http://localhost.example/']
                  .map((url) => fetch(url, {mode: 'no-cors'}).then(() => 'reached ' + url, () => 'refused')))
                  .then(done);"""})
    finally:
        server.shutdown()
    assert outcomes == ["refused"] * 6
    outside, connections = outside_connections((tmp_path / "strace.log").read_text(errors="replace"))
    assert connections >= 6 and outside == []  # the page did ask (through the dead proxy), and nothing left


def test_webkit_leaves_no_process_and_no_profile(webkit_study):
    profiles = Path(tempfile.gettempdir()) / f"tfjs_parity-webkit-{os.getuid()}"
    assert not any(profiles.iterdir())
    alive = subprocess.run(["pgrep", "-f", "WebKitWebDriver|MiniBrowser"], capture_output=True, text=True).stdout
    assert alive.strip() == ""


@pytest.mark.parametrize("args, fragment", [(["--backend", "webgpu"], "no WebGPU"),
                                           (["--chromium-arg=--mute-audio"], "--chromium-arg"),
                                           (["--device"], "choose one")])
def test_what_webkit_cannot_do_is_one_line(args, fragment, tmp_path):
    assert_one_line_error(run_script("run_browser.py", "--browser", "webkit", *args, "--out-dir", tmp_path), fragment)


@pytest.mark.parametrize("name", ["cnn"])
def test_webkit_runs_own_models(zoo_runs, name, tmp_path):
    """A CNN with batch norm from the own-model zoo, in WebKit: every layer float32 rounding."""
    out = copy_study(zoo_runs[name][0], tmp_path, STUDY)
    check(run_script("run_browser.py", "--browser", "webkit", "--backend", "all", "--out-dir", out, "--repeat", "1"))
    done = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "report.json"))
    results = json.loads((out / "report.json").read_text())["captures"]
    assert {f"webkit/{backend}" for backend in WEBKIT_BACKENDS} <= {r["label"] for r in results}
    bad = [(r["label"], layer["layer"], layer["verdict"]) for r in results for layer in r["layers"]
           if r["label"].startswith("webkit/") and layer["verdict"] not in ("same bits", "float32 rounding")]
    assert bad == [], (bad, done.stdout[-3000:])
