"""How long a broker takes from an accepted offer to a running task, next to the platform's
own way of starting the same task, measured side by side in one run (these machines are
noisy: compare the ratios, not the absolute times); and how long after a task ends its
session is seen COMPLETED.

Each platform is one function ``measure_<name>(repeats, directory) -> dict`` in PLATFORMS
(``local``, ``docker``, ``slurm``; a new backend adds one).

local: a batch script (``sleep 60``) through a broker from accept to RUNNING, next to the
same platform driven directly (``LocalPlatform.start`` until its status says RUNNING: the
sandboxed runner, without the broker); and a script that prints the time as its last act,
from that moment until a GET shows its session COMPLETED.

docker: a real broker process (platform ``docker``) runs ``busybox:local``; the time from
the accepting ``POST /sessions/{uuid}`` to the first ``GET`` that shows the session RUNNING
(a ``sleep``: no ports) or AVAILABLE (``httpd`` with a published HTTP port, which the broker
reports only once it answers). Next to it, the same containers started directly: ``docker run
-d`` (the CLI) and ``containers.run(detach=True)`` (the Python SDK); for httpd also until its
URL answers. httpd runs twice: on the same port each time (after the first, the broker has a
spare holder that publishes it, ``port_spares``; next to it a broker with ``port_spares: 0``,
whose sessions publish their ports themselves, as all did before), and on a new port each
time (no spare publishes it). The broker's monitor passes come every ``monitor_interval_s``;
an accept, the engine's events and a start under way bring them sooner. Completion: a container that
sleeps and exits, from the engine's ``die`` event (its time, read by this process from the
event stream) until a GET shows the session COMPLETED; ``completion`` leaves no outputs (the
broker needs only the engine's stat of its outputs directory, or none where it reads the
container's layer), ``completion_outputs`` writes one file there (copied out before
COMPLETED; checked to be listed then).

slurm: see ``measure_slurm``; completion from the time the job's script prints as its last
act (read from its log) until a GET shows COMPLETED.

    python benchmarks/launch.py [--repeats 5] [--platforms local,docker,slurm]
        [--docker-cases completion,completion_outputs,sleep,httpd,httpd_new_ports]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
import uuid as uuids
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from execbroker.launcher import LOCAL_CONFIG, BrokerProcess

IMAGE = "busybox:local"
SLEEP = ["sleep", "60"]
HTTPD_PORT = 8080
FRESH_PORTS = range(9000, 9999)  # the cold case's: a port no session of the run used before


def _httpd(port: int) -> list[str]:
    return ["busybox", "httpd", "-f", "-p", str(port), "-h", "/www"]


HTTPD = _httpd(HTTPD_PORT)
POLL_S = 0.01
MONITOR_INTERVAL = "PT0.2S"
BASE_CONFIG: dict[str, Any] = {**LOCAL_CONFIG, "monitor": {"interval": MONITOR_INTERVAL}}
ENDED_AT = "ended at "  # what a task prints, with the epoch time, as its last act


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def _wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up waiting")
        time.sleep(POLL_S)


def _ratio(numerator: list[float], denominator: list[float]) -> float:
    return round(statistics.median(numerator) / statistics.median(denominator), 2)


def accept(client: httpx.Client, uuid: str) -> httpx.Response:
    return client.post(
        f"/sessions/{uuid}",
        json={"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"},
    )


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
    except httpx.HTTPError:
        return False
    return True


# -- through a broker -------------------------------------------------------------------


def _request(command: list[str], port: int | None) -> dict[str, Any]:
    executable: dict[str, Any] = {
        "kind": "docker-container",
        "image": {"locations": [IMAGE]},
        "command": command,
    }
    if port is not None:
        executable["network"] = {"ports": [{"internal": {"port": port}, "protocol": "HTTP"}]}
    return {
        "executable": executable,
        "compute": {"cores": {"min": 1, "max": 1}, "memory": {"min": 1, "max": 1}},
        "schedule": {"requested": {"duration": "PT10M"}},
    }


def _accepted(client: httpx.Client, body: dict[str, Any]) -> str:
    """The uuid of the first offer for ``body``, accepted."""
    answer = client.post("/requests", json=body).raise_for_status().json()
    uuid = str(answer["offers"][0]["meta"]["uuid"])
    accept(client, uuid).raise_for_status()
    return uuid


def _until_phase(client: httpx.Client, uuid: str, phase: str, timeout: float = 60) -> None:
    def reached() -> bool:
        session = client.get(f"/sessions/{uuid}").raise_for_status().json()
        if session["phase"] in {"FAILED", "CANCELLED", "COMPLETED"} - {phase}:
            raise RuntimeError(f"session {uuid} {session['phase']}: {session['meta']['messages']}")
        return bool(session["phase"] == phase)

    _wait_until(reached, timeout)


def _through_broker(client: httpx.Client, body: dict[str, Any], phase: str) -> float:
    """Seconds from sending the accept to the first GET that shows ``phase``."""
    answer = client.post("/requests", json=body).raise_for_status().json()
    uuid = answer["offers"][0]["meta"]["uuid"]
    started = time.perf_counter()
    accept(client, uuid).raise_for_status()
    _until_phase(client, uuid, phase)
    elapsed = time.perf_counter() - started
    client.post(
        f"/sessions/{uuid}",
        json={"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"},
    ).raise_for_status()
    return elapsed


def _completion_seen(client: httpx.Client, uuid: str, ended: Callable[[], float]) -> float:
    """Seconds from the task's end (``ended()``, epoch time, asked once the session is seen
    COMPLETED) until then."""
    _until_phase(client, uuid, "COMPLETED", timeout=120)
    seen = time.time()
    return seen - ended()


def _printed_end(client: httpx.Client, uuid: str) -> float:
    """The epoch time a task printed (``ENDED_AT``) as its last act, from its logs."""
    stdout = client.get(f"/sessions/{uuid}/logs").raise_for_status().json()["stdout"]
    return float(stdout.rsplit(ENDED_AT, 1)[1].split()[0])


def _batch_body(script: str) -> dict[str, Any]:
    return {
        "executable": {"kind": "batch-script", "script": script},
        "compute": {"cores": {"min": 1, "max": 1}, "memory": {"min": 1, "max": 1}},
        "schedule": {"requested": {"duration": "PT10M"}},
    }


ENDING_SCRIPT = f'sleep 0.3\necho "{ENDED_AT}$(date +%s.%N)"\n'


# -- local ------------------------------------------------------------------------------


def _local_direct(platform: Any, directory: Path) -> float:
    """Seconds for the local platform itself (no broker) to start ``sleep 60`` until its
    status says RUNNING; stopped afterwards."""
    from execbroker.model.executables import BatchScript
    from execbroker.planner import Resources
    from execbroker.platforms.base import LaunchSpec, RunState

    session = str(uuids.uuid4())
    now = datetime.now(UTC)
    spec = LaunchSpec(
        session_id=session,
        broker="bench-local-direct",
        owner="alice",
        executable=BatchScript(script="sleep 60\n"),
        resources=Resources(1, 1, 0),
        start=now,
        deadline=now + timedelta(minutes=10),
        workdir=directory / "sessions" / session,
    )
    started = time.perf_counter()
    handle = platform.start(spec)
    _wait_until(lambda: platform.status(handle).state == RunState.RUNNING)
    elapsed = time.perf_counter() - started
    platform.stop(handle)
    platform.release(handle)
    return elapsed


def measure_local(repeats: int, directory: Path) -> dict[str, Any]:
    """A batch script through a broker (platform ``local``) next to the platform itself."""
    from execbroker.config import BrokerConfig
    from execbroker.platforms import create_platform

    config = {**BASE_CONFIG, "name": "bench-local"}
    broker = BrokerProcess(config, directory / "broker").start()
    direct_config = BrokerConfig.model_validate(
        {**config, "name": "bench-local-direct", "state_dir": str(directory / "direct")}
    )
    platform = create_platform({"type": "local"}, broker=direct_config)
    timings: dict[str, list[float]] = {"broker": [], "platform_direct": [], "completion": []}
    try:
        with broker.client() as client:
            _through_broker(client, _batch_body("sleep 60\n"), "RUNNING")  # warm up
            _local_direct(platform, directory / "direct")
            for _ in range(repeats):  # interleaved, so drift hits both alike
                timings["broker"].append(
                    _through_broker(client, _batch_body("sleep 60\n"), "RUNNING")
                )
                timings["platform_direct"].append(_local_direct(platform, directory / "direct"))
                uuid = _accepted(client, _batch_body(ENDING_SCRIPT))
                timings["completion"].append(
                    _completion_seen(client, uuid, functools.partial(_printed_end, client, uuid))
                )
    finally:
        broker.stop()
    results: dict[str, Any] = {"monitor_interval_s": 0.2}
    results.update({f"{key}_median_ms": _median_ms(value) for key, value in timings.items()})
    results["completion_max_ms"] = round(max(timings["completion"]) * 1000, 1)
    results["broker_over_platform_direct"] = _ratio(timings["broker"], timings["platform_direct"])
    return results


# -- directly ---------------------------------------------------------------------------


def _docker_cli(command: list[str], port: int | None) -> tuple[float, float | None]:
    """(seconds until ``docker run -d`` returns, seconds until the URL answers or None)."""
    publish = ["-p", f"127.0.0.1::{port}"] if port is not None else []
    started = time.perf_counter()
    done = subprocess.run(
        ["docker", "run", "-d", *publish, IMAGE, *command],
        capture_output=True,
        text=True,
        check=True,
    )
    returned = time.perf_counter() - started
    container = done.stdout.strip()
    answered = None
    try:
        if port is not None:
            published = (
                subprocess.run(
                    ["docker", "port", container, f"{port}/tcp"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.split()[0]
                .rsplit(":", 1)[1]
            )
            _wait_until(lambda: _answers(f"http://127.0.0.1:{published}/"))
            answered = time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    return returned, answered


def _docker_sdk(client: Any, command: list[str], port: int | None) -> float:
    started = time.perf_counter()
    publish = {f"{port}/tcp": ("127.0.0.1", None)} if port is not None else None
    container = client.containers.run(IMAGE, command, detach=True, ports=publish)
    elapsed = time.perf_counter() - started
    container.remove(force=True)
    return elapsed


def _docker_broker(directory: Path, name: str, **options: Any) -> BrokerProcess:
    config = {
        **BASE_CONFIG,
        "name": name,
        "platforms": [{"type": "docker", **options}],
        "monitor": {"interval": MONITOR_INTERVAL},
    }
    return BrokerProcess(config, directory / name).start()


class _DeathWatch:
    """The engine's ``die`` events for one broker's containers, by session: when each ended."""

    def __init__(self, broker: str) -> None:
        import docker

        self.ended: dict[str, float] = {}
        self._client = docker.from_env(timeout=None)
        filters = {"type": "container", "event": ["die"], "label": [f"execbroker.broker={broker}"]}
        self._stream = self._client.api.events(decode=True, filters=filters)
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        try:
            for event in self._stream:
                session = event["Actor"]["Attributes"].get("execbroker.session")
                if session:
                    self.ended[session] = event["timeNano"] / 1e9
        except Exception:  # closed
            return

    def when(self, session: str) -> float:
        """When ``session``'s container ended: the broker may see it COMPLETED before this
        process's own event stream has brought the ``die`` (it is read on a thread)."""
        _wait_until(lambda: session in self.ended, timeout=10)
        return self.ended[session]

    def close(self) -> None:
        self._stream.close()


