"""Device mode and Firefox, used as a user would: run_browser.py --device serves on the address
it is told (127.0.0.2 here: an address other than the default, inside loopback), a real
browser opens the printed URL, the captures arrive and compare; every request without the
run's token, outside the allowlist, too big, for a backend not asked for, or after the run
is refused. Firefox (Debian's ESR, on Xvfb) runs as a local device."""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SMALL_MODEL, assert_one_line_error, check, copy_study, run_script, wait_for
from tfjs_parity.capture import Capture
from tfjs_parity.plan import PLAN_FILE, Plan
from tfjs_parity.runners.device_runner import parse_listen
from tfjs_parity.runners.session import DeviceSession, device_name

pytestmark = pytest.mark.slow  # the real steps, as subprocesses: see pytest.ini

STUDY = ("keras_model_python.json", "keras_model_float64.json", "keras_model_tfjs_node.json",
         "keras_model_tfjs_browser.json")
LISTEN = "127.0.0.2"


def start_device_mode(out, *args):
    child = subprocess.Popen([sys.executable, str(ROOT / "run_browser.py"), "--device", "--out-dir", str(out), *args],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    head = []
    for line in child.stdout:  # the URL comes before the QR code
        head.append(line)
        if line.startswith("  http://"):
            child.head = "".join(head)
            return child, line.strip()
    raise AssertionError(f"no URL printed; stderr: {child.stderr.read()}")


def open_in_chromium(url, wait_for_exit_of):
    """A headless Chromium (the kit's own launch) opens `url`, as a phone's browser would,
    and stays until the device run ends."""
    import pyppeteer
    from tfjs_parity.runners.chromium import Chromium, chromium_switches, find_chromium

    async def visit():
        with Chromium(find_chromium(), chromium_switches()) as chromium:
            browser = await pyppeteer.connect(browserWSEndpoint=chromium.endpoint)
            page = await browser.newPage()
            await page.goto(url)
            deadline = time.monotonic() + 240
            while wait_for_exit_of.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            status = await page.evaluate("document.getElementById('status').textContent")
            await browser.close()
            await browser.disconnect()
            return status
    return asyncio.run(visit())


@pytest.fixture(scope="module")
def device_run(small_study, tmp_path_factory):
    """The small study's folder plus a device run on 127.0.0.2 that a headless Chromium
    completed, with every backend."""
    out = copy_study(small_study, tmp_path_factory.mktemp("device"), STUDY)
    child, url = start_device_mode(out, "--listen", LISTEN, "--devices", "1", "--repeat", "2")
    status = open_in_chromium(url, child)
    stdout, stderr = child.communicate(timeout=60)
    return {"out": out, "url": url, "status": status, "code": child.returncode, "stdout": child.head + stdout,
            "stderr": stderr}


def test_device_mode_serves_where_told_and_the_captures_arrive_and_compare(device_run):
    assert device_run["code"] == 0, device_run["stderr"]
    url = device_run["url"]
    assert url.startswith(f"http://{LISTEN}:")
    device = device_name("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0 Safari/537.36").rsplit("-", 1)[0]
    names = sorted(p.name for p in device_run["out"].glob("keras_model_tfjs_device_*"))
    assert [n.split("_")[4] for n in names] == ["cpu", "wasm", "webgl", "webgpu"], names
    assert all(device in n for n in names)
    for line in (f"serving on {LISTEN}:", "nothing else, and only under the token", "opened the page", "wrote",
                 "done: 4 capture(s) received from 1 device(s)"):
        assert line in device_run["stdout"]
    assert "█" in device_run["stdout"] or "▀" in device_run["stdout"]  # the QR code
    assert "Done: the kit has every capture of this device" in device_run["status"]
    capture = Capture.load(next(device_run["out"].glob("keras_model_tfjs_device_webgl_*")))
    metadata = capture.metadata
    assert metadata["runtime"] == "device" and metadata["device"].startswith(device)
    assert "HeadlessChrome" in metadata["userAgent"] and "SwiftShader" in metadata["renderer"]
    assert metadata["gpu_vendor"] and metadata["gpu_limits"]["max_texture_size"] > 0
    assert metadata["precision_flags"]["WEBGL_RENDER_FLOAT32_ENABLED"] is True
    assert "WEBGL_FORCE_F16_TEXTURES" in metadata["precision_flags"]
    done = check(run_script("compare_outputs.py", "--out-dir", device_run["out"], "--full", "--rtol", "1e-3"))
    assert f"device/webgl/{metadata['device']}" in done.stdout  # the report names the device
    assert "PASSED" in done.stdout


def test_device_mode_listens_only_where_told(device_run, small_study, tmp_path):
    """While a run listens on 127.0.0.2, nothing answers at the same port on 127.0.0.1."""
    child, url = start_device_mode(copy_study(small_study, tmp_path, STUDY), "--listen", LISTEN)
    try:
        port = int(re.match(r"http://[\d.]+:(\d+)/", url)[1])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert request(url)[0] == 200
    finally:
        os.killpg(child.pid, signal.SIGINT)
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == 130 and "Traceback" not in stderr and stderr.startswith("interrupted"), stderr
    with pytest.raises((ConnectionRefusedError, urllib.error.URLError)):  # a request after the run ended
        request(url)


def request(url, data=None, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def session(small_study, tmp_path):
    out = copy_study(small_study, tmp_path, STUDY)
    with DeviceSession(out / "keras_converted" / "model.json", out, ["webgl", "cpu"], {},
                       listen=(LISTEN, 0)) as running:
        yield running


def _header(total_bytes, uploads):
    """A safetensors header of one tensor, of a capture of this run's model (its model id)."""
    capture = json.dumps({"metadata": {"model_id": uploads.model_id}, "keys": [["a_output", 1]]})
    header = json.dumps({"a_output/0": {"dtype": "F32", "shape": [total_bytes // 4], "data_offsets": [0, total_bytes]},
                         "__metadata__": {"capture": capture}}).encode()
    return len(header).to_bytes(8, "little") + header


def test_a_session_started_before_its_model_serves_it_and_takes_uploads_only_once_told(small_study, tmp_path):
    """--wait-for-model in Firefox: the page and tfjs now, the page told to wait (wait=served);
    the model's files, and uploads of it, only after serve_model(): a capture of the model
    that was there before is refused meanwhile."""
    out = copy_study(small_study, tmp_path, STUDY)
    model_json = out / "keras_converted" / "model.json"
    with DeviceSession(model_json, out, ["cpu"], {}, listen=(LISTEN, 0), later=True) as running:
        assert "wait=served" in running.url
        token = running.uploads.token
        assert request(running.server.url_of("/inference_in_browser.html"))[0] == 200
        assert request(running.server.url_of("/model/model.json"))[0] == 404
        begin = f"{running.server.url}/{token}/upload/{token}/cpu/begin"
        ours = Plan.load(out / "keras_converted" / PLAN_FILE).model_id
        early = _header(8, type("Uploads", (), {"model_id": ours}))
        status, said = request(begin, early)
        assert status == 409 and b"not made yet" in said, said
        running.serve_model()
        assert request(running.server.url_of("/model/model.json"))[0] == 200
        assert request(begin, _header(8, running.uploads))[0] == 204
        assert running.uploads.model_id == ours


def test_device_mode_refuses_what_was_not_asked_for(session):
    base = session.server.url
    token = session.uploads.token
    page = f"/{token}/inference_in_browser.html"
    assert request(base + page)[0] == 200
    for path in ("/inference_in_browser.html",                         # no token
                 f"/{token[:-1]}{'y' if token.endswith('x') else 'x'}/inference_in_browser.html",  # a wrong token
                 f"/{token}/../{token}/inference_in_browser.html",     # no path resolution
                 f"/{token}/model/../../etc/passwd", f"/{token}/README.md", f"/{token}/requirements.txt",
                 f"/{token}/node_modules/@tensorflow/tfjs/package.json", f"/{token}/"):  # outside the allowlist
        assert request(base + path)[0] == 404, path
    upload = f"{base}/{token}/upload/{token}"
    assert request(f"{upload}/webgpu/begin", _header(8, session.uploads))[0] == 404             # a backend not asked for
    assert request(f"{base}/{token}/upload/{'x' * len(token)}/webgl/begin", _header(8, session.uploads))[0] == 404  # another run
    assert request(f"{base}/upload/{token}/webgl/begin", _header(8, session.uploads))[0] == 404  # without the prefix
    oversize = _header(session.uploads.limit + 4, session.uploads)
    assert request(f"{upload}/webgl/begin", oversize)[0] == 413               # beyond the size limit
    assert request(f"{base}/{token}/report/{token}/webgpu", b'{"error": "x"}')[0] == 404
    assert request(base + page, headers={"Host": "evil.example:80"})[0] == 421  # DNS rebinding
    assert session.uploads.events.qsize() == 1  # only the page's opening was heard


def test_a_device_repeat_replaces_its_capture_and_never_corrupts(session, tmp_path):
    """Two uploads of one backend from one device: the second replaces the first, whole."""
    base, token = session.server.url, session.uploads.token
    upload = f"{base}/{token}/upload/{token}/cpu"
    agent = {"User-Agent": "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 Chrome/131.0 Mobile"}
    for value in (1.0, 2.0):
        data = np.full(2, value, np.float32).tobytes()
        assert request(f"{upload}/begin", _header(8, session.uploads), agent)[0] == 204
        assert request(f"{upload}/data", data, agent)[0] == 204
        assert request(f"{upload}/data", data, agent)[0] == 413  # more than its header announced
        assert request(f"{upload}/end", b"", agent)[0] == 204
        event = session.uploads.events.get(timeout=5)
        assert event == {"event": "uploaded", "device": "android-pixel-7-chrome-131", "name": "cpu"}
        staged = Path(session.uploads.take("cpu", event["device"]))
        assert staged.read_bytes().endswith(data)
        staged.unlink()


def test_devices_are_told_apart_capped_and_may_retry_an_unfinished_upload(small_study, tmp_path):
    out = copy_study(small_study, tmp_path, STUDY)
    agent = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 Chrome/131.0.0.0 Mobile Safari/537.36"
    with DeviceSession(out / "keras_converted" / "model.json", out, ["cpu"], {}, listen=(LISTEN, 0),
                       max_devices=2) as running:
        token = running.uploads.token
        upload = f"{running.server.url}/{token}/upload/{token}/cpu"
        data = np.ones(2, np.float32).tobytes()
        for device in ("aa11", "bb22"):  # the same User-Agent, two phones
            headers = {"User-Agent": agent, "X-Kit-Device": device}
            assert request(f"{upload}/begin", _header(8, running.uploads), headers)[0] == 204
            assert request(f"{upload}/data", data[:4], headers)[0] == 204  # the network drops here
            assert request(f"{upload}/begin", _header(8, running.uploads), headers)[0] == 204  # and the page starts again
            assert request(f"{upload}/data", data, headers)[0] == 204
            assert request(f"{upload}/end", b"", headers)[0] == 204
        assert request(f"{upload}/begin", _header(8, running.uploads), {"User-Agent": agent, "X-Kit-Device": "cc33"})[0] == 403
        events = [running.uploads.events.get(timeout=5) for _ in range(2)]
        assert [event["device"] for event in events] == ["android-chrome-131-aa11", "android-chrome-131-bb22"]
        assert request(f"{running.server.url}/{token}/report/{token}/cpu", b'{"error": "no WebGL here"}',
                       {"User-Agent": agent, "X-Kit-Device": "aa11"})[0] == 204
        assert running.uploads.events.get(timeout=5)["error"] == "no WebGL here"
        staged = sorted(Path(out).glob(".upload_cpu.*"))
        assert len(staged) == 2 and all(path.read_bytes().endswith(data) for path in staged)


def test_a_body_beyond_the_request_limit_is_refused_before_it_is_read(session):
    token = session.uploads.token
    host, port = session.server.netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(f"POST /{token}/upload/{token}/cpu/data HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           f"Content-Length: {3 * 2 ** 30}\r\n\r\n".encode())
        assert connection.recv(100).startswith(b"HTTP/1.0 413")


def test_requests_without_the_token_do_not_keep_a_device_run_alive(session):
    before = session.server.last_request
    time.sleep(0.05)
    assert request(f"{session.server.url}/inference_in_browser.html")[0] == 404
    assert session.server.last_request == before
    assert request(session.server.url_of("/inference_in_browser.html"))[0] == 200
    assert session.server.last_request > before


@pytest.mark.parametrize("agent, name", [
    ("Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile "
     "Safari/537.36", "android-pixel-7-chrome-131"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Mobile/15E148 Safari/604.1", "iphone-safari-17"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0", "linux-firefox-153"),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 Chrome/131.0.0.0 Mobile Safari/537.36", "android-chrome-131"),
    ("", "unknown-browser"),
    ("../../etc/passwd\n", "unknown-browser"),
])
def test_device_names_are_short_and_safe(agent, name):
    assert device_name(agent) == name


@pytest.mark.parametrize("text, expected", [("127.0.0.2", ("127.0.0.2", 0)), ("127.0.0.2:8800", ("127.0.0.2", 8800)),
                                            ("[::1]:8800", ("::1", 8800))])
def test_listen_takes_an_address_and_a_port(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("args, fragment", [(["--listen", "localhost"], "--listen"),
                                           (["--listen", "0.0.0.0"], "not every address"),
                                           (["--listen", "[::ffff:0.0.0.0]"], "not every address"),
                                           (["--listen", "224.0.0.1"], "one machine"),
                                           (["--listen", "127.0.0.1:99999"], "--listen"),
                                           (["--devices", "0"], "--devices")])
def test_bad_device_options_are_refused_by_name(args, fragment, tmp_path):
    done = run_script("run_browser.py", "--device", "--out-dir", tmp_path, *args)
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["--listen", "127.0.0.2"], ["--idle-timeout", "5"],
                                  ["--device", "--chromium-arg=--mute-audio"],
                                  ["--browser", "firefox", "--chromium-arg=--mute-audio"]])
def test_options_that_do_not_apply_are_refused(args, tmp_path):
    assert_one_line_error(run_script("run_browser.py", *args, "--out-dir", tmp_path))


# ---------------------------------------------------------------- Firefox, a second engine

FIREFOX_BACKENDS = ("webgl", "wasm", "cpu")


@pytest.fixture(scope="module")
def firefox_study(default_study, tmp_path_factory):
    """The original study's model (the defaults) in Firefox."""
    out = copy_study(default_study, tmp_path_factory.mktemp("firefox"), STUDY)
    log = out / "firefox_net"  # Firefox's own log of name lookups and sockets
    done = check(run_script("run_browser.py", "--browser", "firefox", "--backend", ",".join(FIREFOX_BACKENDS),
                            "--out-dir", out, "--repeat", "2",
                            env={"MOZ_LOG": "nsHostResolver:5,nsSocketTransport:5", "MOZ_LOG_FILE": str(log)}))
    return out, done


def test_firefox_runs_webgl_wasm_and_cpu_and_is_judged_like_the_rest(firefox_study):
    out, done = firefox_study
    for backend in FIREFOX_BACKENDS:
        capture = Capture.load(out / f"keras_model_tfjs_firefox_{backend}.json")
        assert capture.metadata["runtime"] == "firefox" and capture.metadata["backend"] == backend
        assert "Firefox/" in capture.metadata["userAgent"]
    webgl = Capture.load(out / "keras_model_tfjs_firefox_webgl.json").metadata
    assert webgl["precision_flags"]["WEBGL_VERSION"] == 2 and webgl["gpu_limits"]["color_buffer_float"]
    report = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "report.json"))
    results = {r["label"]: r for r in json.loads((out / "report.json").read_text())["captures"]}
    for backend in FIREFOX_BACKENDS:
        verdicts = {layer["verdict"] for layer in results[f"firefox/{backend}"]["layers"]}
        assert verdicts <= {"same bits", "float32 rounding"}, (backend, verdicts)
    assert "firefox/webgl" in report.stdout


def test_a_folder_with_only_python_s_and_firefox_s_captures_compares_with_verdicts(firefox_study, tmp_path):
    """compare takes what the folder has (issue 19): no Node or Chromium capture needed, and
    one line says what the study's full table would also need."""
    out = copy_study(firefox_study[0], tmp_path, ("keras_model_python.json", "keras_model_float64.json",
                                                  "keras_model_tfjs_firefox_webgl.json"))
    done = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "report.json"))
    assert "(the study's full table also needs keras_model_tfjs_node.json (`python run_node.py`); " \
           "keras_model_tfjs_browser.json (`python run_browser.py`))" in done.stdout.splitlines()
    assert "**********" not in done.stdout  # no study block without its capture
    results = {r["label"]: r for r in json.loads((out / "report.json").read_text())["captures"]}
    assert set(results) == {"python/tensorflow", "firefox/webgl"}
    assert {layer["verdict"] for layer in results["firefox/webgl"]["layers"]} <= {"same bits", "float32 rounding"}
    (out / "keras_model_tfjs_firefox_webgl.json").unlink()
    assert_one_line_error(run_script("compare_outputs.py", "--out-dir", out),
                          "holds Python's capture and nothing to compare it with")


