"""The ``kubernetes`` backend: each session is one batch/v1 Job in the broker's namespace.

It runs docker-container, batch-script (in ``script_image``) and jupyter-notebook (batch
and interactive, in ``notebook_image``; see ``k8s_notebooks`` for how files go in and out).

Virtual platforms on one cluster are brokers with different namespaces (``k8s-namespace-001``
...), each namespace with its own ResourceQuota and LimitRange. ``free()`` reads the quota's
``hard`` and ``used`` (adding back what this broker's own pods hold, which the broker's
calendar counts already) and what the nodes can still place, so a YES is a promise the
namespace can keep; at start-up the broker's own quota is checked against the namespace's,
and a broker whose quota is larger refuses to start, saying so. What is "its own" must be
what the calendar counts, at the same moment: the pods come from one list read between two
equal reads of the quotas (a pod created in between would be counted twice), and a pod
stops being its own as soon as its session is to end (``ending``, before the cancel leaves
the calendar; the service reads ``free()`` after the calendar), not when it is gone.

The Job is named after the session (``eb-<session uuid>``), so the API server itself refuses
a second Job for a session: a start after a crash finds the first one (409) instead of
starting it again, and ``find`` reads it by name. Its labels carry broker, session and
platform; annotations the owner, the deadline and the planned ports. One pod, never retried
(``backoffLimit: 0``, ``restartPolicy: Never``); requests = limits = the grant (Guaranteed
QoS); the pod's ``activeDeadlineSeconds`` is the grant's time left, so Kubernetes ends the
task at the grant's end even while the broker is down (the session then FAILS with that
reason). The kubelet ends such a pod in place (Failed, reason DeadlineExceeded), keeping its
container and output; the Job's own deadline, which would have the Job controller delete
the pod (and the kubelet its container, output and all, at once), comes later, only for a
pod no kubelet ever ran.

Closed by default, as on docker: the same container policy (``allow``), and every pod runs
without a service-account token, with no host network, PID or IPC namespace and no volume
but a batch script's empty working directory; its container with
``allowPrivilegeEscalation: false``, every capability dropped and the runtime's default
seccomp profile. Batch scripts run in the image this platform names (``script_image``), as
a non-root user (``script_user``); containers run as their image says unless
``container_user`` is set. (The cluster set up by scripts/services.sh also refuses
privileged pods and host paths itself: ``--allow-privileged=false`` and a restrictive
PodSecurityPolicy.)

Reaching a pod: only through the API, never by its IP (the node's container bridge is a
private range). Logs come from the pod (kept in the broker's state directory when the Job is
removed); a container's ports are forwarded from ``127.0.0.1`` of the broker's host through
the API's port-forward (``k8s_forward``), and reported as connectors once they answer.
Cancel deletes the Job with its pods (foreground propagation). Execs and port-forwards use
an API client each: the client library's websocket calls swap their client's transport while
they connect, which would catch the other threads' calls on a shared one.

APIs used: batch/v1 Job, v1 Pod (and its log, portforward and exec subresources), v1
ConfigMap, v1 Event, v1 ResourceQuota, v1 Node: all stable long before 1.20, which is what
was run here.

Options (``platforms: [{type: kubernetes, namespace: ..., ...}]``): see ``KubernetesOptions``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from execbroker import kinds, notebooks
from execbroker.model.executables import BatchScript, DockerContainer, Executable, JupyterNotebook
from execbroker.notebooks import task as notebook_files
from execbroker.planner import Resources
from execbroker.platforms import k8s_jobs as jobs
from execbroker.platforms import k8s_notebooks as nb
from execbroker.platforms.base import (
    LOG_TAIL_BYTES,
    Endpoint,
    LaunchSpec,
    Logs,
    PlatformError,
    RunState,
    RunStatus,
    read_tail,
)
from execbroker.platforms.container_policy import Allow, check_container
from execbroker.platforms.k8s_forward import Forward
from execbroker.timeutil import utcnow

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 20  # seconds for one API call
SCRIPT_WORKDIR = "/work"  # a batch script's working directory: an emptyDir of its pod
_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class KubernetesOptions(BaseModel):
    """The platform's options in a broker's config; anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(pattern=_NAMESPACE)
    # The kubeconfig to use; default: $EXECBROKER_KUBECONFIG, $KUBECONFIG, ~/.kube/config.
    kubeconfig: str | None = None
    context: str | None = None
    pull: Literal["never", "missing", "always"] = (
        "never"  # imagePullPolicy Never/IfNotPresent/Always
    )
    script_image: str | None = Field(default="busybox:local", description="runs batch scripts")
    script_user: int | None = Field(default=65534, ge=0, description="uid of scripts' pods")
    notebook_image: str | None = Field(
        default="execbroker/python:local", description="runs notebooks; null: no notebooks"
    )
    notebook_outputs_limit: int = Field(
        default=8 * 1024**2, ge=0, description="bytes of a notebook's outputs brought back"
    )
    container_user: int | None = Field(default=None, ge=0, description="uid of containers' pods")
    connector_host: str = "127.0.0.1"  # where forwarded ports listen (the broker's host)
    probe_grace: float = Field(default=30, ge=0, description="seconds before a port counts as up")
    allow: Allow = Allow()


