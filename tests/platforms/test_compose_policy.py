"""The compose security policy: each refused option is refused naming its field, each opens
with its ``allow`` flag, and harmless files pass. Pure: no Docker needed."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from execbroker.platforms.compose_file import parse
from execbroker.platforms.container_policy import Allow, check_compose

# (what the service adds, the field the refusal names, the allow flag that opens it or None)
SERVICE_REFUSALS: list[tuple[dict[str, Any], str, str | None]] = [
    ({"privileged": True}, "services.web.privileged", "privileged"),
    ({"privileged": "true"}, "services.web.privileged", "privileged"),
    ({"privileged": "${P:-true}"}, "services.web.privileged", "privileged"),
    ({"network_mode": "host"}, "services.web.network_mode", "host_network"),
    ({"network_mode": "bridge"}, "services.web.network_mode", None),
    ({"network_mode": "container:other"}, "services.web.network_mode", None),
    ({"pid": "host"}, "services.web.pid", "host_namespaces"),
    ({"ipc": "host"}, "services.web.ipc", "host_namespaces"),
    ({"uts": "host"}, "services.web.uts", "host_namespaces"),
    ({"userns_mode": "host"}, "services.web.userns_mode", "host_namespaces"),
    ({"cgroup": "host"}, "services.web.cgroup", "host_namespaces"),
    ({"pid": "container:other"}, "services.web.pid", None),
    ({"volumes": ["/etc:/host-etc"]}, "services.web.volumes[0]", "host_mounts"),
    ({"volumes": ["./data:/data"]}, "services.web.volumes[0]", "host_mounts"),
    ({"volumes": ["~/x:/x:ro"]}, "services.web.volumes[0]", "host_mounts"),
    (
        {"volumes": [{"type": "bind", "source": "/", "target": "/host"}]},
        "services.web.volumes[0]",
        "host_mounts",
    ),
    ({"volumes": [{"type": "npipe", "target": "/p"}]}, "services.web.volumes[0]", None),
    ({"volumes_from": ["container:other"]}, "services.web.volumes_from[0]", None),
    ({"devices": ["/dev/sda:/dev/sda"]}, "services.web.devices", "devices"),
    ({"device_cgroup_rules": ["c 1:3 mr"]}, "services.web.device_cgroup_rules", "devices"),
    ({"gpus": "all"}, "services.web.gpus", "devices"),
    (
        {"deploy": {"resources": {"reservations": {"devices": [{"capabilities": ["gpu"]}]}}}},
        "services.web.deploy.resources.reservations.devices",
        "devices",
    ),
    ({"cap_add": ["SYS_ADMIN"]}, "services.web.cap_add", "capabilities"),
    ({"cap_add": ["NET_RAW"]}, "services.web.cap_add", "capabilities"),
    ({"security_opt": ["seccomp:unconfined"]}, "services.web.security_opt", "security_opt"),
    ({"security_opt": ["apparmor=unconfined"]}, "services.web.security_opt", "security_opt"),
    ({"security_opt": ["label:disable"]}, "services.web.security_opt", "security_opt"),
    ({"sysctls": {"net.core.somaxconn": 1024}}, "services.web.sysctls", "sysctls"),
    ({"env_file": ["/etc/environment"]}, "services.web.env_file", "host_mounts"),
    ({"build": "."}, "services.web.build", None),
    ({"container_name": "fixed"}, "services.web.container_name", None),
    ({"external_links": ["db"]}, "services.web.external_links", None),
    ({"cgroup_parent": "/x"}, "services.web.cgroup_parent", None),
    ({"runtime": "runsc"}, "services.web.runtime", None),
    ({"oom_kill_disable": True}, "services.web.oom_kill_disable", "privileged"),
    ({"oom_score_adj": -1000}, "services.web.oom_score_adj", "privileged"),
    ({"extends": {"file": "/etc/other.yaml", "service": "x"}}, "services.web.extends.file", None),
    (
        {"post_start": [{"command": "id", "privileged": True}]},
        "services.web.post_start[0]",
        "privileged",
    ),
    ({"provider": {"type": "model"}}, "services.web.provider", None),
    ({"use_api_socket": True}, "services.web.use_api_socket", None),
    ({"labels": {"execbroker.owner": "bob"}}, "services.web.labels.execbroker.owner", None),
    ({"labels": ["com.docker.compose.project=other"]}, "services.web.labels.com.docker", None),
    ({"some_future_key": 1}, "services.web.some_future_key", None),
    ({"ulimits": {"rtprio": 99}}, "services.web.ulimits.rtprio", "ulimits"),
    ({"ulimits": {"memlock": {"soft": -1, "hard": -1}}}, "services.web.ulimits.memlock", "ulimits"),
    ({"ulimits": {"nproc": 65535}}, "services.web.ulimits.nproc", "ulimits"),
    ({"ulimits": {"nofile": 10**8}}, "services.web.ulimits.nofile", "ulimits"),
    ({"ulimits": {"nofile": "many"}}, "services.web.ulimits.nofile", None),
    ({"scale": 17}, "services.web.scale", None),
    ({"deploy": {"replicas": 17}}, "services.web.deploy.replicas", None),
    ({"deploy": {"replicas": "lots"}}, "services.web.deploy.replicas", None),
    ({"shm_size": "huge"}, "services.web.shm_size", None),
    ({"tmpfs": ["/run:size=huge"]}, "services.web.tmpfs[0].size", None),
    (
        {"volumes": [{"type": "tmpfs", "target": "/t", "tmpfs": {"size": "x"}}]},
        "services.web.volumes[0].tmpfs.size",
        None,
    ),
]

TOP_LEVEL_REFUSALS: list[tuple[dict[str, Any], str, str | None]] = [
    ({"networks": {"n": {"driver": "host"}}}, "networks.n.driver", "host_network"),
    ({"networks": {"n": {"driver": "macvlan"}}}, "networks.n.driver", None),
    ({"networks": {"n": {"external": True}}}, "networks.n.external", None),
    ({"networks": {"n": {"name": "other_default"}}}, "networks.n.name", None),
    ({"networks": {"n": {"driver_opts": {"x": "y"}}}}, "networks.n.driver_opts", None),
    ({"volumes": {"v": {"external": True}}}, "volumes.v.external", None),
    ({"volumes": {"v": {"name": "eb-other_data"}}}, "volumes.v.name", None),
    (
        {"volumes": {"v": {"driver_opts": {"type": "none", "o": "bind", "device": "/etc"}}}},
        "volumes.v.driver_opts",
        "host_mounts",
    ),
    ({"volumes": {"v": {"driver": "nfs"}}}, "volumes.v.driver", None),
    ({"configs": {"c": {"file": "/etc/shadow"}}}, "configs.c.file", None),
    ({"secrets": {"s": {"environment": "EXECBROKER_DATABASE_URL"}}}, "secrets.s.environment", None),
    ({"include": ["/etc/other.yaml"]}, "include", None),
]


def _document(service: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    text = yaml.safe_dump(
        {"services": {"web": {"image": "busybox:local", **(service or {})}}, **top}
    )
    return parse(text)


@pytest.mark.parametrize(("extra", "field", "flag"), SERVICE_REFUSALS, ids=lambda v: str(v))
def test_each_service_option_is_refused_naming_its_field(
    extra: dict[str, Any], field: str, flag: str | None
) -> None:
    reasons = check_compose(_document(extra), Allow())
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(field), reasons
    if flag is not None:
        assert check_compose(_document(extra), Allow(**{flag: True})) == []


@pytest.mark.parametrize(("top", "field", "flag"), TOP_LEVEL_REFUSALS, ids=lambda v: str(v))
def test_each_top_level_option_is_refused_naming_its_field(
    top: dict[str, Any], field: str, flag: str | None
) -> None:
    reasons = check_compose(_document(**top), Allow())
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(field), reasons
    if flag is not None:
        assert check_compose(_document(**top), Allow(**{flag: True})) == []


def test_an_ordinary_application_passes() -> None:
    document = parse(
        """
services:
  web:
    image: busybox:local
    command: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: ["8080", {target: 9090, app_protocol: http}]
    volumes: ["data:/data", "/scratch", {type: tmpfs, target: /tmp}]
    networks: [front]
    cap_add: [NET_BIND_SERVICE]
    cap_drop: [ALL]
    security_opt: ["no-new-privileges:true"]
    network_mode: "service:db"
    depends_on: [db]
    deploy: {replicas: 1, resources: {limits: {cpus: "0.5"}}}
    x-note: anything
  db:
    image: busybox:local
    volumes_from: [web]
    labels: {tier: db}
networks:
  front: {driver: bridge, labels: {a: b}}
volumes:
  data: {}
configs:
  motd: {content: hello}
x-anchors: {}
"""
    )
    assert check_compose(document, Allow()) == []


def test_containers_are_counted_over_all_services() -> None:
    services = {f"s{i}": {"image": "busybox:local", "scale": 4} for i in range(5)}
    document = parse(yaml.safe_dump({"services": services}))
    (reason,) = check_compose(document, Allow())
    assert reason.startswith("services: 20 containers in all")
    assert check_compose(document, Allow(max_containers=20)) == []