def test_firefox_leaves_no_process_and_no_profile(firefox_study):
    import tempfile
    profiles = Path(tempfile.gettempdir()) / f"tfjs_parity-firefox-{os.getuid()}"
    assert not any(profiles.iterdir())
    alive = subprocess.run(["pgrep", "-f", "tfjs_parity-firefox-"], capture_output=True, text=True).stdout
    assert alive.strip() == ""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "keras3"])
def test_firefox_runs_own_models(zoo_runs, name, tmp_path):
    """Models from the own-model zoo (a CNN with batch norm; a Keras 3 two-input model), in
    Firefox: every layer float32 rounding, as in Chromium."""
    out = copy_study(zoo_runs[name][0], tmp_path, STUDY)
    check(run_script("run_browser.py", "--browser", "firefox", "--backend", ",".join(FIREFOX_BACKENDS),
                     "--out-dir", out, "--repeat", "1"))
    done = check(run_script("compare_outputs.py", "--out-dir", out, "--full", "--json", out / "report.json"))
    results = json.loads((out / "report.json").read_text())["captures"]
    assert {f"firefox/{backend}" for backend in FIREFOX_BACKENDS} <= {r["label"] for r in results}
    bad = [(r["label"], layer["layer"], layer["verdict"]) for r in results for layer in r["layers"]
           if layer["verdict"] not in ("same bits", "float32 rounding")]
    assert bad == [], (bad, done.stdout[-3000:])


