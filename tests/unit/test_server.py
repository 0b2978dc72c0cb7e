import http.client

import pytest

from tfjs_parity.runners.page import TFJS_FILES, routes_for
from tfjs_parity.server import PageServer


@pytest.fixture
def served(tmp_path):
    (tmp_path / "page.html").write_text("<p>hello</p>")
    (tmp_path / "secret.txt").write_text("not for the page")
    with PageServer({"/page.html": tmp_path / "page.html"}) as server:
        yield server


def get(server, raw_path):
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", raw_path)  # sent as is: no client-side normalisation
    response = connection.getresponse()
    return response.status, response.read()


def test_serves_what_is_listed_on_loopback(served):
    assert served.url.startswith("http://127.0.0.1:")
    assert get(served, "/page.html") == (200, b"<p>hello</p>")
    assert get(served, "/page.html?backend=webgl")[0] == 200


@pytest.mark.parametrize("path", ["/", "/secret.txt", "/../secret.txt", "/%2e%2e/secret.txt",
                                  "/page.html/../secret.txt", "/etc/passwd", "/../../../../etc/passwd",
                                  "//etc/passwd", "/PAGE.HTML"])
def test_refuses_everything_else(served, path):
    status, body = get(served, path)
    assert status == 404
    assert b"not for the page" not in body and b"root:" not in body


def test_browser_routes_hold_the_page_tfjs_and_only_the_model_files(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "group1-shard1of1.bin").write_bytes(b"\0")
    (tmp_path / "input.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    routes = routes_for(tmp_path / "model.json")
    assert sorted(routes) == sorted(["/inference_in_browser.html", "/inference_common.js", "/tfjs_parity/wire.json",
                                     "/tfjs_parity/kinds/layers_model.js", "/tfjs_parity/kinds/graph_model.js",
                                     "/model/model.json", "/model/group1-shard1of1.bin", "/model/input.json"]
                                    + [f"/{name}" for name in TFJS_FILES])
    assert all(name.startswith("node_modules/@tensorflow/") for name in TFJS_FILES)
    assert all(path.is_file() for path in routes.values())
