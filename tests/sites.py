"""Real HTTP servers on loopback addresses for tests of what the broker fetches."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = tuple[int, dict[str, str], bytes]


class Site:
    """A real HTTP server on one loopback address, counting the requests it gets.

    ``routes`` maps a path to its answer. Paths in ``unsized`` are sent without a
    Content-Length (the body ends when the connection does); paths in ``trickle`` are sent
    a byte at a time, that many seconds apart."""

    def __init__(
        self,
        host: str,
        routes: dict[str, Route],
        *,
        unsized: frozenset[str] = frozenset(),
        trickle: dict[str, float] | None = None,
    ) -> None:
        self.hits: list[str] = []
        site, slow = self, trickle or {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits.append(self.path)
                status, headers, body = routes.get(self.path, (404, {}, b""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if self.path not in unsized:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path not in slow:
                    self.wfile.write(body)
                    return
                for index in range(len(body)):
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                    time.sleep(slow[self.path])

            def do_POST(self) -> None:  # the body read and let go: answered as a GET
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True  # a trickling answer must not hold up close()
        self.port = self.server.server_address[1]
        self.base = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