def test_firefox_makes_no_calls_home(firefox_study):
    """Firefox's own log: no name looked up but loopback, and no socket connected anywhere but
    loopback (names resolve to 127.0.0.1 without DNS; HTTP goes to a dead proxy there)."""
    out, _ = firefox_study
    text = "".join(path.read_text(errors="replace") for path in out.glob("firefox_net*"))
    assert "Resolving host [127.0.0.1]" in text  # the log is real and complete
    looked_up = set(re.findall(r"Calling getaddrinfo for host \[([^\]]*)\]", text))
    assert looked_up <= {"127.0.0.1", "localhost"}, looked_up
    tried = re.findall(r"trying address: (\S+)", text)  # every address a socket connected to
    assert tried and all(address.startswith("127.") or address == "::1" for address in tried), set(tried)


def test_kill_9_of_a_firefox_run_leaves_no_firefox_or_display(small_study, tmp_path):
    out = copy_study(small_study, tmp_path, STUDY)
    child = subprocess.Popen([sys.executable, str(ROOT / "run_browser.py"), "--browser", "firefox", "--out-dir",
                              str(out), "--repeat", "100000", "--budget", "60"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = f".firefox-profile.~{child.pid}~"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _processes_with(marker):
        time.sleep(0.2)
    assert _processes_with(marker), "Firefox never started"
    time.sleep(2)  # its content processes and the page are running
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (_processes_with(marker) or _processes_with("Xvfb -displayfd")
                                           or _processes_with("firefox-esr")):
        time.sleep(0.1)
    assert _processes_with(marker) == [] and _processes_with("Xvfb -displayfd") == []
    assert _processes_with("firefox-esr") == []  # its content processes too (no other Firefox runs in the tests)


def _processes_with(text):
    done = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split() if int(pid) != os.getpid()]


def test_device_mode_ends_after_its_idle_timeout_in_one_line(small_study, tmp_path):
    out = copy_study(small_study, tmp_path, STUDY)
    done = run_script("run_browser.py", "--device", "--listen", LISTEN, "--idle-timeout", "1", "--out-dir", out)
    assert "no request for 1 s: stopping" in done.stdout
    assert_one_line_error(done, "no device uploaded a capture")


def test_a_full_disk_during_an_upload_is_told_to_the_device_and_the_kit(small_study, tmp_path):
    """The results folder on a 1 MiB tmpfs (where the machine lets a test mount one); else the
    write fails by injection. The device gets 507; the kit hears a failed backend."""
    out = copy_study(small_study, tmp_path / "out", STUDY)
    with DeviceSession(out / "keras_converted" / "model.json", out, ["cpu"], {}, listen=(LISTEN, 0)) as running:
        token = running.uploads.token
        upload = f"{running.server.url}/{token}/upload/{token}/cpu"
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)],
                                 capture_output=True).returncode == 0
        try:
            if not mounted:
                running.uploads.staging_dir = Path("/proc/no-such-folder")  # every write there fails
            size = 2 * 2 ** 20
            status, _ = request(f"{upload}/begin", _header(size, running.uploads))
            if status == 204:
                status, body = request(f"{upload}/data", bytes(size))
            assert status == 507, status
            event = running.uploads.events.get(timeout=5)
            assert event["event"] == "failed" and "cannot store it" in event["error"]
        finally:
            if mounted:
                subprocess.run(["umount", str(out)])


