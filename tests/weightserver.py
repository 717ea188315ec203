"""A real HTTP server on 127.0.0.1 for the pretrained-weights tests (never the internet): files in a
folder, GET requests counted. Used as ``from weightserver import serve`` (a pytest fixture)."""

import http.server
import socket
import threading
import time

import pytest


class WeightServer:
    """A threaded ``http.server`` serving ``root`` on 127.0.0.1, counting GET requests per path."""

    def __init__(self, root, delay_s=0.0):
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):
                server.requests.append(self.path)
                time.sleep(delay_s)  # lets concurrent clients pile up on the lock
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(tmp_path):
    """``serve(delay_s=0.0) -> (folder, server)``: a fresh served folder; servers stop after the test."""
    servers = []

    def start(delay_s=0.0):
        root = tmp_path / f"served{len(servers)}"
        root.mkdir()
        servers.append(WeightServer(root, delay_s))
        return root, servers[-1]

    yield start
    for s in servers:
        s.close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (an unreachable server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
