"""The browser runner under hostile conditions, done for real: run_browser.py killed with
SIGKILL, SIGTERM and a terminal's Ctrl-C while Chromium starts and while the page runs; a
CHROME_PATH that exits at once or never starts; a page that runs out of time; Chromium's own
traffic, read from its net log; and a model folder holding symlinks."""
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import pytest

from conftest import ROOT, SMALL_MODEL, assert_one_line_error, check, run_script, wait_for
from tfjs_parity.runners import chromium as browser_chromium, page as browser_page
from tfjs_parity.server import PageServer

pytestmark = pytest.mark.slow  # the real steps, as subprocesses: see pytest.ini


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A folder holding the small model, converted (what run_browser.py needs)."""
    out = tmp_path_factory.mktemp("hostile_browser")
    check(run_script("create_keras_model.py", *SMALL_MODEL, "--out-dir", out))
    return out


def fresh_copy(converted, target):
    shutil.copytree(converted / "keras_converted", target / "keras_converted")
    return target


# ---------------------------------------------------------------- processes


def processes():
    """{pid: (session id, command line)} of every live process."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie is dead, only not yet reaped by its parent
            found[int(entry.name)] = (int(fields[3]), command)
    return found


def profile_marker(kit_pid):
    """What the command line of a Chromium started by the kit process `kit_pid` holds."""
    return f"tfjs_parity-chromium-{os.getuid()}/.chromium-profile.~{kit_pid}~"


def leftovers_of(browser_pid, marker):
    """Processes still alive of a Chromium whose browser process was `browser_pid`: in its
    session (the helpers stay in it), or naming its profile folder."""
    return {pid: command for pid, (session, command) in processes().items()
            if session == browser_pid or marker in command}


def start_run(out, *args, env=None):
    """run_browser.py started as a terminal starts a command: its own session and process group."""
    return subprocess.Popen([sys.executable, str(ROOT / "run_browser.py"), "--out-dir", str(out), *map(str, args)],
                            cwd=ROOT, env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def browser_of(run, marker, timeout=60):
    """The pid of the Chromium browser process the run started (its helpers carry --type=)."""
    def find():
        for pid, (_, command) in processes().items():
            if marker in command and "--type=" not in command:
                return pid
        assert run.poll() is None, run.communicate()
        return None
    pid = wait_for(find, timeout, step=0.005)
    assert pid, "Chromium did not start"
    return pid


SIGNALLED = {"SIGINT": (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
             "SIGTERM": (signal.SIGTERM, 143, "terminated (SIGTERM)"),
             "SIGKILL": (signal.SIGKILL, -9, None)}


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["launch", "page"])
@pytest.mark.parametrize("name", list(SIGNALLED))
def test_a_killed_or_interrupted_run_leaves_no_chromium_and_says_one_line(converted, tmp_path, name, moment):
    signum, status, line = SIGNALLED[name]
    out = fresh_copy(converted, tmp_path)
    # a page that times for 20 s: long enough to be interrupted in the middle of it
    run = start_run(out, "--repeat", "100000", "--budget", "20")
    marker = profile_marker(run.pid)
    try:
        browser = browser_of(run, marker)
        if moment == "page":  # the page's renderer is up and the model running
            assert wait_for(lambda: any(session == browser and "--type=renderer" in command
                                        and "--top-chrome-webui" not in command
                                        for session, command in processes().values()), 30)
            time.sleep(1.5)
            assert run.poll() is None
        # what a terminal does on Ctrl-C: the signal goes to the whole foreground process group
        os.killpg(run.pid, signum) if signum == signal.SIGINT else os.kill(run.pid, signum)
        stopped = time.monotonic()
        stdout, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == status, stderr
    assert "Traceback" not in stderr and "Task exception" not in stderr and "Future exception" not in stderr
    if line is None:
        assert stderr == ""
    else:
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith(line), stderr
    assert wait_for(lambda: not leftovers_of(browser, marker), 5 - (time.monotonic() - stopped)), \
        leftovers_of(browser, marker)
    profiles = list(browser_chromium.profiles_folder().glob(f".chromium-profile.~{run.pid}~*"))
    if signum == signal.SIGKILL:
        # nothing of the kit could run: its profile stays until the next run, which removes it
        # (another run on this machine may have done so already: any run does)
        assert len(profiles) <= 1
        fresh = browser_chromium.new_profile()
        try:
            assert not any(profile.exists() for profile in profiles)
        finally:
            shutil.rmtree(fresh)
    else:
        assert profiles == []
    assert not (out / "keras_model_tfjs_browser.json").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["browser", "renderer", "gpu-process"])
