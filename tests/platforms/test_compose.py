"""The ``compose`` backend against the real Docker Engine and docker compose v2.

What is checked is what the engine says: containers, networks and volumes found by the
project's labels, their limits in ``docker inspect``.
"""

from __future__ import annotations

import http.server
import threading
import uuid as uuids
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from execbroker.errors import InvalidRequest
from execbroker.fetch import FetchPolicy
from execbroker.model.executables import DockerCompose
from execbroker.platforms import compose as compose_platform
from execbroker.platforms import scoped
from execbroker.platforms.base import LaunchSpec, PlatformError, RunState
from execbroker.platforms.docker_engine import GIB
from tests.platforms import support
from tests.platforms.support import wait_state

pytestmark = pytest.mark.docker

IMAGE = "busybox:local"
THREE_SERVICES = """
services:
  web:
    image: busybox:local
    command: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{target: 8080, app_protocol: http}]
    volumes: ["data:/data"]
  api:
    image: busybox:local
    command: ["busybox", "httpd", "-f", "-p", "9000", "-h", "/www"]
    ports: ["9000"]
    depends_on: [web]
  worker:
    image: busybox:local
    command: ["sh", "-c", "echo working on $${HOSTNAME:+a host}; exec sleep 60"]
volumes:
  data: {}
"""


@pytest.fixture
def make_platform(broker_name, tmp_path) -> Callable[..., compose_platform.ComposePlatform]:
    def make(**options: Any) -> compose_platform.ComposePlatform:
        broker = SimpleNamespace(name=broker_name, state_path=tmp_path / "state")
        return compose_platform.create(options, broker=broker)

    return make


def launch(executable: Any, tmp_path: Path, **grant: Any) -> LaunchSpec:
    """A compose session's default grant: 2 cores, 3 GiB, 5 minutes."""
    return support.launch(
        executable, tmp_path, **{"cores": 2, "memory": 3, "seconds": 300, **grant}
    )


def labelled(engine: docker.DockerClient, project: str) -> dict[str, list[Any]]:
    label = {"label": f"com.docker.compose.project={project}"}
    return {
        "containers": engine.containers.list(all=True, ignore_removed=True, filters=label),
        "networks": engine.networks.list(filters=label),
        "volumes": engine.volumes.list(filters=label),
    }


def test_three_services_come_up_with_connectors_and_limits_and_go_down(
    make_platform, engine, tmp_path
):
    platform = make_platform()
    spec = launch(DockerCompose(compose=THREE_SERVICES), tmp_path, cores=2, memory=3)
    project = platform.start(spec)
    status = wait_state(platform, project, {RunState.AVAILABLE})
    by_protocol = {e.protocol: e.location for e in status.endpoints}
    assert set(by_protocol) == {"HTTP", "TCP"}
    assert by_protocol["HTTP"].startswith("http://127.0.0.1:")
    assert "It works" in httpx.get(by_protocol["HTTP"], timeout=5).text
    assert by_protocol["TCP"].startswith("tcp://127.0.0.1:")

    found = labelled(engine, project)
    assert len(found["containers"]) == 3 and found["networks"] and found["volumes"]
    hosts = [engine.api.inspect_container(c.id)["HostConfig"] for c in found["containers"]]
    assert sum(h["NanoCpus"] for h in hosts) == pytest.approx(2e9, rel=0.01)
    assert sum(h["Memory"] for h in hosts) <= 3 * GIB
    assert all(h["Memory"] == h["MemorySwap"] == GIB for h in hosts)
    assert all(h["CapDrop"] == ["ALL"] and h["SecurityOpt"] for h in hosts)
    for container in found["containers"]:
        assert container.labels["execbroker.session"] == spec.session_id
    assert "worker | working on a host" in platform.logs(project).stdout

    platform.stop(project)
    platform.release(project)
    assert labelled(engine, project) == {"containers": [], "networks": [], "volumes": []}
    assert "working on" in platform.logs(project).stdout, "logs are kept after release"
    assert platform.status(project).state == RunState.LOST
    platform.release(project)  # idempotent


def test_the_project_state_follows_its_containers(make_platform, tmp_path):
    platform = make_platform()
    done = platform.start(
        launch(
            DockerCompose(
                compose="""
services:
  a: {image: busybox:local, command: ["true"]}
  b: {image: busybox:local, command: ["sh", "-c", "sleep 0.3"]}
"""
            ),
            tmp_path,
        )
    )
    failed = platform.start(
        launch(
            DockerCompose(
                compose="""
services:
  ok: {image: busybox:local, command: ["sleep", "30"]}
  broken: {image: busybox:local, command: ["sh", "-c", "echo no database >&2; exit 2"]}
"""
            ),
            tmp_path,
        )
    )
    running = platform.start(
        launch(
            DockerCompose(
                compose="""
services:
  quiet: {image: busybox:local, command: ["sleep", "30"]}
"""
            ),
            tmp_path,
        )
    )
    assert wait_state(platform, done, {RunState.COMPLETED}).exit_code == 0
    status = wait_state(platform, failed, {RunState.FAILED})
    assert status.exit_code == 2
    assert "service broken" in status.message and "no database" in status.message
    assert platform.status(running).state == RunState.RUNNING


