"""The pure half of the ``kubernetes`` backend: Job manifests, quantities, the state table.

Nothing here talks to a cluster, so all of it is read and tested without one. The Job is
a plain dict in the shape of batch/v1 (what the API server takes as JSON), built only from
the grant, the broker's own options and validated fields of the executable.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from execbroker.planner import Resources
from execbroker.platforms.base import RunState

LABEL_BROKER = "execbroker.org/broker"
LABEL_SESSION = "execbroker.org/session"
LABEL_PLATFORM = "execbroker.org/platform"
ANNOTATION_OWNER = "execbroker.org/owner"
ANNOTATION_DEADLINE = "execbroker.org/deadline"
ANNOTATION_PORTS = "execbroker.org/ports"
ANNOTATION_NOTEBOOK = "execbroker.org/notebook"  # batch | interactive
CONTAINER = "task"
GIB = 1024**3

_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)$")
_SUFFIXES = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_QUANTITY = re.compile(
    r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)


def quantity(text: str | int | float | None) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1e3``) as a number; "" or None is 0."""
    if text is None or text == "":
        return Decimal(0)
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number, suffix = match.groups()
    return Decimal(number) * Decimal(_SUFFIXES[suffix] if suffix else 1)


def label_value(text: str) -> str:
    """``text`` if it is a valid label value, else a stable digest of it (the broker's name
    may end in a ``-`` or be longer than a label value may be)."""
    if _LABEL_VALUE.match(text):
        return text
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def job_name(session_id: str) -> str:
    """The Job's name: the session's, so the API server itself refuses a second Job for a
    session (409 AlreadyExists) in the namespace a broker owns."""
    return f"eb-{session_id.lower()}"


def selector(broker: str, session_id: str | None = None) -> str:
    """A label selector for this broker's Jobs and pods (of one session, if given)."""
    parts = [f"{LABEL_BROKER}={label_value(broker)}", f"{LABEL_PLATFORM}=kubernetes"]
    if session_id is not None:
        parts.append(f"{LABEL_SESSION}={label_value(session_id)}")
    return ",".join(parts)


GRACE_SECONDS = 10  # the pod's terminationGracePeriodSeconds
# How much later than its pod's the Job's own deadline comes: only for a pod no kubelet
# ever ended (one still unscheduled at the grant's end), since the Job controller deletes
# the pod, and with it the task's output, which the pod's own deadline keeps.
JOB_DEADLINE_BACKSTOP = GRACE_SECONDS + 20


def deadline_seconds(deadline: datetime, now: datetime) -> int:
    """``activeDeadlineSeconds``: the time left of the grant, whole seconds, at least 1."""
    return max(1, math.floor((deadline - now).total_seconds()))


def grant(resources: Resources) -> dict[str, str]:
    """Requests = limits = the grant (Guaranteed QoS): cores, memory and, when granted,
    ephemeral storage (the kubelet evicts a pod that writes more)."""
    limits = {"cpu": str(resources.cores), "memory": f"{resources.memory_gib}Gi"}
    if resources.storage_gib:
        limits["ephemeral-storage"] = f"{resources.storage_gib}Gi"
    return limits


@dataclass(frozen=True, slots=True)
class Port:
    port: int
    protocol: str  # HTTP, HTTPS, TCP (UDP cannot be port-forwarded)
    path: str = "/"


@dataclass(frozen=True, slots=True)
class PodPlan:
    """What runs in the Job's one container; the backend fills it per executable kind."""

    image: str
    command: list[str] | None
    args: list[str] | None
    environment: dict[str, str]
    ports: tuple[Port, ...] = ()
    run_as_user: int | None = None
    privileged: bool = False
    workdir: str | None = None  # an empty directory of the pod's own, made the working directory
    files: str | None = None  # a ConfigMap of the task's files, mounted read-only at /files
    annotations: tuple[tuple[str, str], ...] = ()


