"""A docker session's data resources: one named volume each, filled before the task starts.

Never a host bind mount (the container policy refuses those): each resource is fetched
by the broker (``staging``), copied into a fresh named volume through the engine's archive
API (into a helper container of the task's own image that is created, never started,
then removed), and the task's container mounts that volume at the resource's path,
``ro`` when READONLY, so not even a root task can change it. The volumes carry the
session's labels and are removed with its container.
"""

from __future__ import annotations

import contextlib

import docker.errors
from docker import DockerClient

from execbroker.model.data import CONTENT
from execbroker.platforms import docker_engine as engine_
from execbroker.platforms import staging
from execbroker.platforms.base import LaunchSpec, PlatformError
from execbroker.platforms.docker_engine import LABEL_BROKER, LABEL_SESSION

STAGE_DIR = "/execbroker-stage"
# READWRITE: a task of any user in the image may write its own copy.
_READWRITE = {"": 0o777}


def stage_volumes(
    client: DockerClient, spec: LaunchSpec, *, image: str, prefix: str, labels: dict[str, str]
) -> dict[str, dict[str, str]]:
    """``volumes=`` for the task's container: each resource in a volume of its own. If one
    cannot be staged, the volumes already made go too (no container will ever hold them)."""
    try:
        return _stage(client, spec, image=image, prefix=prefix, labels=labels)
    except PlatformError:
        remove_volumes(client, broker=labels[LABEL_BROKER], session=labels[LABEL_SESSION])
        raise


def _stage(
    client: DockerClient, spec: LaunchSpec, *, image: str, prefix: str, labels: dict[str, str]
) -> dict[str, dict[str, str]]:
    volumes: dict[str, dict[str, str]] = {}
    for mount in spec.data:
        body = staging.fetch_data(mount)
        name = f"{prefix}-data{mount.index}"
        try:
            client.volumes.create(name=name, labels=labels)
            helper = client.containers.create(
                image,
                command=["true"],
                name=f"{name}-stage",
                volumes={name: {"bind": STAGE_DIR, "mode": "rw"}},
                network_disabled=True,
            )
        except docker.errors.APIError as error:
            raise PlatformError(
                f"data[{mount.index}]: could not make its volume: {engine_.ok_or_reason(error)}"
            ) from None
        try:
            mode = 0o444 if mount.readonly else 0o666
            directories = {} if mount.readonly else _READWRITE
            engine_.put_files(helper, STAGE_DIR, {CONTENT: (body, mode)}, directories)
        finally:
            with contextlib.suppress(docker.errors.APIError):
                helper.remove(force=True)
        volumes[name] = {"bind": str(mount.path), "mode": "ro" if mount.readonly else "rw"}
    return volumes


def remove_volumes(client: DockerClient, *, broker: str, session: str) -> None:
    """The session's data volumes, once its container is gone; idempotent."""
    found = client.volumes.list(
        filters={"label": [f"{LABEL_BROKER}={broker}", f"{LABEL_SESSION}={session}"]}
    )
    for volume in found:
        try:
            volume.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if error.status_code != 409:  # 409: still in use by a container being removed
                raise