OUTPUT = "result.txt"
# a task that leaves an output: the broker copies it out before the session is COMPLETED
WRITES_OUTPUT = ["sh", "-c", f'sleep 0.3; echo done > "$EXECBROKER_OUTPUTS/{OUTPUT}"']


def _docker_completion(client: httpx.Client, deaths: _DeathWatch, command: list[str]) -> float:
    uuid = _accepted(client, _request(command, None))
    seen = _completion_seen(client, uuid, functools.partial(deaths.when, uuid))
    if command is WRITES_OUTPUT:  # there when COMPLETED is seen, as the broker promises
        listed = client.get(f"/sessions/{uuid}/outputs").raise_for_status().json()["outputs"]
        if OUTPUT not in {item["name"] for item in listed}:
            raise RuntimeError(f"session {uuid} COMPLETED without its output: {listed}")
    return seen


DOCKER_CASES = ("completion", "completion_outputs", "sleep", "httpd", "httpd_new_ports")


def measure_docker(
    repeats: int, directory: Path, cases: tuple[str, ...] = DOCKER_CASES
) -> dict[str, Any]:
    """busybox through a broker (a network per session, as configured by default; and on
    docker's shared bridge, ``isolate: false``) next to ``docker run -d`` and the SDK.

    Cases: ``completion`` and ``completion_outputs`` (die to COMPLETED seen); ``sleep``
    (accept to RUNNING; next to a broker with ``prepare_images: true``, whose starts find
    the empty outputs directory in a prepared image instead of copying it in); ``httpd``
    (accept to AVAILABLE, the same port each time: after the warm-up, the broker has a spare
    holder publishing it, next to a broker with ``port_spares: 0``, whose sessions publish
    their ports themselves);
    ``httpd_new_ports`` (a port no session used before each time: no spare publishes it, so
    each start makes a network namespace of its own; next to the ``prepare_images`` broker
    too, whose starts copy nothing in: with the shared bridge's, where the engine sets up no
    embedded DNS in the namespace, the two things such a start does that ``docker run -p``
    does not)."""
    import docker

    sdk = docker.from_env()
    sdk.images.get(IMAGE)
    brokers = {
        "broker": _docker_broker(directory, "bench-launch"),
        "broker_shared_bridge": _docker_broker(directory, "bench-launch-shared", isolate=False),
    }
    if {"httpd", "httpd_new_ports"} & set(cases):
        brokers["broker_port_spares_0"] = _docker_broker(
            directory, "bench-launch-port-spares-0", port_spares=0
        )
    if {"sleep", "httpd_new_ports"} & set(cases):
        brokers["broker_prepare_images"] = _docker_broker(
            directory, "bench-launch-prepare-images", prepare_images=True
        )
    results: dict[str, Any] = {"monitor_interval_s": 0.2, "image": IMAGE}
    deaths = _DeathWatch("bench-launch")
    fresh = iter(FRESH_PORTS)
    try:
        with contextlib.ExitStack() as stack:
            clients = {name: stack.enter_context(b.client()) for name, b in brokers.items()}
            for case, command in (
                ("completion", ["sleep", "0.3"]),
                ("completion_outputs", WRITES_OUTPUT),
            ):
                if case in cases:
                    broker = clients["broker"]
                    seen = [_docker_completion(broker, deaths, command) for _ in range(repeats + 1)]
                    results[f"{case}_median_ms"] = _median_ms(seen[1:])
                    results[f"{case}_max_ms"] = round(max(seen[1:]) * 1000, 1)
            for case, name, port, phase in (
                ("sleep", "sleep_to_running", None, "RUNNING"),
                ("httpd", "httpd_to_available", HTTPD_PORT, "AVAILABLE"),
                ("httpd_new_ports", "httpd_new_ports_to_available", 0, "AVAILABLE"),
            ):
                if case in cases:
                    results[name] = _docker_case(sdk, clients, repeats, port, phase, fresh)
    finally:
        deaths.close()
        for broker in brokers.values():
            broker.stop()
    return results


