"""A loopback HTTP server for the browser page that serves an allowlist and nothing else:
no directory listing, no path resolution, so nothing outside those files can be reached."""
import http.server
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".json": "application/json",
                 ".bin": "application/octet-stream", ".wasm": "application/wasm"}


class PageServer:
    """Serve {url path: file} on 127.0.0.1 at a free port; use as a context manager."""

    def __init__(self, routes):
        self.routes = {path: Path(file) for path, file in routes.items()}
        routes = self.routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._serve(body=True)

            def do_HEAD(self):
                self._serve(body=False)

            def _serve(self, body):
                file = routes.get(unquote(urlsplit(self.path).path))
                if file is None or not file.is_file():
                    self.send_error(404, "not served")
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPES.get(file.suffix, "application/octet-stream"))
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass  # the page's own console is what matters; request lines are noise

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self):
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()