def container_security(*, privileged: bool) -> dict[str, Any]:
    """The container's securityContext: nothing beyond what the image's program needs."""
    if privileged:  # only where a platform's config allows it (and the cluster too)
        return {"privileged": True}
    return {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def job_manifest(
    *,
    broker: str,
    session_id: str,
    owner: str,
    namespace: str,
    plan: PodPlan,
    resources: Resources,
    deadline: datetime,
    now: datetime,
    pull_policy: str,
) -> dict[str, Any]:
    """The batch/v1 Job for one session: one pod, never retried (a failed task is a failed
    session), ended by Kubernetes at the grant's end even while the broker is down."""
    labels = {
        LABEL_BROKER: label_value(broker),
        LABEL_SESSION: label_value(session_id),
        LABEL_PLATFORM: "kubernetes",
    }
    annotations = {
        ANNOTATION_OWNER: owner,
        ANNOTATION_DEADLINE: deadline.isoformat(),
        ANNOTATION_PORTS: json.dumps([[p.port, p.protocol, p.path] for p in plan.ports]),
        **dict(plan.annotations),
    }
    limits = grant(resources)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": plan.image,
        "imagePullPolicy": pull_policy,
        "env": [{"name": key, "value": value} for key, value in plan.environment.items()],
        "resources": {"requests": dict(limits), "limits": dict(limits)},
        "securityContext": container_security(privileged=plan.privileged),
        "ports": [{"containerPort": p.port, "protocol": "TCP"} for p in plan.ports],
    }
    if plan.command:
        container["command"] = plan.command
    if plan.args:
        container["args"] = plan.args
    volumes: list[dict[str, Any]] = []
    if plan.workdir:
        container["workingDir"] = plan.workdir
        container["volumeMounts"] = [{"name": "work", "mountPath": plan.workdir}]
        empty: dict[str, Any] = {}
        if resources.storage_gib:
            empty["sizeLimit"] = f"{resources.storage_gib}Gi"
        volumes.append({"name": "work", "emptyDir": empty})
    if plan.files:
        container.setdefault("volumeMounts", []).append(
            {"name": "files", "mountPath": "/files", "readOnly": True}
        )
        volumes.append({"name": "files", "configMap": {"name": plan.files, "defaultMode": 0o444}})
    pod_security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if plan.run_as_user is not None:
        pod_security |= {
            "runAsUser": plan.run_as_user,
            "runAsGroup": plan.run_as_user,
            "runAsNonRoot": plan.run_as_user != 0,
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(session_id),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": deadline_seconds(deadline, now) + JOB_DEADLINE_BACKSTOP,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    # The kubelet ends the pod in place at the grant's end (Failed, reason
                    # DeadlineExceeded): its container and output stay until the broker
                    # has read them, even when it was down at the time.
                    "activeDeadlineSeconds": deadline_seconds(deadline, now),
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "hostNetwork": False,
                    "hostPID": False,
                    "hostIPC": False,
                    "terminationGracePeriodSeconds": GRACE_SECONDS,
                    "securityContext": pod_security,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


# -- reading back ---------------------------------------------------------------------------

# A pod's phase → what the backend says (a pod in Running with ports may still be
# PREPARING until its forward answers: the backend decides that, not the table).
POD_PHASES = {
    "Pending": RunState.PREPARING,
    "Running": RunState.RUNNING,
    "Succeeded": RunState.COMPLETED,
    "Failed": RunState.FAILED,
    "Unknown": RunState.PREPARING,
}
# Why a Job failed (its Failed condition's reason) → a sentence for the session's owner.
JOB_FAILURES = {
    "DeadlineExceeded": (
        "stopped by Kubernetes: exceeded the granted duration (activeDeadlineSeconds)"
    ),
    "BackoffLimitExceeded": "the task failed",
}
# Waiting reasons that mean the pod will never start by itself.
STUCK_WAITING = {
    "ErrImageNeverPull": "the image is not on the cluster's node and this platform does not pull",
    "InvalidImageName": "the image name is not valid",
    "CreateContainerConfigError": "Kubernetes could not create the container",
    "CreateContainerError": "Kubernetes could not create the container",
    "RunContainerError": "Kubernetes could not run the container",
}


def past_deadline(pod: dict[str, Any]) -> str | None:
    """Why the kubelet ended a pod at its activeDeadlineSeconds, or None if it did not."""
    status = pod.get("status") or {}
    if status.get("reason") != "DeadlineExceeded":
        return None
    said = JOB_FAILURES["DeadlineExceeded"]
    return f"{said}: {status['message']}" if status.get("message") else said


# What the API server answers for the log of a container the kubelet has removed already
# (a pod deleted by the Job controller): no output of the task's.
_LOG_GONE = re.compile(r"^unable to retrieve container logs for [a-z]+://[0-9a-f]+\n?$")


def readable_log(text: str) -> str:
    """A pod's log as the task wrote it: "" for the API's word that it is gone."""
    return "" if _LOG_GONE.match(text) else text


def job_failure(job: dict[str, Any]) -> str | None:
    """Why the Job failed, from its conditions (None while it has not failed)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            reason = condition.get("reason") or ""
            said = JOB_FAILURES.get(reason, reason or "the Job failed")
            detail = condition.get("message")
            return (
                f"{said}: {detail}" if detail and reason not in ("BackoffLimitExceeded",) else said
            )
    return None


def job_complete(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def container_end(pod: dict[str, Any]) -> tuple[int | None, str | None]:
    """The task container's exit code and reason (``OOMKilled``, ``Error``), once it ended."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != CONTAINER:
            continue
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated.get("exitCode"), terminated.get("reason")
    return None, None


def stuck_reason(pod: dict[str, Any]) -> str | None:
    """Why a pending pod will never start (an image that cannot be had), or None."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in STUCK_WAITING:
            return f"{STUCK_WAITING[reason]} ({waiting.get('message') or reason})"
    return None


def pending_note(pod: dict[str, Any]) -> str | None:
    """Why a pod waits (unschedulable, pulling), as the scheduler or kubelet says it."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return (
                f"waiting for the scheduler: {condition.get('message') or condition.get('reason')}"
            )
    return None