def _docker_case(
    sdk: Any,
    clients: dict[str, httpx.Client],
    repeats: int,
    port: int | None,
    phase: str,
    fresh: Iterator[int],
) -> dict[str, Any]:
    """One case's medians and ratios: each broker's sessions and the direct starts,
    interleaved. ``port`` 0: a fresh one each time, from ``fresh``."""
    brokers = dict(clients)
    if port is None:  # (ports only: the same as ``broker`` otherwise)
        brokers.pop("broker_port_spares_0", None)
    elif port != 0:  # (sleep and fresh ports only: the copy-in it spares is alike in all)
        brokers.pop("broker_prepare_images", None)

    def body() -> dict[str, Any]:
        chosen = next(fresh) if port == 0 else port
        return _request(_httpd(chosen) if chosen is not None else SLEEP, chosen)

    def direct() -> tuple[float, float | None, float]:
        chosen = next(fresh) if port == 0 else port
        command = _httpd(chosen) if chosen is not None else SLEEP
        returned, until_answer = _docker_cli(command, chosen)
        return returned, until_answer, _docker_sdk(sdk, command, chosen)

    for client in brokers.values():  # warm up: twice, as a spare for ports is made from the
        for _ in range(2):  # second time a broker's sessions publish them
            _through_broker(client, body(), phase)
    direct()
    timings: dict[str, list[float]] = {name: [] for name in brokers}
    timings.update(docker_run=[], sdk_run=[])
    answered: list[float] = []
    names = list(brokers)
    for repeat in range(repeats):  # interleaved, so drift hits all alike; and in turns, so
        # what one broker's engine work leaves behind (a spare being made, a removal) falls
        # on each of the others alike
        turn = repeat % len(names)
        for name in names[turn:] + names[:turn]:
            timings[name].append(_through_broker(brokers[name], body(), phase))
        returned, until_answer, sdk_run = direct()
        timings["docker_run"].append(returned)
        timings["sdk_run"].append(sdk_run)
        if until_answer is not None:
            answered.append(until_answer)
    medians = {f"{key}_median_ms": _median_ms(value) for key, value in timings.items()}
    if answered:
        medians["docker_run_until_http_answers_median_ms"] = _median_ms(answered)
        for name in brokers:
            medians[f"{name}_over_docker_run_until_http_answers"] = _ratio(timings[name], answered)
    medians["broker_over_docker_run"] = _ratio(timings["broker"], timings["docker_run"])
    medians["broker_over_sdk_run"] = _ratio(timings["broker"], timings["sdk_run"])
    return medians