def test_chromium_or_the_page_dying_mid_run_is_one_line_at_once(converted, tmp_path, victim):
    out = fresh_copy(converted, tmp_path)
    # on cpu the model runs in the page's renderer (the busiest one); on webgl in the GPU process
    backend = "webgl" if victim == "gpu-process" else "cpu"
    run = start_run(out, "--backend", backend, "--repeat", "100000", "--budget", "20")
    marker = profile_marker(run.pid)
    try:
        browser = browser_of(run, marker)
        time.sleep(3)

        def cpu_time(pid):
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[11])
        helpers = [pid for pid, (session, command) in processes().items() if session == browser
                   and f"--type={victim}" in command and "--top-chrome-webui" not in command]
        os.kill(browser if victim == "browser" else max(helpers, key=cpu_time), signal.SIGKILL)
        stopped = time.monotonic()
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert time.monotonic() - stopped < 150  # at once, not at the page's --timeout (300 s)
    said = {"browser": "browser/cpu: Chromium exited with status -9 (killed by SIGKILL)",
            "renderer": "browser/cpu: the page crashed (its renderer process died)",
            "gpu-process": "error: "}[victim]  # tfjs's own error or the lost WebGL context, whichever comes first
    assert_one_line_error(subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr), said)
    assert wait_for(lambda: not leftovers_of(browser, marker), 5), leftovers_of(browser, marker)
    assert list(browser_chromium.profiles_folder().glob(f".chromium-profile.~{run.pid}~*")) == []


# ---------------------------------------------------------------- launch failures


def fake_chromium(folder, body):
    path = folder / "fake-chromium"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("body, status, said", [(None, 1, "it printed nothing"),
                                                ("echo 'warming up' >&2\necho 'no display, giving up' >&2\nexit 3\n",
                                                 3, "its last output: no display, giving up")])
def test_a_chromium_that_exits_at_once_is_one_line_in_seconds(converted, tmp_path, body, status, said):
    out = fresh_copy(converted, tmp_path)
    executable = "/bin/false" if body is None else str(fake_chromium(tmp_path, body))
    started = time.monotonic()
    # a launch timeout far beyond the run: Chromium's death is noticed at once, not at the timeout
    run = start_run(out, "--launch-timeout", "300", env={"CHROME_PATH": executable})
    stdout, stderr = run.communicate(timeout=600)
    elapsed = time.monotonic() - started
    assert_one_line_error(subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr),
                          f"CHROME_PATH={executable}", f"exited at once with status {status}", said)
    assert elapsed < 150, elapsed  # Python's start included
    assert list(browser_chromium.profiles_folder().glob(f".chromium-profile.~{run.pid}~*")) == []


def test_a_chromium_that_never_starts_is_stopped_at_the_launch_timeout(converted, tmp_path):
    out = fresh_copy(converted, tmp_path)
    tag = str(uuid.uuid4().int % 10 ** 9 + 10 ** 9)  # a number no other process has on its command line
    # a wrapper that starts a child and never announces DevTools: both must go
    executable = fake_chromium(tmp_path, f"echo 'starting' >&2\nsleep {tag} &\nsleep {tag}1\n")
    started = time.monotonic()
    run = start_run(out, "--launch-timeout", "2", env={"CHROME_PATH": str(executable)})
    stdout, stderr = run.communicate(timeout=60)
    elapsed = time.monotonic() - started
    assert run.returncode == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"error: CHROME_PATH={executable} did not start within 2 s"), stderr
    assert "its last output: starting" in stderr and "--launch-timeout" in stderr
    assert 2 <= elapsed < 60, elapsed  # waited for the 2 s, and stopped then (the message says which limit)
    assert wait_for(lambda: not [c for _, c in processes().values() if f"sleep {tag}" in c], 5)


def test_the_kit_keeps_its_own_switches(converted, tmp_path):
    out = fresh_copy(converted, tmp_path)
    for switch in ("--user-data-dir=/tmp/elsewhere", "--remote-debugging-port=9222"):
        assert_one_line_error(run_script("run_browser.py", "--out-dir", out, f"--chromium-arg={switch}"),
                              switch, "the kit sets")


def test_extra_features_are_merged_into_the_kits():
    switches = browser_chromium.chromium_switches(["--disable-features=Foo", "--enable-features=Bar,Baz", "--x"])
    enabled = [s for s in switches if s.startswith("--enable-features=")]
    disabled = [s for s in switches if s.startswith("--disable-features=")]
    assert len(enabled) == 1 and enabled[0].split("=")[1].split(",") == ["Vulkan", "Bar", "Baz"]
    assert len(disabled) == 1 and disabled[0].endswith(",Foo") and "MediaRouter" in disabled[0]
    assert switches[-1] == "--x"


