"""The kit's WebDriver client (runners/webdriver.py) and --capabilities, against small servers
on loopback: credentials in the URL are sent and never shown, every answer is bounded in
time and size, a session id that cannot be used in a URL is refused in one line."""
import argparse
import base64
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tfjs_parity.runners.webdriver import WebDriverError, WebDriverSession, check_endpoint, request, shown
from tfjs_parity.runners.webdriver_runner import parse_capabilities, session_name
from tfjs_parity import KitError


class Endpoint(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Endpoint.seen.append(self.headers.get("Authorization"))
        if self.path.startswith("/trickle"):  # a header a second, for ever
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            try:
                for n in range(600):
                    self.wfile.write(f"X-Slow-{n}: 1\r\n".encode())
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            self.close_connection = True
            return
        session = "s\u00e9ss" if self.path.startswith("/unicode") else ".." if self.path.startswith("/dots") else "abc-1"
        body = ('{"value": {"sessionId": "%s", "capabilities": {"browserName": "x"}}}' % session).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.2", 0), Endpoint)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.2:{server.server_address[1]}"
    server.shutdown()


def test_credentials_in_the_url_are_sent_as_basic_authentication_and_never_shown(endpoint):
    url = f"http://alice:s3cret%2Fkey@{endpoint}/wd/hub"
    request(url, "POST", "/session", {})
    assert Endpoint.seen[-1] == "Basic " + base64.b64encode(b"alice:s3cret/key").decode()
    assert "s3cret" not in shown(url) and shown(url).startswith("http://alice:***@127.0.0.2:")
    with pytest.raises(WebDriverError) as refused:
        request(f"http://alice:s3cret@127.0.0.2:1/wd/hub", "POST", "/session", {}, timeout=5)
    assert "s3cret" not in str(refused.value)


def test_an_answer_that_trickles_its_headers_is_cut_at_the_timeout(endpoint):
    started = time.monotonic()
    with pytest.raises(WebDriverError, match="did not finish answering POST /session within 1 s"):
        request(f"http://{endpoint}/trickle", "POST", "/session", {}, timeout=1.0)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("path", ["/unicode", "/dots"])
def test_a_session_id_that_cannot_be_asked_by_is_refused_in_one_line(endpoint, path):
    with pytest.raises(WebDriverError, match="without a session id it can be asked by"):
        WebDriverSession(f"http://{endpoint}{path}", {}).start()


@pytest.mark.parametrize("url", ["http://[::1", "http://[zz]:1", "ftp://127.0.0.1/", "http://127.0.0.1:99999"])
def test_an_endpoint_that_is_not_a_url_is_refused_in_one_line(url):
    with pytest.raises(KitError, match="--webdriver"):
        check_endpoint(url)


def test_capabilities_files_are_small_regular_utf8_json_objects(tmp_path):
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"browserName": "chrome"}')
    assert parse_capabilities(str(bom)) == {"browserName": "chrome"}
    big = tmp_path / "big.json"
    big.write_text('{"x": "' + "y" * (2 << 20) + '"}')
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for text, said in ((str(big), "more than"), (str(fifo), "not a regular file"), (str(tmp_path), "not a regular"),
                       ('{"x": NaN}', "not valid JSON"), ("[1]", "a JSON object")):
        with pytest.raises(argparse.ArgumentTypeError, match=said):
            parse_capabilities(text)


@pytest.mark.parametrize("described, name", [
    ({"platformName": "linux", "browserName": "chrome", "browserVersion": "156.0.8078.129"}, "linux-chrome-156"),
    ({"platformName": "linux", "browserName": "MiniBrowser", "browserVersion": "2.50.6"}, "linux-minibrowser-2-50"),
    ({"platformName": "iOS", "browserName": "Safari", "browserVersion": "18.2"}, "ios-safari-18"),
    ({"browserName": "../../etc"}, "etc"), ({}, "session-1")])
def test_a_session_is_named_from_what_it_says_it_is(described, name):
    assert session_name(described, "session-1") == name