def test_an_upload_that_is_arriving_keeps_the_run_alive(session):
    token = session.uploads.token
    host, port = session.server.netloc.split(":")
    assert request(f"{session.server.url}/{token}/upload/{token}/cpu/begin", _header(8, session.uploads))[0] == 204
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(f"POST /{token}/upload/{token}/cpu/data HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           f"Content-Length: 8\r\n\r\n".encode())
        time.sleep(0.3)
        before = session.server.last_request
        time.sleep(0.3)
        connection.sendall(bytes(4))  # half the piece, a moment later
        # the server's state, waited for: how soon it reads the bytes is the machine's business
        assert wait_for(lambda: session.server.last_request > before, 10)
        connection.sendall(bytes(4))
        assert connection.recv(100).startswith(b"HTTP/1.0 204")


def test_idle_connections_beyond_the_limit_are_closed_at_once(session):
    from tfjs_parity.server import MAX_CONNECTIONS
    host, port = session.server.netloc.split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        # every idle connection accepted and holding its slot: a state the server has, waited for
        assert wait_for(lambda: session.server._httpd.connections._value == 0, 10)
        extra = socket.create_connection((host, int(port)), timeout=5)
        assert extra.recv(10) == b""  # closed by the kit, not left waiting
        extra.close()
    finally:
        for connection in idle:
            connection.close()
    assert wait_for(lambda: session.server._httpd.connections._value == MAX_CONNECTIONS, 10)
    assert request(session.server.url_of("/inference_in_browser.html"))[0] == 200  # and then served again
