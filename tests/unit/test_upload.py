"""``fetch.upload``: a PUT under the same rules as every fetch, against a real local server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from execbroker import fetch

LOCAL = fetch.FetchPolicy(allow=["127.0.0.1/32"])


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, bytes]]]:
    received: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path.startswith("/moved"):
                self.send_response(307)
                self.send_header("Location", "http://169.254.169.254/latest")
            else:
                received[self.path] = body
                self.send_response(201 if self.path != "/refused" else 403)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    running = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{running.server_address[1]}", received
    finally:
        running.shutdown()
        running.server_close()


def test_an_upload_is_put_where_the_policy_allows(server):
    url, received = server
    fetch.upload(f"{url}/a/b.txt", b"content", policy=LOCAL)
    assert received == {"/a/b.txt": b"content"}


def test_an_upload_obeys_the_fetch_rules_and_follows_no_redirect(server):
    url, received = server
    with pytest.raises(fetch.FetchRefused, match="loopback"):
        fetch.upload(f"{url}/a", b"x")  # the closed policy: public addresses only
    with pytest.raises(fetch.FetchError, match="HTTP 307"):
        fetch.upload(f"{url}/moved", b"x", policy=LOCAL)
    with pytest.raises(fetch.FetchError, match="HTTP 403"):
        fetch.upload(f"{url}/refused", b"x", policy=LOCAL)
    with pytest.raises(fetch.FetchRefused, match="http or https"):
        fetch.upload("file:///etc/passwd", b"x", policy=LOCAL)
    assert "/a" not in received
