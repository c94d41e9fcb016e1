"""Images with a session's empty outputs directory already in them, made ahead.

Every docker session's container gets an empty ``/session/outputs`` before it starts (mode
0777, so any user the image runs as can write it; the epoch as its mtime, so the platform
can tell from a stat that the task left nothing there). Copying it in costs the engine
~100 ms at every start (its archive API runs a helper process each time), so for each image
sessions run, a derived image is built once, in the background: the image unchanged plus one
layer that holds that directory, made by the engine's classic builder from ``FROM <image id>``
and ``ADD`` of a tar. No container of the image is run for it, and the image's configuration
(command, entrypoint, user, environment, labels, ports) is inherited as it is. Sessions of
that image then start from the derived one with nothing to copy in; until it is made, or
for an image with ONBUILD triggers (which a ``FROM`` would run), the directory is copied in
as before.

A derived image holds nothing but its image's own files and the empty directory, so
sessions and users that share it share nothing a task wrote. It is found again by its tag
(one per image id; a restarted broker finds the one made before) and used only while the
engine says its parent is that image.
"""

from __future__ import annotations

import io
import logging
import threading
import time

import docker.errors
import requests
from docker.models.images import Image

from execbroker.platforms.docker_engine import UNTOUCHED_MTIME, Engine, tar_of

log = logging.getLogger(__name__)

REPOSITORY = "execbroker/prepared"  # tagged with the id of the image each is made from
RETRY_AFTER = 300.0  # seconds before a build that failed is tried again
_LAYER_FILE = "layer.tar"


def build_context(image_id: str, directories: dict[str, int]) -> bytes:
    """The build context (a tar) of ``image_id`` plus ``directories`` (absolute path → mode),
    empty, owned by root, with UNTOUCHED_MTIME as their mtime."""
    layer = tar_of(
        (path.strip("/"), None, mode, UNTOUCHED_MTIME) for path, mode in directories.items()
    )
    dockerfile = f"FROM {image_id}\nADD {_LAYER_FILE} /\n".encode()
    return tar_of(
        [
            ("Dockerfile", dockerfile, 0o644, UNTOUCHED_MTIME),
            (_LAYER_FILE, layer, 0o644, UNTOUCHED_MTIME),
        ]
    )


def tag_of(image_id: str) -> str:
    return f"{REPOSITORY}:{image_id.removeprefix('sha256:')}"


class PreparedImages:
    """The derived images of one engine, by the id of the image each is made from."""

    def __init__(self, engine: Engine, directories: dict[str, int]) -> None:
        self.engine = engine
        self.directories = directories
        self._lock = threading.Lock()
        self._made: dict[str, str] = {}  # image id -> derived image id
        self._building: set[str] = set()
        self._failed: dict[str, float] = {}  # image id -> when its build last failed

    def get(self, image: Image) -> str | None:
        """The id of ``image``'s derived image, if it is there; else None, and one is made
        in the background (unless the image has ONBUILD triggers)."""
        with self._lock:
            made = self._made.get(image.id)
        if made is not None:
            if self._existing(made, image.id) is not None:
                return made
            with self._lock:  # removed meanwhile: made again
                self._made.pop(image.id, None)
        if (image.attrs.get("Config") or {}).get("OnBuild"):
            return None  # a FROM would run the image's triggers: never built
        with self._lock:
            failed = self._failed.get(image.id)
            if image.id in self._building or (
                failed is not None and time.monotonic() - failed < RETRY_AFTER
            ):
                return None
            self._building.add(image.id)
        threading.Thread(
            target=self._prepare, args=(image.id,), name="docker-prepare", daemon=True
        ).start()
        return None

    def _prepare(self, image_id: str) -> None:
        began = time.perf_counter()
        try:
            tag = tag_of(image_id)
            made = self._existing(tag, image_id) or self._build(tag, image_id)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            log.warning("could not prepare an image from %s: %s", image_id[:19], error)
            with self._lock:
                self._failed[image_id] = time.monotonic()
            return
        finally:
            with self._lock:
                self._building.discard(image_id)
        with self._lock:
            self._made[image_id] = made
            self._failed.pop(image_id, None)
        log.info(
            "image %s prepared as %s in %.0f ms",
            image_id[:19],
            made[:19],
            (time.perf_counter() - began) * 1000,
        )

    def _existing(self, name: str, image_id: str) -> str | None:
        """The id of the image ``name`` (a tag or an id) if it is there and made from
        ``image_id``; else None."""
        try:
            found = self.engine.client.api.inspect_image(name)
        except docker.errors.NotFound:
            return None
        return str(found["Id"]) if found.get("Parent") == image_id else None

    def _build(self, tag: str, image_id: str) -> str:
        api = self.engine.client.api
        context = build_context(image_id, self.directories)
        said = api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            network_mode="none",
            decode=True,
        )
        for line in said:
            if "error" in line:
                raise docker.errors.BuildError(str(line["error"]), said)
        made = self._existing(tag, image_id)
        if made is None:
            raise docker.errors.BuildError(f"{tag} is not made from {image_id}", [])
        return made