def test_check_refuses_with_the_field_and_never_runs_it(make_platform):
    platform = make_platform(pull="never")
    assert platform.check(DockerCompose()) is None  # the kind-only question
    assert platform.check(DockerCompose(compose=THREE_SERVICES)) is None
    refused = platform.check(
        DockerCompose(compose="services: {web: {image: busybox:local, privileged: true}}")
    )
    assert refused.startswith("services.web.privileged")
    # Text that is no compose file at all is the client's mistake (a 422), not a NO.
    for text, words in (("services: [oops", "not valid YAML"), ("volumes: {}", "at least one")):
        with pytest.raises(InvalidRequest, match=words) as raised:
            platform.check(DockerCompose(compose=text))
        assert raised.value.field == "executable.compose"
    assert "services.w.image" in platform.check(DockerCompose(compose="services: {w: {}}"))
    missing = platform.check(DockerCompose(compose="services: {w: {image: nowhere.invalid/x}}"))
    assert missing.startswith("services.w.image") and "does not pull" in missing
    assert "file" in platform.check(DockerCompose(location="file:///etc/passwd"))


def test_re_adoption_after_a_crash_converges_without_a_second_start(
    make_platform, engine, tmp_path
):
    spec = launch(DockerCompose(compose=THREE_SERVICES), tmp_path)
    project = make_platform().start(spec)
    before = {c.id for c in labelled(engine, project)["containers"]}
    restarted = make_platform()
    assert restarted.find(spec.session_id) == project
    assert {c.id for c in labelled(engine, project)["containers"]} == before
    assert restarted.find(str(uuids.uuid4())) is None
    restarted.release(project)


def test_a_file_is_fetched_from_its_location_with_a_size_limit(make_platform, engine, tmp_path):
    files = {
        "/app.yaml": b'services: {one: {image: busybox:local, command: ["true"]}}',
        "/big.yaml": b"#" * 5000,
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        platform = make_platform(max_bytes=1000)
        with pytest.raises(PlatformError, match=r"127\.0\.0\.1 is a loopback address"):
            platform.start(launch(DockerCompose(location=f"{base}/app.yaml"), tmp_path))
        # What the broker's config would open with ``fetch: {allow: [127.0.0.1/32]}``.
        platform = scoped(platform, FetchPolicy(allow=["127.0.0.1/32"]))
        project = platform.start(launch(DockerCompose(location=f"{base}/app.yaml"), tmp_path))
        assert wait_state(platform, project, {RunState.COMPLETED}).state == RunState.COMPLETED
        with pytest.raises(PlatformError, match="larger than 1000 bytes"):
            platform.start(launch(DockerCompose(location=f"{base}/big.yaml"), tmp_path))
        with pytest.raises(PlatformError, match="404"):
            platform.start(launch(DockerCompose(location=f"{base}/none.yaml"), tmp_path))
    finally:
        server.shutdown()


def test_a_failed_up_leaves_nothing_behind(make_platform, engine, tmp_path):
    platform = make_platform(pull="missing")
    spec = launch(
        DockerCompose(
            compose="""
services:
  fine: {image: busybox:local, command: ["sleep", "30"]}
  missing: {image: nowhere.invalid/nothing:1}
"""
        ),
        tmp_path,
    )
    with pytest.raises(PlatformError, match="docker compose up failed"):
        platform.start(spec)
    project = compose_platform.project_name(spec.session_id)
    assert labelled(engine, project) == {"containers": [], "networks": [], "volumes": []}


def test_the_sweep_takes_down_projects_long_past_their_deadline(make_platform, engine, tmp_path):
    platform = make_platform()
    quiet = "services: {quiet: {image: busybox:local, command: [sleep, '30']}}"
    late = platform.start(launch(DockerCompose(compose=quiet), tmp_path, seconds=-120))
    current = platform.start(launch(DockerCompose(compose=quiet), tmp_path))
    assert platform.status(current).state == RunState.RUNNING  # the first status sweeps
    assert labelled(engine, late) == {"containers": [], "networks": [], "volumes": []}
    assert len(labelled(engine, current)["containers"]) == 1
