"""Requests with data resources, served by a real HTTP server on a loopback address."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.sites import Site

PAYLOAD = b"the staged data\n" * 64


def probe(root: str = "") -> str:
    """A script printing the first line of ``<root>/input/content`` and whether a write
    into each mount worked (``root``: where the mounts are, "" for the absolute paths)."""
    return (
        f"head -n 1 {root}/input/content\n"
        f"for dir in {root}/input {root}/scratch; do\n"
        '  if (echo changed >> "$dir/content") 2>/dev/null; then echo "$dir writable"; '
        'else echo "$dir read-only"; fi\n'
        "done\n"
        'echo "data0=$EXECBROKER_DATA_0"\n'
    )


# The loopback address the test servers listen on, which a platform fetches from only
# when its config allows it.
ALLOW_LOOPBACK = {"allow": ["127.0.0.1/32"]}


def data_site() -> Site:
    return Site(
        "127.0.0.1",
        {
            "/data.txt": (200, {"Content-Type": "text/plain"}, PAYLOAD),
            "/moved": (302, {"Location": "/data.txt"}, b""),
        },
    )


def sha256(body: bytes = PAYLOAD) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def with_data(
    request: dict[str, Any], site: Site, *, checksum: str | None = None, path: str = "/data.txt"
) -> dict[str, Any]:
    """``request`` with two copies of the site's file: ``/input`` (READONLY) and
    ``/scratch`` (READWRITE), named as the reference implementation's clients name them."""
    first: dict[str, Any] = {
        "kind": "simple-data-resource",
        "meta": {"name": "in-data"},
        "location": site.base + path,
    }
    if checksum is not None:
        first["checksum"] = checksum
    second = {
        "kind": "simple-data-resource",
        "meta": {"name": "scratch-data"},
        "location": site.base + "/moved",
    }
    request = {**request, "data": [first, second]}
    request["compute"] = {
        **request.get("compute", {"kind": "simple-compute-resource"}),
        "volumes": [
            {"kind": "simple-volume-mount", "resource": "in-data", "path": "/input",
             "mode": "READONLY"},
            {"kind": "simple-volume-mount", "resource": "scratch-data", "path": "/scratch",
             "mode": "READWRITE"},
        ],
    }  # fmt: skip
    return request


def expect_probe(stdout: str, root: str = "") -> None:
    assert stdout.splitlines()[0] == PAYLOAD.splitlines()[0].decode(), stdout
    assert f"{root}/input read-only" in stdout, stdout
    assert f"{root}/scratch writable" in stdout, stdout