_PULL = {"never": "Never", "missing": "IfNotPresent", "always": "Always"}
# What the notebook image has (``scripts/images/python``), as on the docker platform.
NOTEBOOK_SUPPORT = notebooks.Support(
    batch="papermill", interactive="jupyter_server", kernels=frozenset({"python3"})
)


@contextlib.contextmanager
def api_errors(doing: str) -> Iterator[None]:
    """The client's failures as PlatformError, with the API server's own message."""
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as error:
        raise PlatformError(f"{doing}: {_api_message(error)}") from None
    except (OSError, ValueError) as error:  # urllib3's connection errors are OSErrors
        raise PlatformError(f"{doing}: the Kubernetes API did not answer ({error})") from None


def _api_message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message") or error.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{error.status} {error.reason}"


class KubernetesPlatform:
    name = "kubernetes"

    def __init__(
        self, options: KubernetesOptions, *, broker: str, state_dir: Path, api_client: Any
    ) -> None:
        from kubernetes import client

        self.options = options
        self.broker = broker
        self.namespace = options.namespace
        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.logs_dir = state_dir / "kubernetes-logs"
        self.sessions_dir = state_dir / "sessions"  # the broker's session work directories
        self._forwards: dict[str, list[tuple[jobs.Port, Forward]]] = {}
        self._ready: set[str] = set()
        # Jobs being removed: their sessions have ended, so the calendar no longer counts
        # them, though their pods are not yet marked deleted (their logs and a notebook's
        # outputs are kept first); ``free()`` must not add those pods back as this broker's.
        self._removing: set[str] = set()
        self._lock = threading.Lock()

    # -- offers ---------------------------------------------------------------------------

    def check(self, executable: Executable) -> str | None:
        if isinstance(executable, JupyterNotebook):
            if not self.options.notebook_image:
                return "the kubernetes platform here runs no notebooks (it has no notebook_image)"
            return notebooks.refusal(executable, NOTEBOOK_SUPPORT, platform=self.name)
        if isinstance(executable, BatchScript):
            if not self.options.script_image:
                return "the kubernetes platform here runs no batch scripts (no script_image)"
            return None
        if not isinstance(executable, DockerContainer):
            return (
                "the kubernetes platform runs docker-container, batch-script and "
                "jupyter-notebook executables, "
                f"not {kinds.alias(executable.kind)}"
            )
        refusal = check_container(executable, self.options.allow)
        if refusal is not None:
            return refusal
        for index, port in enumerate(executable.network.ports if executable.network else []):
            if port.access and port.protocol == "UDP":
                return (
                    f"executable.network.ports[{index}].protocol: UDP ports cannot be reached "
                    "here (they are forwarded through the Kubernetes API, which carries TCP only)"
                )
        return None

    def free(self) -> Resources | None:
        """What this broker could still use: the namespace's ResourceQuota less what others'
        pods hold there, and what the nodes can still place, both plus this broker's own pods
        (already in its calendar). Unknown (an API error) offers nothing."""
        try:
            with api_errors("reading the namespace's quota"):
                return self._free()
        except PlatformError as error:
            log.warning("Kubernetes capacity unknown, offering nothing: %s", error)
            return Resources(0, 0, 0)

    def _free(self) -> Resources:
        # A pod being deleted (a cancelled session's) still holds quota until it has gone,
        # but no longer this broker's calendar: it counts as someone else's until then.
        # ``_removing`` is read first: a Job's name leaves it only once its pods are marked.
        with self._lock:
            removing = set(self._removing)
        quotas, everyone = self._quotas_and_pods()
        own_pods = [pod for pod in everyone if self._booked_here(pod, removing)]
        own = _sum_holds(own_pods)
        cpus, memory = Decimal("Infinity"), Decimal("Infinity")
        for quota in quotas:
            status = quota.get("status") or {}
            bound = jobs.quota_free(status.get("hard") or {}, status.get("used") or {}, own)
            if bound is not None:
                cpus, memory = min(cpus, bound[0]), min(memory, bound[1])
        node_cpus, node_memory = self._node_room(everyone, own_pods)
        return jobs.whole(min(cpus, node_cpus + own[0]), min(memory, node_memory + own[1]))

    def _quotas_and_pods(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The namespace's ResourceQuotas and every live pod, as of one moment: a pod
        created between the two reads would count as someone else's in the quota's
        ``used`` (offering too little), so the pods are read between two reads of the
        quotas until these are the same. Still changing after a few tries, the later quotas
        are kept: with the pods read before them, that errs on offering too little."""
        quotas = self._quotas()
        for _ in range(3):
            pods = self._live_pods(None, None)
            again = self._quotas()
            if _versions(again) == _versions(quotas):
                break
            quotas = again
        return again, pods

    def _booked_here(self, pod: dict[str, Any], removing: set[str]) -> bool:
        """Whether a pod is one of this broker's that its calendar still counts."""
        metadata = pod["metadata"]
        labels = metadata.get("labels") or {}
        return (
            metadata.get("namespace") == self.namespace
            and labels.get(jobs.LABEL_BROKER) == jobs.label_value(self.broker)
            and labels.get(jobs.LABEL_PLATFORM) == "kubernetes"
            and not metadata.get("deletionTimestamp")
            and labels.get("job-name") not in removing
        )

    def _quotas(self) -> list[dict[str, Any]]:
        found = self.core.list_namespaced_resource_quota(
            self.namespace, _request_timeout=REQUEST_TIMEOUT
        )
        return [self._plain(item) for item in found.items]

    def _node_room(
        self, everyone: list[dict[str, Any]], own_pods: list[dict[str, Any]]
    ) -> tuple[Decimal, Decimal]:
        """CPUs and bytes the schedulable nodes have left, counting every live pod's requests
        but this broker's own (which the caller adds back)."""
        nodes = self.core.list_node(_request_timeout=REQUEST_TIMEOUT).items
        cpus = memory = Decimal(0)
        for node in map(self._plain, nodes):
            if (node.get("spec") or {}).get("unschedulable") or not _ready(node):
                continue
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            cpus += jobs.quantity(allocatable.get("cpu"))
            memory += jobs.quantity(allocatable.get("memory"))
        mine = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in own_pods}
        others = [
            p for p in everyone if (p["metadata"]["namespace"], p["metadata"]["name"]) not in mine
        ]
        held = _sum_holds([p for p in others if (p.get("spec") or {}).get("nodeName")])
        return cpus - held[0], memory - held[1]

    def _live_pods(self, namespace: str | None, selector: str | None) -> list[dict[str, Any]]:
        phases = "status.phase!=Succeeded,status.phase!=Failed"
        arguments: dict[str, Any] = {"field_selector": phases, "_request_timeout": REQUEST_TIMEOUT}
        if selector:
            arguments["label_selector"] = selector
        if namespace is None:
            found = self.core.list_pod_for_all_namespaces(**arguments)
        else:
            found = self.core.list_namespaced_pod(namespace, **arguments)
        return [self._plain(pod) for pod in found.items]

    def check_quota(self, quota: Resources) -> None:
        """Refuse (ValueError, naming both) a broker quota the namespace's ResourceQuota
        could never hold: such a broker would promise what Kubernetes then refuses."""
        try:
            with api_errors(f"reading namespace {self.namespace}"):
                self.core.read_namespace(self.namespace, _request_timeout=REQUEST_TIMEOUT)
                quotas = self._quotas()
        except PlatformError as error:
            raise ValueError(f"kubernetes platform: {error}") from None
        for item in quotas:
            hard = (
                (item.get("status") or {}).get("hard") or (item.get("spec") or {}).get("hard") or {}
            )
            cpus, memory = jobs.quota_limit(hard)
            name = f"{self.namespace}/{item['metadata']['name']}"
            if cpus is not None and quota.cores > cpus:
                raise ValueError(
                    f"the broker's quota.cores ({quota.cores}) is more than the ResourceQuota "
                    f"{name} allows its pods together ({cpus} CPUs): lower quota.cores"
                )
            if memory is not None and quota.memory_gib * jobs.GIB > memory:
                raise ValueError(
                    f"the broker's quota.memory ({quota.memory_gib} GiB) is more than the "
                    f"ResourceQuota {name} allows its pods together "
                    f"({memory / jobs.GIB:g} GiB): lower quota.memory"
                )
        if not quotas:
            log.warning(
                "namespace %s has no ResourceQuota: only this broker's quota bounds its offers",
                self.namespace,
            )

    # -- running --------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> str:
        refusal = self.check(spec.executable)
        if refusal is not None:
            raise PlatformError(refusal)
        plan = self._plan(spec)
        manifest = jobs.job_manifest(
            broker=self.broker,
            session_id=spec.session_id,
            owner=spec.owner,
            namespace=self.namespace,
            plan=plan,
            resources=spec.resources,
            deadline=spec.deadline,
            now=utcnow(),
            pull_policy=_PULL[self.options.pull],
        )
        from kubernetes.client.exceptions import ApiException

        with api_errors("creating the Job"):
            try:
                if plan.files:  # first, so the pod finds them when it starts
                    self._create_files(plan.files, manifest["metadata"]["labels"], spec.workdir)
                created = self.batch.create_namespaced_job(
                    self.namespace, manifest, _request_timeout=REQUEST_TIMEOUT
                )
                if plan.files:
                    self._own_files(plan.files, created)
            except ApiException as error:
                if error.status != 409:  # 409: there already (a start after a crash)
                    raise
                if self.find(spec.session_id) is None:
                    raise PlatformError(
                        f"a Job named {manifest['metadata']['name']} that this broker did not "
                        f"start exists in namespace {self.namespace}"
                    ) from None
        return self._handle(manifest["metadata"]["name"])

    def _plan(self, spec: LaunchSpec) -> jobs.PodPlan:
        executable = spec.executable
        environment = _session_environment(spec)
        if isinstance(executable, JupyterNotebook):
            return self._notebook_plan(spec, environment)
        if isinstance(executable, BatchScript):
            assert self.options.script_image
            if not executable.script:
                raise PlatformError("executable.script: a batch-script needs its script")
            return jobs.PodPlan(
                image=self.options.script_image,
                command=["/bin/sh", "-c", executable.script, "script.sh"],
                args=None,
                environment={**executable.environment, "HOME": SCRIPT_WORKDIR, **environment},
                run_as_user=self.options.script_user,
                workdir=SCRIPT_WORKDIR,
            )
        assert isinstance(executable, DockerContainer)
        if executable.missing():
            raise PlatformError("a docker-container with image.locations is needed")
        assert executable.image is not None
        ports = {
            p.internal.port: jobs.Port(p.internal.port, p.protocol, p.path or "/")
            for p in (executable.network.ports if executable.network else [])
            if p.access
        }
        return jobs.PodPlan(
            image=executable.image.locations[0],
            command=[executable.entrypoint] if executable.entrypoint else None,
            args=list(executable.command) or None,
            environment={**executable.environment, **environment},
            ports=tuple(ports.values()),
            run_as_user=self.options.container_user,
            privileged=executable.privileged,
        )

    def _notebook_plan(self, spec: LaunchSpec, environment: dict[str, str]) -> jobs.PodPlan:
        """The runner in the notebook image, its files from a ConfigMap (``k8s_notebooks``);
        an interactive server on the pod's own loopback, reached by port-forward only."""
        assert self.options.notebook_image
        try:
            task = notebooks.prepare(
                spec, python="python3", task_dir=nb.SESSION_DIR, host="127.0.0.1",
                port=nb.NOTEBOOK_PORT,
            )  # fmt: skip
        except notebooks.NotebookError as error:
            raise PlatformError(str(error)) from None
        task.write(spec.workdir)
        command, pack = nb.command("python3", task.argv, limit=self.options.notebook_outputs_limit)
        ports = (jobs.Port(nb.NOTEBOOK_PORT, "HTTP"),) if task.mode == "interactive" else ()
        return jobs.PodPlan(
            image=self.options.notebook_image,
            command=command,
            args=None,
            environment={
                "HOME": str(nb.SESSION_DIR / "work"),
                "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                "EXECBROKER_PACK": pack,
                **environment,
            },
            ports=ports,
            run_as_user=self.options.script_user,
            workdir=str(nb.SESSION_DIR),
            files=jobs.job_name(spec.session_id) + "-files",
            annotations=((jobs.ANNOTATION_NOTEBOOK, task.mode),),
        )

    def _own_files(self, name: str, job: Any) -> None:
        """The Job owns its files' ConfigMap, so deleting the Job deletes them too."""
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job.metadata.name,
            "uid": job.metadata.uid,
            "blockOwnerDeletion": True,
        }
        self.core.patch_namespaced_config_map(
            name,
            self.namespace,
            {"metadata": {"ownerReferences": [owner]}},
            _request_timeout=REQUEST_TIMEOUT,
        )

    def _create_files(self, name: str, labels: dict[str, str], workdir: Path) -> None:
        """The task's files (written by ``notebooks.prepare``) as a ConfigMap."""
        from kubernetes.client.exceptions import ApiException

        files = (notebook_files.RUNNER_FILE, notebook_files.TASK_FILE, notebook_files.INPUT_FILE)
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels},
            "binaryData": {f: base64.b64encode((workdir / f).read_bytes()).decode() for f in files},
        }
        try:
            self.core.create_namespaced_config_map(
                self.namespace, body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status != 409:
                raise

    def find(self, session_id: str) -> str | None:
        from kubernetes.client.exceptions import ApiException

        name = jobs.job_name(session_id)
        with api_errors("looking for the session's Job"):
            try:
                job = self._plain(
                    self.batch.read_namespaced_job(
                        name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                    )
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
        labels = job["metadata"].get("labels") or {}
        if labels.get(jobs.LABEL_BROKER) != jobs.label_value(self.broker):
            return None
        return self._handle(name)

    def status(self, handle: str) -> RunStatus:
        from kubernetes.client.exceptions import ApiException

        name = self._name(handle)
        with api_errors("asking Kubernetes"):
            try:
                job = self._plain(
                    self.batch.read_namespaced_job(
                        name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                    )
                )
            except ApiException as error:
                if error.status == 404:
                    return RunStatus(RunState.LOST, f"Job {self.namespace}/{name} is gone")
                raise
            pod = self._pod(name)
            return self._state(handle, job, pod)

    def _state(self, handle: str, job: dict[str, Any], pod: dict[str, Any] | None) -> RunStatus:
        state = self._job_state(handle, job, pod)
        mode = (job["metadata"].get("annotations") or {}).get(jobs.ANNOTATION_NOTEBOOK)
        if mode is None:
            return state
        workdir = self._workdir(job)
        if state.state.final:
            if pod is not None:
                self._collect(pod, workdir)
            said = notebooks.result(workdir)
            return state if said is None else RunStatus(said.state, said.message, state.exit_code)
        if state.state not in (RunState.RUNNING, RunState.AVAILABLE) or pod is None:
            return state
        if mode != "interactive":
            return RunStatus(RunState.RUNNING)
        forwards = self._forwards.get(handle) or []
        if not forwards:
            return RunStatus(RunState.PREPARING, "starting the Jupyter server")
        self._server_file(pod, workdir)
        return notebooks.running(
            workdir, host=self.options.connector_host, port=forwards[0][1].port
        )

    def _job_state(self, handle: str, job: dict[str, Any], pod: dict[str, Any] | None) -> RunStatus:
        code, reason = jobs.container_end(pod) if pod else (None, None)
        # The pod's deadline first: its Failed phase (and the Job's BackoffLimitExceeded
        # that follows) would otherwise read as the task's own failure.
        failure = (jobs.past_deadline(pod) if pod else None) or jobs.job_failure(job)
        if failure is not None:
            self._close_forwards(handle)
            if reason and reason != "Error":  # e.g. OOMKilled: say it
                failure = f"{failure} ({reason})"
            return RunStatus(RunState.FAILED, failure, code)
        if jobs.job_complete(job):
            self._close_forwards(handle)
            return RunStatus(RunState.COMPLETED, "the task ended with exit code 0", code or 0)
        if pod is None:
            refused = self._refusal(self._name(handle))
            if refused is not None and "exceeded quota" in refused:
                # The Job controller tries again: a pod that held the quota may be ending.
                return RunStatus(RunState.PREPARING, f"waiting for quota: {refused}")
            if refused is not None:
                return RunStatus(RunState.FAILED, f"Kubernetes refused the pod: {refused}")
            return RunStatus(RunState.PREPARING, "waiting for the Job's pod")
        phase = (pod.get("status") or {}).get("phase", "Unknown")
        state = jobs.POD_PHASES.get(phase, RunState.PREPARING)
        if state == RunState.PREPARING:
            stuck = jobs.stuck_reason(pod)
            if stuck is not None:
                return RunStatus(RunState.FAILED, stuck)
            return RunStatus(RunState.PREPARING, jobs.pending_note(pod))
        if state.final:  # the pod ended; the Job's condition follows in a moment
            self._close_forwards(handle)
            if state == RunState.FAILED:
                return RunStatus(state, f"the task exited with code {code} ({reason})", code)
            return RunStatus(state, "the task ended with exit code 0", code)
        return self._running(handle, job, pod)

    def _running(self, handle: str, job: dict[str, Any], pod: dict[str, Any]) -> RunStatus:
        ports = _planned_ports(job)
        if not ports:
            return RunStatus(RunState.RUNNING)
        forwards = self._open_forwards(handle, pod["metadata"]["name"], ports)
        if not forwards:  # being removed
            return RunStatus(RunState.RUNNING)
        endpoints = tuple(
            Endpoint(port.protocol, _location(port, self.options.connector_host, fwd.port))
            for port, fwd in forwards
        )
        if handle not in self._ready:
            started = (pod.get("status") or {}).get("startTime")
            if not all(_answers(self.options.connector_host, f.port) for _, f in forwards) and (
                _age(started) < self.options.probe_grace
            ):
                return RunStatus(RunState.PREPARING, "waiting for its ports to answer")
            self._ready.add(handle)
        return RunStatus(RunState.AVAILABLE, endpoints=endpoints)

    def logs(self, handle: str) -> Logs:
        """The pod's output (Kubernetes keeps stdout and stderr as one stream: it is all
        ``stdout``); once the Job is removed, the copy kept when it was."""
        name = self._name(handle)
        with api_errors("reading the logs"):
            pod = self._pod(name)
            # A pod being removed may still be listed after its container (and log) went:
            # the copy kept before the removal began is the log then.
            text = (self._pod_log(pod) if pod is not None else "") or read_tail(self._kept(name))
            return Logs(nb.split_logs(text)[0], "")

    def _pod_log(self, pod: dict[str, Any], *, whole: bool = False) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            return jobs.readable_log(
                str(
                    self.core.read_namespaced_pod_log(
                        pod["metadata"]["name"],
                        self.namespace,
                        container=jobs.CONTAINER,
                        limit_bytes=None if whole else LOG_TAIL_BYTES,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                )
            )
        except ApiException as error:
            if error.status in (400, 404):  # not started yet, or just removed
                return ""
            raise

    def stop(self, handle: str) -> None:
        self._remove(handle)

    def release(self, handle: str) -> None:
        self._remove(handle)

    def ending(self, handle: str) -> None:
        """The broker's word that a session is about to end (a cancel), before it leaves
        the calendar: its pods are no longer counted as this broker's in ``free()``."""
        with self._lock:
            self._removing.add(self._name(handle))

    def _remove(self, handle: str) -> None:
        """Keep the logs, then delete the Job with its pods (foreground: the Job goes only
        once its pods have); deleting what is gone already is not an error."""
        name = self._name(handle)
        with self._lock:  # first: closing the forwards may take a while
            self._removing.add(name)
        try:
            self._close_forwards(handle)
            self._ready.discard(handle)
            self._delete(name)
        finally:
            with self._lock:
                self._removing.discard(name)

    def _delete(self, name: str) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        with api_errors("removing the Job"):
            pod = self._pod(name)
            if pod is not None:
                try:  # what can be kept is kept; the Job goes regardless
                    self._keep_logs(name, self._pod_log(pod))
                    self._save_notebook(pod)
                except (ApiException, OSError, ValueError) as error:
                    log.warning("keeping what %s wrote: %s", name, error)
            try:
                self.batch.delete_namespaced_job(
                    name,
                    self.namespace,
                    body=client.V1DeleteOptions(
                        propagation_policy="Foreground", grace_period_seconds=5
                    ),
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except ApiException as error:
                if error.status != 404:
                    raise
            # At once, not when the garbage collector comes to them: until a pod is marked
            # deleted it counts as this broker's own in ``free()``.
            self.core.delete_collection_namespaced_pod(
                self.namespace,
                label_selector=f"job-name={name}",
                grace_period_seconds=5,
                _request_timeout=REQUEST_TIMEOUT,
            )

    # -- helpers --------------------------------------------------------------------------

    def _handle(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    def _name(self, handle: str) -> str:
        namespace, _, name = handle.partition("/")
        if namespace != self.namespace or not name:
            raise PlatformError(f"{handle} is not a Job of namespace {self.namespace}")
        return name

    def _pod(self, job_name: str) -> dict[str, Any] | None:
        """The Job's pod (the newest, should there ever be more)."""
        found = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"job-name={job_name}", _request_timeout=REQUEST_TIMEOUT
        ).items
        pods = [self._plain(pod) for pod in found]
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return pods[-1] if pods else None

    def _refusal(self, job_name: str) -> str | None:
        """Why the Job controller could not create the pod (quota, admission), if it said so."""
        events = self.core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.kind=Job,involvedObject.name={job_name}",
            _request_timeout=REQUEST_TIMEOUT,
        ).items
        for event in map(self._plain, events):
            if event.get("reason") == "FailedCreate":
                return str(event.get("message"))
        return None

    def _plain(self, obj: Any) -> dict[str, Any]:
        """A client model as the API's own JSON (camelCase keys), which ``k8s_jobs`` reads."""
        plain = self.api_client.sanitize_for_serialization(obj)
        assert isinstance(plain, dict)
        return plain

    def _workdir(self, job: dict[str, Any]) -> Path:
        """The session's work directory, from the session label of its Job or pod."""
        session = (job["metadata"].get("labels") or {}).get(jobs.LABEL_SESSION, "")
        if not session or "/" in session or session.startswith("."):
            raise PlatformError(f"Job {job['metadata']['name']} has no session label")
        return self.sessions_dir / session

    def _collect(self, pod: dict[str, Any], workdir: Path) -> None:
        """An ended notebook task's outputs and result, from its log, once."""
        if (workdir / notebook_files.RESULT_FILE).exists():
            return
        _, payload = nb.split_logs(self._pod_log(pod, whole=True))
        if payload:
            nb.unpack(payload, workdir, limit=self.options.notebook_outputs_limit)

    def _save_notebook(self, pod: dict[str, Any]) -> None:
        """A running notebook task's outputs (what a user saved in a server), packed in the
        container through the API's exec, before its Job is deleted."""
        annotations = pod["metadata"].get("annotations") or {}
        if jobs.ANNOTATION_NOTEBOOK not in annotations:
            return
        if (pod.get("status") or {}).get("phase") != "Running":
            return
        workdir = self._workdir(pod)
        if (workdir / notebook_files.RESULT_FILE).exists():
            return
        packed = self._exec(
            pod, ["sh", "-c", f'cd {nb.SESSION_DIR} && python3 -c "$EXECBROKER_PACK"']
        )
        nb.unpack(packed.strip(), workdir, limit=self.options.notebook_outputs_limit)

    def _exec(self, pod: dict[str, Any], command: list[str]) -> str:
        from kubernetes.stream import stream

        return str(
            stream(
                self._websocket_api().connect_get_namespaced_pod_exec,
                pod["metadata"]["name"],
                self.namespace,
                container=jobs.CONTAINER,
                command=command,
                stderr=False,
                stdin=False,
                stdout=True,
                tty=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    def _websocket_api(self) -> Any:
        """A CoreV1Api on a client of its own, for one exec or port-forward: the client's
        ``stream``/``portforward`` swap their ApiClient's ``call_api`` while they connect,
        which on the shared client would send other threads' calls (``free()``, the
        monitor's) down the websocket, or leave the swap in place for good."""
        from kubernetes import client

        return client.CoreV1Api(client.ApiClient(self.api_client.configuration))

    def _server_file(self, pod: dict[str, Any], workdir: Path) -> None:
        """The runner's word that its server answers, read in the running container."""
        if (workdir / notebook_files.SERVER_FILE).exists():
            return
        text = self._exec(pod, ["cat", str(nb.SESSION_DIR / notebook_files.SERVER_FILE)])
        try:
            json.loads(text)
        except (TypeError, ValueError):
            return
        temporary = workdir / f".{notebook_files.SERVER_FILE}.part"
        temporary.write_text(text)
        temporary.replace(workdir / notebook_files.SERVER_FILE)

    def _kept(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def _keep_logs(self, name: str, text: str) -> None:
        if text:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            self._kept(name).write_text(text)

    def _open_forwards(
        self, handle: str, pod: str, ports: list[jobs.Port]
    ) -> list[tuple[jobs.Port, Forward]]:
        from kubernetes.stream import portforward

        with self._lock:
            if self._name(handle) in self._removing:  # its forwards are being closed
                return []
            if handle not in self._forwards:

                def opener(port: int) -> Any:
                    return lambda: portforward(
                        self._websocket_api().connect_get_namespaced_pod_portforward,
                        pod,
                        self.namespace,
                        ports=str(port),
                    )

                self._forwards[handle] = [
                    (p, Forward(self.options.connector_host, opener(p.port), p.port)) for p in ports
                ]
            return self._forwards[handle]

    def _close_forwards(self, handle: str) -> None:
        with self._lock:
            for _, forward in self._forwards.pop(handle, []):
                forward.close()


def _sum_holds(pods: list[dict[str, Any]]) -> tuple[Decimal, Decimal]:
    cpus = memory = Decimal(0)
    for pod in pods:
        c, m = jobs.pod_holds(pod)
        cpus, memory = cpus + c, memory + m
    return cpus, memory


def _versions(objects: list[dict[str, Any]]) -> list[str]:
    return [str(o["metadata"].get("resourceVersion")) for o in objects]


def _ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


def _planned_ports(job: dict[str, Any]) -> list[jobs.Port]:
    text = (job["metadata"].get("annotations") or {}).get(jobs.ANNOTATION_PORTS, "[]")
    try:
        return [jobs.Port(int(p), str(proto), str(path)) for p, proto, path in json.loads(text)]
    except (TypeError, ValueError):
        return []


def _location(port: jobs.Port, host: str, local: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    if port.protocol in ("HTTP", "HTTPS"):
        return f"{port.protocol.lower()}://{shown}:{local}{port.path}"
    return f"tcp://{shown}:{local}"


def _answers(host: str, port: int) -> bool:
    """A TCP connection through the forward gets an answer (or a clean close after a
    request): the pod's server is there. Only the broker's own loopback is contacted."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.settimeout(3)
            sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            return bool(sock.recv(1))
    except OSError:
        return False


def _age(started: str | None) -> float:
    from datetime import datetime

    if not started:
        return 0.0
    try:
        return (utcnow() - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return 0.0


def _session_environment(spec: LaunchSpec) -> dict[str, str]:
    return {
        "EXECBROKER_SESSION": spec.session_id,
        "EXECBROKER_CORES": str(spec.resources.cores),
        "EXECBROKER_MEMORY_GIB": str(spec.resources.memory_gib),
    }


def api_client_for(options: KubernetesOptions) -> Any:
    """A client configured from the kubeconfig the options (or the environment) name."""
    from kubernetes import config

    path = (
        options.kubeconfig
        or os.environ.get("EXECBROKER_KUBECONFIG")
        or os.environ.get("KUBECONFIG")
        or str(Path.home() / ".kube" / "config")
    )
    try:
        return config.new_client_from_config(config_file=path, context=options.context)
    except Exception as error:  # the client raises ConfigException, OSError, yaml errors
        raise ValueError(f"kubernetes platform: cannot load kubeconfig {path}: {error}") from None


def create(options: dict[str, Any], *, broker: Any) -> KubernetesPlatform:
    try:
        parsed = KubernetesOptions.model_validate(options)
    except ValidationError as error:
        raise ValueError(f"kubernetes platform options: {error}") from error
    platform = KubernetesPlatform(
        parsed, broker=broker.name, state_dir=broker.state_path, api_client=api_client_for(parsed)
    )
    platform.check_quota(broker.quota.to_quota().resources)
    return platform