def pod_holds(pod: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """CPUs and bytes a pod's containers request (what a quota counts)."""
    cpus = memory = Decimal(0)
    for container in (pod.get("spec") or {}).get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        cpus += quantity(requests.get("cpu"))
        memory += quantity(requests.get("memory"))
    return cpus, memory


def quota_free(
    hard: dict[str, str], used: dict[str, str], own: tuple[Decimal, Decimal]
) -> tuple[Decimal, Decimal] | None:
    """CPUs and bytes this broker could still use under a ResourceQuota: its hard limit less
    what others' pods use (used - own). None when the quota bounds neither."""

    def bound(*keys: str) -> Decimal | None:
        values = [quantity(hard[k]) - quantity(used.get(k)) for k in keys if k in hard]
        return min(values) if values else None

    cpu = bound("requests.cpu", "limits.cpu", "cpu")
    memory = bound("requests.memory", "limits.memory", "memory")
    if cpu is None and memory is None:
        return None
    infinite = Decimal("Infinity")
    return (
        (cpu + own[0]) if cpu is not None else infinite,
        (memory + own[1]) if memory is not None else infinite,
    )


def quota_limit(hard: dict[str, str]) -> tuple[Decimal | None, Decimal | None]:
    """The most CPUs and bytes a ResourceQuota lets the namespace's pods hold together."""

    def smallest(*keys: str) -> Decimal | None:
        values = [quantity(hard[k]) for k in keys if k in hard]
        return min(values) if values else None

    return (
        smallest("requests.cpu", "limits.cpu", "cpu"),
        smallest("requests.memory", "limits.memory", "memory"),
    )


def whole(cpus: Decimal, memory: Decimal) -> Resources:
    """Free CPUs and bytes as the broker counts them: whole cores and whole GiB, rounded down."""
    cores = 1 << 20 if cpus.is_infinite() else max(0, math.floor(cpus))
    gib = 1 << 20 if memory.is_infinite() else max(0, math.floor(memory / GIB))
    return Resources(cores, gib, 0)
