"""run_browser.py --webdriver against real WebDriver servers the tests start: chromedriver
(Debian's chromium-driver, on loopback: it takes no address to bind) and WebKitWebDriver on
127.0.0.2, with the kit serving the page on 127.0.0.3. Two sessions at once give the captures
the direct runs give, bit for bit; a refused session, a dead, hanging, garbage-speaking or
endless endpoint, and a session that uploads another run's capture are one line each while
the other session completes, and nothing is saved that is not this run's."""
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import assert_one_line_error, check, copy_study, run_script
from tfjs_parity.capture import Capture
from tfjs_parity.runners.browsers import VirtualDisplay
from tfjs_parity.runners.chromium import chromium_switches, find_chromium
from tfjs_parity.runners.webkit_runner import find_minibrowser

pytestmark = pytest.mark.slow  # real browsers, as subprocesses: see pytest.ini

STUDY = ("keras_model_python.json", "keras_model_float64.json", "keras_model_tfjs_node.json",
         "keras_model_tfjs_browser.json")
KIT_LISTENS = "127.0.0.3"


def free_port(host):
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until_answering(url, child, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert child.poll() is None, f"{child.args[0]} exited with {child.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/status", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@pytest.fixture(scope="module")
def endpoints():
    """{"chrome": (URL, capabilities), "webkit": (URL, capabilities)}: real WebDriver servers,
    stopped at the end."""
    chromedriver, webkitdriver = shutil.which("chromedriver"), shutil.which("WebKitWebDriver")
    assert chromedriver and webkitdriver, "make test installs chromium-driver and webkit2gtk-driver"
    display = VirtualDisplay().start()
    chrome_port, webkit_port = free_port("127.0.0.1"), free_port("127.0.0.2")
    children = [subprocess.Popen([chromedriver, f"--port={chrome_port}"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True),
                subprocess.Popen([webkitdriver, f"--port={webkit_port}", "--host=127.0.0.2"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                 env=dict(os.environ, DISPLAY=display.name))]
    try:
        chrome, webkit = f"http://127.0.0.1:{chrome_port}", f"http://127.0.0.2:{webkit_port}"
        wait_until_answering(chrome, children[0])
        wait_until_answering(webkit, children[1])
        yield {"chrome": (chrome, {"browserName": "chrome",
                                   "goog:chromeOptions": {"binary": find_chromium(), "args": chromium_switches()}}),
               "webkit": (webkit, {"browserName": "MiniBrowser",
                                   "webkitgtk:browserOptions": {"binary": find_minibrowser(), "args": ["--automation"]}})}
    finally:
        for child in children:
            child.terminate()
            child.wait(10)
        display.stop()


def webdriver_args(*sessions):
    args = []
    for url, capabilities in sessions:
        args += ["--webdriver", url, "--capabilities", json.dumps(capabilities)]
    return args


def same_bits(a, b):
    a, b = Capture.load(a), Capture.load(b)
    return list(a.tensors) == list(b.tensors) and all(
        x.tobytes() == y.tobytes() for key in a.tensors for x, y in zip(a.tensors[key], b.tensors[key]))


def test_two_sessions_at_once_give_the_direct_runs_captures_bit_for_bit(endpoints, default_study, tmp_path):
    out = copy_study(default_study, tmp_path, STUDY)
    check(run_script("run_browser.py", "--browser", "webkit", "--out-dir", out))
    done = check(run_script("run_browser.py", "--out-dir", out, "--listen", KIT_LISTENS, "--backend", "webgl,cpu",
                            *webdriver_args(endpoints["chrome"], endpoints["webkit"])))
    names = sorted(p.name for p in out.glob("keras_model_tfjs_webdriver_*"))
    assert len(names) == 4 and all(("chrome-" in n) != ("minibrowser-" in n) for n in names), names
    chrome = next(out / n for n in names if "webgl" in n and "chrome" in n)
    webkit = next(out / n for n in names if "webgl" in n and "minibrowser" in n)
    # Chromium's WebGL through chromedriver is Chromium's WebGL through DevTools; WebKit likewise
    assert same_bits(chrome, out / "keras_model_tfjs_browser.json")
    assert same_bits(webkit, out / "keras_model_tfjs_webkit_webgl.json")
    described = Capture.load(webkit).metadata
    assert described["runtime"] == "webdriver" and described["webdriver"]["browserName"] == "MiniBrowser"
    assert described["device"].startswith("linux-minibrowser-")
    assert done.stderr == ""
    report = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "report.json"))
    results = {r["label"]: r for r in json.loads((out / "report.json").read_text())["captures"]}
    judged = [label for label in results if label.startswith("webdriver/")]
    assert len(judged) == 4, list(results)
    for label in judged:
        assert {layer["verdict"] for layer in results[label]["layers"]} <= {"same bits", "float32 rounding"}
    assert "webdriver/webgl" in report.stdout


def test_a_refused_session_and_a_dead_endpoint_are_one_line_each_while_the_other_completes(endpoints, default_study,
                                                                                              tmp_path):
    out = copy_study(default_study, tmp_path, STUDY)
    chrome_url, _ = endpoints["chrome"]
    dead = f"http://127.0.0.2:{free_port('127.0.0.2')}"  # nothing listens there
    done = run_script("run_browser.py", "--out-dir", out, "--listen", KIT_LISTENS, "--backend", "cpu",
                      "--launch-timeout", "20",
                      *webdriver_args((chrome_url, {"browserName": "no such browser"}), endpoints["webkit"],
                                      (dead, {})))
    assert done.returncode == 3, done  # some saved, some not
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: webdriver/cpu: ") for line in lines), lines
    assert chrome_url in lines[0] and "no session" in lines[0]
    assert dead in lines[1] and "no session" in lines[1]
    assert [p.name for p in out.glob("keras_model_tfjs_webdriver_*")] == \
        [f"keras_model_tfjs_webdriver_cpu_{Capture.load(next(out.glob('keras_model_tfjs_webdriver_*'))).metadata['device']}.json"]


class Hostile(BaseHTTPRequestHandler):
    """A WebDriver endpoint that misbehaves as its path's first part says."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/alive-hang"):  # asked whether the session is there: no answer
            time.sleep(60)
        self._answer({"value": "http://example.invalid/"})

    def do_DELETE(self):  # noqa: N802
        self._answer({"value": None})

    def do_POST(self):  # noqa: N802
        kind = self.path.split("/")[1]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if kind == "garbage":
            self._raw(b"<html>I am not a WebDriver</html>")
        elif kind == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()  # no length: the body goes on until the connection closes
            try:
                self.wfile.write(b'{"value": "' + b"x" * (4 << 20))
            except OSError:
                pass
            self.close_connection = True
        elif kind == "drip":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            self.close_connection = True
        elif kind == "hang":
            time.sleep(3600)
        elif kind == "alive-hang":  # a session that opens nothing, and then never answers
            self._answer({"value": {"sessionId": "s2", "capabilities": {"browserName": "silent"}}}
                         if self.path.endswith("/session") else {"value": None})
        elif kind == "other-run":
            if self.path.endswith("/session"):
                self._answer({"value": {"sessionId": "s1", "capabilities": {"browserName": "impostor"}}})
            else:  # told to open the kit's page: upload another run's capture there instead
                url = json.loads(body)["url"]
                threading.Thread(target=self._upload_another_runs_capture, args=(url,), daemon=True).start()
                self._answer({"value": None})

    def _upload_another_runs_capture(self, url):
        parts = urlsplit(url)
        token = parts.path.split("/")[1]
        device = parse_qs(parts.query)["device"][0]
        capture = json.dumps({"metadata": {"model_id": "another-run"}, "keys": [["dense_0_output", 1]]})
        header = json.dumps({"dense_0_output/0": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                             "__metadata__": {"capture": capture}}).encode()
        request = urllib.request.Request(f"{parts.scheme}://{parts.netloc}/{token}/upload/{token}/cpu/begin",
                                         data=len(header).to_bytes(8, "little") + header,
                                         headers={"X-Kit-Device": device})
        try:
            urllib.request.urlopen(request, timeout=10).read()
        except OSError as error:
            Hostile.refused.append(getattr(error, "code", None))

    refused = []

    def _answer(self, value):
        self._raw(json.dumps(value).encode())

    def _raw(self, data):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_hostile_endpoints_are_one_line_each_and_nothing_of_theirs_is_saved(endpoints, default_study, tmp_path):
    out = copy_study(default_study, tmp_path, STUDY)
    server = ThreadingHTTPServer(("127.0.0.2", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.2:{server.server_address[1]}"
    kinds = ("garbage", "huge", "drip", "hang", "other-run", "alive-hang")
    try:
        done = run_script("run_browser.py", "--out-dir", out, "--listen", KIT_LISTENS, "--backend", "cpu",
                          "--launch-timeout", "5", "--timeout", "10",
                          *webdriver_args(*((f"{base}/{kind}", {}) for kind in kinds), endpoints["chrome"]))
    finally:
        server.shutdown()
    assert done.returncode == 3, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(kinds) and all(line.startswith("error: webdriver/cpu: ") for line in lines), lines
    said = dict(zip(kinds, lines))
    assert "no JSON" in said["garbage"]
    assert "more than 1,048,576 bytes" in said["huge"]
    # each bounded by --launch-timeout, not by the endpoint (the hang would last an hour)
    assert "within 5 s" in said["drip"] or "no answer" in said["drip"]
    assert "within 5 s" in said["hang"] or "no answer" in said["hang"]
    assert "impostor" in said["other-run"] and "no capture arrived" in said["other-run"]
    assert "silent" in said["alive-hang"]  # and its silence did not cost the real session its capture (below)
    assert Hostile.refused and all(code == 409 for code in Hostile.refused)  # the kit refused its upload
    saved = sorted(p.name for p in out.glob("keras_model_tfjs_webdriver_*"))
    assert len(saved) == 1 and "chrome" in saved[0], saved  # only the real session's capture
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no staging file left


@pytest.mark.parametrize("args, fragment", [
    (["--capabilities", "{}"], "--capabilities is for --webdriver"),
    (["--webdriver", "ftp://127.0.0.1/"], "http:// or https://"),
    (["--webdriver", "http://127.0.0.1:1", "--webdriver", "http://127.0.0.1:2", "--capabilities", "{}",
      "--capabilities", "{}", "--capabilities", "{}"], "one for every --webdriver"),
    (["--webdriver", "http://127.0.0.1:1", "--device"], "choose one"),
    (["--webdriver", "http://127.0.0.1:1", "--browser", "firefox"], "choose one"),
    (["--webdriver", "http://127.0.0.1:1", "--chromium-arg=--mute-audio"], "--chromium-arg"),
    (["--webdriver", "http://127.0.0.1:1", "--wait-for-model"], "--wait-for-model")])
def test_bad_webdriver_options_are_one_line(args, fragment, tmp_path):
    assert_one_line_error(run_script("run_browser.py", *args, "--out-dir", tmp_path), fragment)


@pytest.mark.parametrize("capabilities, fragment", [("[1]", "a JSON object"), ("{not json", "not valid JSON"),
                                                    ("no-such-file.json", "no-such-file.json")])
def test_capabilities_that_are_not_a_json_object_are_refused_by_name(capabilities, fragment, tmp_path):
    done = run_script("run_browser.py", "--webdriver", "http://127.0.0.1:1", "--capabilities", capabilities,
                      "--out-dir", tmp_path)
    assert done.returncode == 2 and "argument --capabilities" in done.stderr and fragment in done.stderr
    assert "Traceback" not in done.stderr