# ---------------------------------------------------------------- the page's time limit


def test_the_page_time_limit_is_an_option_and_quotes_only_the_page(converted, tmp_path):
    out = fresh_copy(converted, tmp_path)
    # DEBUG=true makes tfjs log every kernel: the page's own console has plenty to say
    started = time.monotonic()
    done = run_script("run_browser.py", "--out-dir", out, "--flag", "DEBUG=true", "--timeout", "2",
                      "--repeat", "100000", "--budget", "300")
    assert time.monotonic() - started < 150  # stopped at the 2 s limit, not at the 300 s budget
    assert_one_line_error(done, "browser/webgl: the page did not finish within 2 s (--timeout)",
                          "its console said: ")
    # what it quotes is tfjs's own kernel log ("%c<kernel> %c<time>ms"); which kernels the last
    # lines name depends on where the page was when the limit struck, so no kernel is named here
    quoted = done.stderr.split("its console said: ", 1)[1]
    assert re.search(r"%c_?[A-Za-z]\w* %c[0-9.]+ms", quoted), quoted
    # Chromium's words for a missing file; a bare "404" can be a kernel's timing (1.040475ms)
    for noise in ("favicon", "status of 404", "Failed to load"):
        assert noise not in done.stderr, noise


# ---------------------------------------------------------------- calls home


LOOPBACK_NAMES = {"localhost"}
IPV6_PROBE = "2001:4860:4860::8888"  # Chromium's IPv6 reachability check: a UDP connect(), no packet


def is_loopback(host):
    host = (host or "").strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(key, value):
    """The host a net log parameter names, or None when it names none."""
    if key in ("url", "destination", "host"):
        if "://" not in value:
            return value.rsplit(":", 1)[0] if key == "host" and value.count(":") == 1 else value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https", "ws", "wss", "ftp"):
            return None  # data:, about:, chrome: ... reach no host
        return parts.hostname
    if key == "hostname":
        return value
    if key in ("address", "remote_address"):
        return value.rsplit(":", 1)[0]
    return None


def outside_calls(netlog):
    """What a net log shows of hosts outside loopback: (requests: URLs and names asked for;
    network: DNS queries and sockets connected; the IPv6 probes; loopback URLs seen)."""
    types = {number: name for name, number in netlog["constants"]["logEventTypes"].items()}
    sent_on = {event["source"]["id"] for event in netlog["events"]
               if types.get(event["type"]) in ("UDP_BYTES_SENT", "SOCKET_BYTES_SENT")}
    requests, network, probes, loopback = [], [], [], []
    for event in netlog["events"]:
        kind, params = types.get(event["type"]), event.get("params") or {}
        if kind in ("UDP_LOCAL_ADDRESS", "TCP_ACCEPT"):
            continue  # this machine's own address
        if kind == "DNS_TRANSACTION":
            network.append((kind, params.get("hostname")))  # a name sent to a DNS server
            continue
        for key, value in params.items():
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, str):
                    continue
                host = host_of("address" if key == "address_list" else key, item)
                if host is None:
                    continue
                if is_loopback(host):
                    if key == "url":
                        loopback.append(item)
                elif key not in ("address", "remote_address", "address_list"):
                    requests.append((kind, key, item[:120]))
                elif kind in ("UDP_CONNECT", "SOCKET_CONNECT") and host.strip("[]") == IPV6_PROBE \
                        and event["source"]["id"] not in sent_on:
                    probes.append(event["source"]["id"])
                else:
                    network.append((kind, key, item))
    return requests, network, probes, loopback


@pytest.mark.slow
def test_chromium_calls_no_one_and_the_model_folders_symlink_is_not_served(converted, tmp_path):
    out = fresh_copy(converted, tmp_path)
    (out / "keras_converted" / "evil.json").symlink_to("/etc/passwd")  # refused, and the run goes on
    netlog = tmp_path / "netlog.json"
    done = check(run_script("run_browser.py", "--out-dir", out, "--backend", "all", "--repeat", "1",
                            f"--chromium-arg=--log-net-log={netlog}"))
    assert len([line for line in done.stdout.splitlines() if line.startswith("wrote ")]) == 4
    log = json.loads(netlog.read_text())  # Chromium closed normally: the log is whole
    requests, network, probes, loopback = outside_calls(log)
    assert requests == [] and network == []
    types = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    assert len(probes) <= sum(1 for e in log["events"]
                              if types[e["type"]] == "HOST_RESOLVER_MANAGER_IPV6_REACHABILITY_CHECK")
    # the log did see the page's own traffic, and no favicon was asked for
    assert any(urlsplit(url).path == "/inference_in_browser.html" for url in loopback)
    assert any(urlsplit(url).path == "/model/model.json" for url in loopback)
    assert not any(urlsplit(url).path.endswith("favicon.ico") for url in loopback)
    assert not any("evil.json" in url for url in loopback)


