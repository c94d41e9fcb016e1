"""The shape of a compose file: which fields are text, lists or mappings.

Checked right after parsing, before any rule or rewrite looks inside, so that a field of the
wrong shape (``networks: 5``, ``labels: {a: [1]}`` where a list of strings is meant,
``deploy: [x]``) is the client's mistake named by its path (a 422), never a crash further on.
Scalars are not checked further here: compose itself takes ``"2"`` for ``2`` after
interpolation (every interpolated value is text), and the rules that use a number convert it
themselves, naming the field when they cannot.
"""

from __future__ import annotations

import math
import re
from typing import Any


class ComposeError(ValueError):
    """The compose text cannot be run; the message names the field and is fit for its owner."""


SCALAR = "scalar"
LIST = "list"
MAP = "map"
NONE = "none"

_NAMES = {SCALAR: "a string or a number", LIST: "a list", MAP: "a mapping", NONE: "empty"}


def _kind(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, dict):
        return MAP
    if isinstance(value, list):
        return LIST
    return SCALAR  # str, int, float, bool (and the rare YAML date)


_S, _L, _M = (SCALAR,), (LIST,), (MAP,)
_SL, _ML, _SM = (SCALAR, LIST), (MAP, LIST), (SCALAR, MAP)

SERVICE_FIELDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        [
            "image",
            "working_dir",
            "user",
            "hostname",
            "domainname",
            "stop_signal",
            "stop_grace_period",
            "tty",
            "stdin_open",
            "init",
            "read_only",
            "shm_size",
            "mac_address",
            "platform",
            "scale",
            "pull_policy",
            "restart",
            "cpus",
            "cpu_count",
            "cpu_percent",
            "cpu_shares",
            "cpu_period",
            "cpu_quota",
            "cpu_rt_period",
            "cpu_rt_runtime",
            "cpuset",
            "mem_limit",
            "mem_reservation",
            "memswap_limit",
            "mem_swappiness",
            "pids_limit",
            "isolation",
            "privileged",
            "network_mode",
            "pid",
            "ipc",
            "uts",
            "userns_mode",
            "cgroup",
            "runtime",
            "oom_kill_disable",
            "oom_score_adj",
            "container_name",
            "cgroup_parent",
            "attach",
            "use_api_socket",
        ],
        _S,
    ),
    **dict.fromkeys(
        ["command", "entrypoint", "tmpfs", "dns", "dns_search", "env_file", "gpus"], _SL
    ),
    **dict.fromkeys(
        [
            "expose",
            "ports",
            "cap_drop",
            "dns_opt",
            "profiles",
            "group_add",
            "links",
            "volumes",
            "volumes_from",
            "devices",
            "device_cgroup_rules",
            "cap_add",
            "security_opt",
            "external_links",
            "post_start",
            "pre_stop",
            "configs",
            "secrets",
        ],
        _L,
    ),
    **dict.fromkeys(
        [
            "environment",
            "depends_on",
            "networks",
            "extra_hosts",
            "annotations",
            "sysctls",
            "labels",
            "models",
        ],
        _ML,
    ),
    **dict.fromkeys(
        [
            "healthcheck",
            "ulimits",
            "develop",
            "logging",
            "storage_opt",
            "blkio_config",
            "deploy",
            "credential_spec",
            "provider",
        ],
        _M,
    ),
    **dict.fromkeys(["build", "extends"], _SM),
}
# Inside a service: fields whose members the broker reads, and what each member must be.
MEMBERS: dict[str, tuple[str, ...]] = {
    "command": _S,
    "entrypoint": _S,
    "tmpfs": _S,
    "dns": _S,
    "expose": _S,
    "ports": (SCALAR, MAP),
    "cap_add": _S,
    "cap_drop": _S,
    "security_opt": _S,
    "volumes": (SCALAR, MAP),
    "volumes_from": _S,
    "devices": (SCALAR, MAP),
    "post_start": _M,
    "pre_stop": _M,
    "ulimits": (SCALAR, MAP),
    "labels": (SCALAR, NONE),
    "annotations": (SCALAR, NONE),
    "environment": (SCALAR, NONE),
    "sysctls": (SCALAR, NONE),
    "extra_hosts": (SCALAR, LIST),
    "profiles": _S,
    "group_add": _S,
    "links": _S,
    "external_links": _S,
}
DEPLOY_FIELDS: dict[str, tuple[str, ...]] = {
    "replicas": _S,
    "mode": _S,
    "resources": _M,
    "restart_policy": _M,
    "labels": _ML,
    "placement": _M,
    "update_config": _M,
    "rollback_config": _M,
    "endpoint_mode": _S,
}
RESOURCES_FIELDS: dict[str, tuple[str, ...]] = {"limits": _M, "reservations": _M}
TOP_FIELDS: dict[str, tuple[str, ...]] = {
    "version": _S,
    "name": _S,
    "services": _M,
    "networks": (MAP, NONE),
    "volumes": (MAP, NONE),
    "configs": (MAP, NONE),
    "secrets": (MAP, NONE),
    "include": _L,
}
# Each network, volume, config or secret: a mapping (or empty), with these shapes inside.
ITEM_FIELDS: dict[str, tuple[str, ...]] = {
    "driver": _S,
    "name": _S,
    "external": (SCALAR, MAP),
    "driver_opts": _M,
    "labels": (MAP, LIST, NONE),
    "ipam": _M,
    "content": _S,
    "file": _S,
    "environment": _S,
}