# -- slurm ------------------------------------------------------------------------------

SLURM_SCRIPT = "sleep 60\n"
SLURM_EXAMPLE = Path(__file__).resolve().parents[1] / "examples/brokers/slurm-account-003.yaml"


def _sbatch_direct(script: Path, account: str, partition: str) -> tuple[float, float]:
    """(seconds until ``sbatch`` returns, seconds until ``squeue`` shows the job R) for the
    same script with the same options the broker gives it, cancelled afterwards."""
    started = time.perf_counter()
    job = subprocess.run(
        ["sbatch", "--parsable", f"--account={account}", f"--partition={partition}",
         "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--mem=1G", "--time=10",
         "--no-requeue", "--export=ALL", f"--chdir={script.parent}", "--output=/dev/null",
         str(script)],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    ).stdout.strip().split(";")[0]  # fmt: skip
    returned = time.perf_counter() - started

    def running() -> bool:
        state = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%t"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if state not in ("PD", "CF", "R"):
            raise RuntimeError(f"direct Slurm job {job} is {state}")
        return state == "R"

    try:
        _wait_until(running)
        return returned, time.perf_counter() - started
    finally:
        subprocess.run(["scancel", job], capture_output=True, check=False)


def _slurm_settle(account: str) -> None:
    """Wait until the account's last (cancelled) job has left the node, then a random
    pause: slurmctld starts a new batch job on its next pass (about once a second, or at
    once when a job completes), so each sample must meet that pass at a random phase,
    never right after the previous sample's cancellation."""
    _wait_until(
        lambda: not subprocess.run(
            ["squeue", "-h", "-A", account, "-t", "PD,CF,R,CG", "-o", "%i"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    time.sleep(random.uniform(0.2, 1.2))


def measure_slurm(repeats: int, directory: Path) -> dict[str, Any]:
    """A batch script through a broker (platform ``slurm``, account-003's example config)
    from accept to RUNNING, next to a direct ``sbatch`` of the same script with the same
    options until ``squeue`` shows it R. Both poll every ``POLL_S``; the broker's monitor
    submits at once on the accept and asks ``squeue`` again every few tens of milliseconds
    while the job is pending. Slurm itself adds 0-1 s (its scheduler's pass) to both alike."""
    import yaml

    config = yaml.safe_load(SLURM_EXAMPLE.read_text())
    platform = config["platforms"][0]
    config.update(name="bench-slurm", monitor={"interval": MONITOR_INTERVAL})
    broker = BrokerProcess(config, directory / "bench-slurm").start()
    script = directory / "direct" / "script.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("#!/bin/sh\n" + SLURM_SCRIPT)
    body = _batch_body(SLURM_SCRIPT)
    timings: dict[str, list[float]] = {
        "broker": [],
        "sbatch_returns": [],
        "sbatch_to_running": [],
        "completion": [],
    }
    try:
        with broker.client() as client:
            _through_broker(client, body, "RUNNING")  # warm up
            _sbatch_direct(script, platform["account"], platform["partition"])
            for _ in range(repeats):  # interleaved, so drift hits both alike
                _slurm_settle(platform["account"])
                timings["broker"].append(_through_broker(client, body, "RUNNING"))
                _slurm_settle(platform["account"])
                returned, running = _sbatch_direct(
                    script, platform["account"], platform["partition"]
                )
                timings["sbatch_returns"].append(returned)
                timings["sbatch_to_running"].append(running)
            for _ in range(repeats):
                _slurm_settle(platform["account"])
                uuid = _accepted(client, _batch_body(ENDING_SCRIPT))
                timings["completion"].append(
                    _completion_seen(client, uuid, functools.partial(_printed_end, client, uuid))
                )
    finally:
        broker.stop()
    results: dict[str, Any] = {"monitor_interval_s": 0.2, "account": platform["account"]}
    results.update({f"{key}_median_ms": _median_ms(value) for key, value in timings.items()})
    broker_s, direct_s = (statistics.median(timings[k]) for k in ("broker", "sbatch_to_running"))
    results["broker_over_sbatch_to_running"] = round(broker_s / direct_s, 2)
    # Slurm's 0-1 s pass makes the ratio noisy at 5 repeats; the difference is the broker's
    # own cost (HTTP, a monitor pass to submit and one to see R).
    results["broker_minus_sbatch_to_running_ms"] = round((broker_s - direct_s) * 1000, 1)
    results["completion_max_ms"] = round(max(timings["completion"]) * 1000, 1)
    return results


# -- kubernetes -------------------------------------------------------------------------

K8S_EXAMPLE = Path(__file__).resolve().parents[1] / "examples/brokers/k8s-namespace-003.yaml"


def _k8s_direct(api: Any, namespace: str, kubectl: list[str] | None) -> tuple[float, float]:
    """(seconds until the Job's creation returns, seconds until its pod is Running) for the
    same Job the broker makes (``k8s_jobs.job_manifest``, the same grant and hardening),
    created with ``kubectl create -f`` when there is a kubectl, else the Python client;
    polled with the Python client, deleted with its pod afterwards."""
    import uuid as uuids
    from datetime import timedelta

    from kubernetes.client import BatchV1Api, CoreV1Api

    from execbroker.planner import Resources
    from execbroker.platforms import k8s_jobs
    from execbroker.timeutil import utcnow

    session = str(uuids.uuid4())
    now = utcnow()
    job = k8s_jobs.job_manifest(
        broker="bench-direct",
        session_id=session,
        owner="bench",
        namespace=namespace,
        plan=k8s_jobs.PodPlan(image=IMAGE, command=None, args=SLEEP, environment={}),
        resources=Resources(1, 1, 0),
        deadline=now + timedelta(minutes=10),
        now=now,
        pull_policy="Never",
    )
    core, batch = CoreV1Api(api), BatchV1Api(api)
    started = time.perf_counter()
    if kubectl:
        subprocess.run(
            [*kubectl, "create", "-f", "-", "-o", "name"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            check=True,
        )
    else:
        batch.create_namespaced_job(namespace, job)
    returned = time.perf_counter() - started
    selector = f"job-name={job['metadata']['name']}"

    def running() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        return any(pod.status.phase == "Running" for pod in pods)

    try:
        _wait_until(running)
        return returned, time.perf_counter() - started
    finally:
        batch.delete_namespaced_job(
            job["metadata"]["name"], namespace, propagation_policy="Foreground"
        )


def _k8s_settle(api: Any, namespace: str) -> None:
    """Wait until the namespace's last (deleted) pod has gone: until then it holds the
    quota, and the next sample would wait for it, through a broker or not."""
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(api)
    _wait_until(lambda: not core.list_namespaced_pod(namespace).items, timeout=120)


def measure_kubernetes(repeats: int, directory: Path) -> dict[str, Any]:
    """``busybox sleep`` as a docker-container through a broker (platform ``kubernetes``,
    k8s-namespace-003's example config) from accept to RUNNING, next to direct creations of
    the same Job until its pod is Running: with the Python client, and with ``kubectl
    create`` when there is one ($EXECBROKER_KUBECTL, else on PATH; a process start and API
    discovery each time). The broker's monitor polls every ``monitor_interval_s``."""
    import os
    import shutil

    import yaml
    from kubernetes import config as kube_config

    kubeconfig = os.environ.get(
        "EXECBROKER_KUBECONFIG", "/var/lib/execbroker/kubernetes/admin.kubeconfig"
    )
    api = kube_config.new_client_from_config(config_file=kubeconfig)
    found = os.environ.get("EXECBROKER_KUBECTL") or shutil.which("kubectl")
    kubectl = [found, "--kubeconfig", kubeconfig] if found else None
    config = yaml.safe_load(K8S_EXAMPLE.read_text())
    namespace = config["platforms"][0]["namespace"]
    config["platforms"][0]["kubeconfig"] = kubeconfig
    config.update(name="bench-k8s", monitor={"interval": MONITOR_INTERVAL})
    broker = BrokerProcess(config, directory / "bench-k8s").start()
    body = _request(SLEEP, None)
    ways = {"client": None} | ({"kubectl": kubectl} if kubectl else {})
    timings: dict[str, list[float]] = {"broker": []}
    for way in ways:
        timings[f"{way}_create_returns"] = []
        timings[f"{way}_create_to_running"] = []
    try:
        with broker.client() as client:
            _through_broker(client, body, "RUNNING")  # warm up
            for command in ways.values():
                _k8s_settle(api, namespace)
                _k8s_direct(api, namespace, command)
            for _ in range(repeats):  # interleaved, so drift hits all alike
                _k8s_settle(api, namespace)
                timings["broker"].append(_through_broker(client, body, "RUNNING"))
                for way, command in ways.items():
                    _k8s_settle(api, namespace)
                    returned, running = _k8s_direct(api, namespace, command)
                    timings[f"{way}_create_returns"].append(returned)
                    timings[f"{way}_create_to_running"].append(running)
    finally:
        broker.stop()
    results: dict[str, Any] = {"monitor_interval_s": 0.2, "namespace": namespace}
    results.update({f"{key}_median_ms": _median_ms(value) for key, value in timings.items()})
    broker_s = statistics.median(timings["broker"])
    for way in ways:
        direct_s = statistics.median(timings[f"{way}_create_to_running"])
        results[f"broker_over_{way}_create_to_running"] = round(broker_s / direct_s, 2)
    return results


PLATFORMS: dict[str, Callable[[int, Path], dict[str, Any]]] = {
    "local": measure_local,
    "docker": measure_docker,
    "slurm": measure_slurm,
    "kubernetes": measure_kubernetes,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--platforms", default=",".join(PLATFORMS))
    parser.add_argument(
        "--docker-cases",
        default=",".join(DOCKER_CASES),
        help=f"of the docker platform's: {', '.join(DOCKER_CASES)} (default: all)",
    )
    args = parser.parse_args()
    names = [name for name in args.platforms.split(",") if name]
    unknown = sorted(set(names) - set(PLATFORMS))
    if unknown:
        parser.error(f"unknown platforms {unknown}; known: {sorted(PLATFORMS)}")
    cases = tuple(case for case in args.docker_cases.split(",") if case)
    if set(cases) - set(DOCKER_CASES):
        parser.error(f"unknown docker cases {sorted(set(cases) - set(DOCKER_CASES))}")
    PLATFORMS["docker"] = functools.partial(measure_docker, cases=cases)
    with tempfile.TemporaryDirectory(prefix="execbroker-launch-") as temporary:
        os.chmod(temporary, 0o711)  # Slurm jobs run as their owners' accounts pass through
        results = {name: PLATFORMS[name](args.repeats, Path(temporary) / name) for name in names}
    print(json.dumps({"benchmark": "launch", "repeats": args.repeats, "platforms": results}))


if __name__ == "__main__":
    main()