def test_a_page_that_reaches_out_reaches_no_one(tmp_path):
    """Chromium as the kit starts it, driven to names and addresses outside: nothing is
    resolved, nothing connected to, not even the DNS probe of a failed navigation's error page."""
    import asyncio
    import pyppeteer
    netlog = tmp_path / "netlog.json"
    switches = browser_chromium.chromium_switches([f"--log-net-log={netlog}"])

    async def reach_out(chromium):
        browser = await pyppeteer.connect(browserWSEndpoint=chromium.endpoint)
        page = await browser.newPage()
        with pytest.raises(pyppeteer.errors.PageError, match="ERR_NAME_NOT_RESOLVED"):
            await page.goto("http://example.com/")
        outcomes = await page.evaluate("""async () => Promise.all(
            ['http://example.com/', 'https://www.google.com/', 'http://93.184.215.14/', 'http://[2606:4700::1]/',
             'http://127.0.0.1.nip.io/', 'http://localhost.example/']
            .map((url) => fetch(url, {mode: 'no-cors'}).then(() => 'reached ' + url, () => 'refused')))""")
        chromium.closing = True
        await browser.close()
        return outcomes
    with browser_chromium.Chromium(browser_chromium.find_chromium(), switches) as chromium:
        outcomes = asyncio.run(reach_out(chromium))
    assert outcomes == ["refused"] * 6
    requests, network, _, _ = outside_calls(json.loads(netlog.read_text()))
    assert any("example.com" in item for *_, item in requests)  # the page did ask
    assert network == []  # and nothing left the machine: no DNS query, no socket outside loopback


# ---------------------------------------------------------------- the server


def request(server, path, host=None):
    hostname, port = server.netloc.split(":")
    connection = http.client.HTTPConnection(hostname, int(port), timeout=10)
    connection.putrequest("GET", path, skip_host=True)
    if host is not False:
        connection.putheader("Host", host or server.netloc)
    connection.endheaders()
    response = connection.getresponse()
    return response.status, response.read()


def test_no_file_reached_through_a_symlink_below_the_served_folder_is_served(converted, tmp_path):
    out = fresh_copy(converted, tmp_path)
    model = out / "keras_converted"
    (model / "evil.json").symlink_to("/etc/passwd")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "weights.bin").write_bytes(b"not the model's")
    (model / "linked.bin").symlink_to(tmp_path / "elsewhere" / "weights.bin")
    routes = browser_page.routes_for(model / "model.json")
    assert "/model/evil.json" not in routes and "/model/linked.bin" not in routes
    # the server refuses them even when asked to serve them (a route made before the swap)
    routes.update({"/model/evil.json": model / "evil.json", "/model/linked.bin": model / "linked.bin",
                   "/sub/weights.bin": out / "sub" / "weights.bin",
                   "/real/weights.bin": tmp_path / "elsewhere" / "weights.bin"})
    (out / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a symlinked folder
    with PageServer(routes, roots=[out]) as server:
        assert request(server, "/model/model.json")[0] == 200
        assert request(server, "/real/weights.bin") == (200, b"not the model's")  # its own folder: fine
        for path in ("/model/evil.json", "/model/linked.bin", "/sub/weights.bin"):
            status, body = request(server, path)
            assert status == 404 and b"root:" not in body and b"not the model's" not in body, path
        # a file swapped for a symlink, or a FIFO, after the routes were made
        shard = next(name for name in routes if name.endswith(".bin") and name.startswith("/model/group"))
        original = routes[shard].read_bytes()
        assert request(server, shard) == (200, original)
        routes[shard].unlink()
        routes[shard].symlink_to("/etc/passwd")
        assert request(server, shard)[0] == 404
        routes[shard].unlink()
        os.mkfifo(routes[shard])
        assert request(server, shard)[0] == 404  # at once: a FIFO is not opened for reading
        # only its own Host: a rebinding page, or a request without one, gets 421
        assert request(server, "/model/model.json", host="evil.example:80")[0] == 421
        assert request(server, "/model/model.json", host=False)[0] == 421


def test_a_model_folder_that_is_a_symlink_is_refused_in_one_line(converted, tmp_path):
    real = fresh_copy(converted, tmp_path / "real")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keras_converted").symlink_to(real / "keras_converted", target_is_directory=True)
    assert_one_line_error(run_script("run_browser.py", "--out-dir", out), "keras_converted is a symlink")