def _wrong(path: str, value: Any, allowed: tuple[str, ...]) -> str | None:
    kind = _kind(value)
    if kind in allowed or kind == NONE:  # compose reads an empty value as unset
        return None
    names = [_NAMES[k] for k in allowed if k != NONE]
    wanted = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"{path}: must be {wanted}, not {_NAMES[kind]}"


def _fields(path: str, node: dict[Any, Any], table: dict[str, tuple[str, ...]]) -> str | None:
    for key, value in node.items():
        allowed = table.get(str(key))
        if allowed is not None:
            wrong = _wrong(f"{path}{key}", value, allowed)
            if wrong:
                return wrong
    return None


def _members(path: str, value: Any, allowed: tuple[str, ...]) -> str | None:
    items = value.items() if isinstance(value, dict) else enumerate(value or [])
    for key, item in items:
        where = f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]"
        wrong = _wrong(where, item, allowed)
        if wrong:
            return wrong
    return None


def _service(path: str, service: dict[Any, Any]) -> str | None:
    wrong = _fields(path, service, SERVICE_FIELDS)
    if wrong:
        return wrong
    for key, allowed in MEMBERS.items():
        value = service.get(key)
        if isinstance(value, list | dict):
            wrong = _members(f"{path}{key}", value, allowed)
            if wrong:
                return wrong
    deploy = service.get("deploy")
    if isinstance(deploy, dict):
        wrong = _fields(f"{path}deploy.", deploy, DEPLOY_FIELDS)
        resources = deploy.get("resources")
        if wrong is None and isinstance(resources, dict):
            wrong = _fields(f"{path}deploy.resources.", resources, RESOURCES_FIELDS)
            for part in ("limits", "reservations"):
                inner = resources.get(part)
                if wrong is None and isinstance(inner, dict):
                    wrong = _fields(
                        f"{path}deploy.resources.{part}.",
                        inner,
                        {"cpus": _S, "memory": _S, "pids": _S, "devices": _L},
                    )
        if wrong:
            return wrong
    return None


def first_wrong_type(document: dict[Any, Any]) -> str | None:
    """The path of the first field whose shape is wrong, and what it should be; or None."""
    wrong = _fields("", document, TOP_FIELDS)
    if wrong:
        return wrong
    for section in ("networks", "volumes", "configs", "secrets"):
        for name, item in (document.get(section) or {}).items():
            wrong = _wrong(f"{section}.{name}", item, (MAP, NONE)) or (
                _fields(f"{section}.{name}.", item, ITEM_FIELDS) if item else None
            )
            if wrong:
                return wrong
    for name, service in (document.get("services") or {}).items():
        if isinstance(service, dict):
            wrong = _service(f"services.{name}.", service)
            if wrong:
                return wrong
    return None


# -- values the broker reads ------------------------------------------------------------

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def memory_bytes(value: Any, where: str) -> int:
    """An amount of memory as compose writes it (``64m``, ``1g``, ``1048576``), in bytes."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ComposeError(f"{where}: {value!r} is not an amount of memory")
        return int(value)
    match = _MEMORY.match(str(value))
    if match is None:
        raise ComposeError(f"{where}: {value!r} is not an amount of memory")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def replicas(service: dict[str, Any]) -> int:
    """How many containers a service runs (``deploy.replicas``, else ``scale``, else 1)."""
    deploy = service.get("deploy") or {}
    field = "deploy.replicas" if "replicas" in deploy else "scale"
    count = deploy.get("replicas", service.get("scale", 1))
    try:
        if isinstance(count, bool):
            raise TypeError
        return max(0, int(count))
    except (TypeError, ValueError, OverflowError):
        raise ComposeError(f"{field}: {count!r} is not a number") from None
