"""What a container may ask of its host: closed by default, opened per platform config.

Both container backends use these rules, the ``docker`` one on a docker-container spec and
the ``compose`` one on every service (and top-level network, volume, config) of a compose
file. A refusal is a sentence naming the field (``services.web.privileged: ...``) so the
broker can answer NO at offer time. Compose files are checked against an allow-list of
keys: a key this module does not know (a newer compose feature) is refused, not let through.

Every container also runs hardened: ``no-new-privileges`` and only a small set of
capabilities (``SAFE_CAPABILITIES``): enough for a web server started as root to bind a low
port and drop to its own user, not enough to sniff or spoof the network (NET_RAW), make
device nodes (MKNOD), or hand out file capabilities (SETFCAP, SETPCAP).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from execbroker.model.executables import DockerContainer
from execbroker.platforms.compose_types import ComposeError, memory_bytes, replicas

SAFE_CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
)
NO_NEW_PRIVILEGES = "no-new-privileges:true"
_NNP = re.compile(r"^no-new-privileges([:=]true)?$", re.IGNORECASE)
# An open-files limit no higher than docker's own default is no loosening.
MAX_NOFILE = 1_048_576
# Labels the broker sets and reads back: a user may not forge them.
RESERVED_LABEL_PREFIXES = ("execbroker.", "com.docker.compose.")


class Allow(BaseModel):
    """What a platform config opens (``allow: {privileged: true, ...}``); all closed by default."""

    model_config = ConfigDict(extra="forbid")

    privileged: bool = False
    host_network: bool = False
    host_namespaces: bool = False  # pid, ipc, uts, userns, cgroup: host
    host_mounts: bool = False  # bind mounts, env_file, volumes with driver options
    devices: bool = False
    capabilities: bool = False  # cap_add beyond SAFE_CAPABILITIES
    security_opt: bool = False  # anything besides no-new-privileges
    sysctls: bool = False
    ulimits: bool = False  # any ulimit but nofile up to MAX_NOFILE (rtprio, memlock, nproc...)
    # Containers one compose session may run in all (each service times its replicas).
    max_containers: int = Field(default=16, ge=1, le=1000)


def hardening(*, privileged: bool = False) -> dict[str, Any]:
    """docker SDK ``containers.create`` arguments every container gets."""
    if privileged:
        return {"privileged": True, "security_opt": [NO_NEW_PRIVILEGES]}
    return {
        "cap_drop": ["ALL"],
        "cap_add": list(SAFE_CAPABILITIES),
        "security_opt": [NO_NEW_PRIVILEGES],
    }


def check_container(executable: DockerContainer, allow: Allow) -> str | None:
    """Why a docker-container spec may not run here. The wire model already refuses every
    field it does not know (host mounts, devices, capabilities cannot even be written)."""
    if executable.privileged and not allow.privileged:
        return "executable.privileged: privileged containers are not allowed on this platform"
    return None


# -- compose files ----------------------------------------------------------------------

Rule = Callable[[str, Any, Allow], Iterator[str]]


def _truthy(value: Any) -> bool:
    """Compose takes ``true``, ``"true"``, ``1``...: anything but a plain false counts as true."""
    return value not in (False, None, 0, "false", "False", "FALSE", "0", "")


def _closed(what: str) -> Rule:
    def rule(path: str, value: Any, allow: Allow) -> Iterator[str]:
        yield f"{path}: {what} is not allowed on this platform"

    return rule


def _flag(flag: str, what: str) -> Rule:
    def rule(path: str, value: Any, allow: Allow) -> Iterator[str]:
        if _truthy(value) and not getattr(allow, flag):
            yield f"{path}: {what} is not allowed on this platform"

    return rule


def _namespace(path: str, value: Any, allow: Allow) -> Iterator[str]:
    text = str(value)
    if text == "host" and not allow.host_namespaces:
        yield f"{path}: sharing the host's namespace is not allowed on this platform"
    elif text.startswith("container:"):
        yield f"{path}: joining another container's namespace is not allowed"


def _network_mode(path: str, value: Any, allow: Allow) -> Iterator[str]:
    text = str(value)
    if text == "host":
        if not allow.host_network:
            yield f"{path}: host networking is not allowed on this platform"
    elif text.startswith("container:"):
        yield f"{path}: joining another container's network is not allowed"
    elif text != "none" and not text.startswith("service:"):
        yield f"{path}: only none or service:NAME (or the project's networks) are allowed"


def _is_host_path(source: str) -> bool:
    return (
        source.startswith(("/", ".", "~", "\\"))
        or "/" in source
        or re.match(r"^[A-Za-z]:", source) is not None
    )


def _volumes(path: str, value: Any, allow: Allow) -> Iterator[str]:
    for index, item in enumerate(value or []):
        where = f"{path}[{index}]"
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) >= 2 and _is_host_path(parts[0]) and not allow.host_mounts:
                yield f"{where}: mounting the host's {parts[0]} is not allowed on this platform"
        elif isinstance(item, dict):
            kind = item.get("type", "volume")
            if kind == "bind" or (kind == "volume" and _is_host_path(str(item.get("source", "")))):
                if not allow.host_mounts:
                    yield f"{where}: bind mounts of host paths are not allowed on this platform"
            elif kind not in ("volume", "tmpfs"):
                yield f"{where}: volumes of type {kind} are not allowed on this platform"
            elif kind == "tmpfs" and isinstance(item.get("tmpfs"), dict):
                size = item["tmpfs"].get("size")
                if size is not None:
                    yield from _memory_amount(f"{where}.tmpfs.size", size, allow)
        else:
            yield f"{where}: not a volume"


def _volumes_from(path: str, value: Any, allow: Allow) -> Iterator[str]:
    for index, item in enumerate(value or []):
        if str(item).startswith("container:"):
            yield f"{path}[{index}]: volumes of containers outside the project are not allowed"


def _cap_add(path: str, value: Any, allow: Allow) -> Iterator[str]:
    extra = sorted(
        {str(c).upper().removeprefix("CAP_") for c in value or []} - set(SAFE_CAPABILITIES)
    )
    if extra and not allow.capabilities:
        yield f"{path}: adding capabilities ({', '.join(extra)}) is not allowed on this platform"


def _security_opt(path: str, value: Any, allow: Allow) -> Iterator[str]:
    loosening = [str(o) for o in value or [] if not _NNP.match(str(o))]
    if loosening and not allow.security_opt:
        yield f"{path}: {', '.join(loosening)} is not allowed on this platform"


def _runtime(path: str, value: Any, allow: Allow) -> Iterator[str]:
    if value not in (None, "runc"):
        yield f"{path}: only the runc runtime is allowed"


def _labels(path: str, value: Any, allow: Allow) -> Iterator[str]:
    names = value.keys() if isinstance(value, dict) else [str(i).split("=")[0] for i in value or []]
    for name in names:
        if str(name).startswith(RESERVED_LABEL_PREFIXES):
            yield (
                f"{path}.{name}: labels named {RESERVED_LABEL_PREFIXES[0]}* and "
                f"{RESERVED_LABEL_PREFIXES[1]}* are the broker's"
            )


def _extends(path: str, value: Any, allow: Allow) -> Iterator[str]:
    if isinstance(value, dict) and "file" in value:
        yield f"{path}.file: extending from other files is not allowed"


def _hooks(path: str, value: Any, allow: Allow) -> Iterator[str]:
    for index, hook in enumerate(value or []):
        if isinstance(hook, dict) and _truthy(hook.get("privileged")) and not allow.privileged:
            yield f"{path}[{index}].privileged: privileged hooks are not allowed on this platform"


def _deploy(path: str, value: Any, allow: Allow) -> Iterator[str]:
    if not isinstance(value, dict):
        return
    reservations = (value.get("resources") or {}).get("reservations") or {}
    if reservations.get("devices") and not allow.devices:
        yield f"{path}.resources.reservations.devices: devices are not allowed on this platform"


def _oom_score(path: str, value: Any, allow: Allow) -> Iterator[str]:
    try:
        negative = int(value) < 0
    except (TypeError, ValueError):
        negative = True
    if negative and not allow.privileged:
        yield f"{path}: shielding a container from the OOM killer is not allowed on this platform"


def _ulimits(path: str, value: Any, allow: Allow) -> Iterator[str]:
    """``nofile`` up to MAX_NOFILE is open to all; any other limit (real-time priority,
    locked memory, processes per uid) reaches past the container and needs ``allow.ulimits``."""
    for name, limit in (value or {}).items():
        where = f"{path}.{name}"
        parts = [limit.get("soft"), limit.get("hard")] if isinstance(limit, dict) else [limit]
        try:
            numbers = [int(part) for part in parts if part is not None]
        except (TypeError, ValueError):
            yield f"{where}: {limit!r} is not a limit (a number, or soft and hard numbers)"
            continue
        if allow.ulimits:
            continue
        if name != "nofile":
            yield f"{where}: setting the {name} ulimit is not allowed on this platform"
        elif any(number > MAX_NOFILE or number < 0 for number in numbers):
            yield f"{where}: more than {MAX_NOFILE} open files is not allowed on this platform"


def _memory_amount(path: str, value: Any, allow: Allow) -> Iterator[str]:
    try:
        memory_bytes(value, path)
    except ComposeError as error:
        yield str(error)


def _tmpfs(path: str, value: Any, allow: Allow) -> Iterator[str]:
    for index, item in enumerate(value if isinstance(value, list) else [value]):
        size = tmpfs_size(str(item))
        if size is not None:
            yield from _memory_amount(f"{path}[{index}].size", size, allow)


def tmpfs_size(entry: str) -> str | None:
    """The ``size=`` option of a short-syntax tmpfs entry (``/run:size=64m,mode=1777``)."""
    _, _, options = entry.partition(":")
    for option in options.split(","):
        key, _, amount = option.partition("=")
        if key.strip() == "size":
            return amount.strip()
    return None


def _ok(path: str, value: Any, allow: Allow) -> Iterator[str]:
    return iter(())


_OK_KEYS = [
    "image",
    "command",
    "entrypoint",
    "environment",
    "working_dir",
    "user",
    "hostname",
    "domainname",
    "expose",
    "ports",
    "depends_on",
    "healthcheck",
    "stop_signal",
    "stop_grace_period",
    "tty",
    "stdin_open",
    "init",
    "read_only",
    "networks",
    "cap_drop",
    "extra_hosts",
    "dns",
    "dns_search",
    "dns_opt",
    "mac_address",
    "platform",
    "profiles",
    "annotations",
    "attach",
    "group_add",
    "links",
    "configs",
    "secrets",
    "develop",
    "pull_policy",
    "restart",
    "logging",
    "cpus",
    "cpu_count",
    "cpu_percent",
    "cpu_shares",
    "cpu_period",
    "cpu_quota",
    "cpuset",
    "mem_limit",
    "mem_reservation",
    "memswap_limit",
    "mem_swappiness",
    "pids_limit",
    "storage_opt",
    "blkio_config",
    "isolation",
]

SERVICE_RULES: dict[str, Rule] = {
    **dict.fromkeys(_OK_KEYS, _ok),
    "privileged": _flag("privileged", "a privileged container"),
    "network_mode": _network_mode,
    "pid": _namespace,
    "ipc": _namespace,
    "uts": _namespace,
    "userns_mode": _namespace,
    "cgroup": _namespace,
    "volumes": _volumes,
    "volumes_from": _volumes_from,
    "devices": _flag("devices", "access to host devices"),
    "device_cgroup_rules": _flag("devices", "access to host devices"),
    "gpus": _flag("devices", "access to host devices (GPUs)"),
    "cap_add": _cap_add,
    "security_opt": _security_opt,
    "sysctls": _flag("sysctls", "setting sysctls"),
    "env_file": _flag("host_mounts", "reading files of the broker's host (env_file)"),
    "runtime": _runtime,
    "labels": _labels,
    "extends": _extends,
    "post_start": _hooks,
    "pre_stop": _hooks,
    "deploy": _deploy,
    "ulimits": _ulimits,
    "tmpfs": _tmpfs,
    "shm_size": _memory_amount,
    "scale": _ok,  # counted with deploy.replicas against allow.max_containers
    "oom_kill_disable": _flag("privileged", "disabling the OOM killer"),
    "oom_score_adj": _oom_score,
    "build": _closed("building images (this platform runs existing images)"),
    "container_name": _closed("a fixed container name (it would collide between sessions)"),
    "external_links": _closed("linking containers outside the project"),
    "cgroup_parent": _closed("choosing the cgroup parent"),
    "credential_spec": _closed("a credential spec"),
    "provider": _closed("a provider service (it runs a program on the broker's host)"),
    "use_api_socket": _closed("access to the Docker API socket"),
    "models": _closed("models"),
}


def _network(path: str, value: Any, allow: Allow) -> Iterator[str]:
    value = value or {}
    driver = value.get("driver", "bridge")
    if driver == "host" and not allow.host_network:
        yield f"{path}.driver: host networking is not allowed on this platform"
    elif driver not in ("bridge", "host"):
        yield f"{path}.driver: only bridge networks are allowed"
    for key, why in (
        ("external", "joining networks outside the project"),
        ("name", "a fixed network name (it could join another project's)"),
        ("driver_opts", "network driver options"),
    ):
        if value.get(key):
            yield f"{path}.{key}: {why} is not allowed on this platform"
    yield from _labels(f"{path}.labels", value.get("labels"), allow)


def _volume(path: str, value: Any, allow: Allow) -> Iterator[str]:
    value = value or {}
    if value.get("driver", "local") != "local":
        yield f"{path}.driver: only local volumes are allowed"
    if value.get("driver_opts") and not allow.host_mounts:
        yield f"{path}.driver_opts: volume driver options (host mounts) are not allowed"
    for key, why in (
        ("external", "volumes from outside the project"),
        ("name", "a fixed volume name (it could open another project's)"),
    ):
        if value.get(key):
            yield f"{path}.{key}: {why} is not allowed on this platform"
    yield from _labels(f"{path}.labels", value.get("labels"), allow)


def _config(path: str, value: Any, allow: Allow) -> Iterator[str]:
    value = value or {}
    for key in sorted(set(value) - {"content"}):
        yield f"{path}.{key}: only inline content is allowed (no host files or environment)"


TOP_LEVEL_RULES: dict[str, Rule | None] = {
    "version": None,
    "name": None,
    "services": None,  # checked one by one
    "networks": _network,
    "volumes": _volume,
    "configs": _config,
    "secrets": _config,
}


def _containers(services: dict[str, Any], allow: Allow) -> Iterator[str]:
    """Every container the file would start counts against ``allow.max_containers``."""
    total = 0
    for name, service in services.items():
        try:
            count = replicas(service or {})
        except ComposeError as error:
            yield f"services.{name}.{error}"
            continue
        if count > allow.max_containers:
            field = "deploy.replicas" if "replicas" in (service.get("deploy") or {}) else "scale"
            yield (
                f"services.{name}.{field}: {count} containers; this platform runs at most "
                f"{allow.max_containers} for one session"
            )
            return
        total += count
    if total > allow.max_containers:
        yield (
            f"services: {total} containers in all; this platform runs at most "
            f"{allow.max_containers} for one session"
        )


def check_compose(document: dict[str, Any], allow: Allow) -> list[str]:
    """Every reason this (parsed, interpolated) compose document may not run here."""
    reasons: list[str] = []
    for key, value in document.items():
        if str(key).startswith("x-"):
            continue
        if key not in TOP_LEVEL_RULES:
            reasons.append(f"{key}: not allowed on this platform")
            continue
        rule = TOP_LEVEL_RULES[key]
        if rule is not None:
            for name, item in (value or {}).items():
                reasons.extend(rule(f"{key}.{name}", item, allow))
    reasons.extend(_containers(document.get("services") or {}, allow))
    for name, service in (document.get("services") or {}).items():
        for key, value in (service or {}).items():
            path = f"services.{name}.{key}"
            if str(key).startswith("x-"):
                continue
            rule = SERVICE_RULES.get(key)
            if rule is None:
                reasons.append(f"{path}: not allowed on this platform")
            else:
                reasons.extend(rule(path, value, allow))
    return reasons
