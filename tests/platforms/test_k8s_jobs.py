"""The kubernetes backend's pure half: Job manifests, quantities, quotas and states (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from execbroker.planner import Resources
from execbroker.platforms import k8s_jobs as jobs
from execbroker.platforms.base import RunState

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GI = 1024**3


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", Decimal(2)),
        ("500m", Decimal("0.5")),
        ("2Gi", Decimal(2 * GI)),
        ("1536Mi", Decimal(1536 * 1024**2)),
        ("1e3", Decimal(1000)),
        ("3k", Decimal(3000)),
        ("", Decimal(0)),
        (None, Decimal(0)),
    ],
)
def test_quantities(text: str | None, value: Decimal) -> None:
    assert jobs.quantity(text) == value


def test_a_bad_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        jobs.quantity("two")


def manifest(**changes: object) -> dict:
    plan = jobs.PodPlan(
        image="busybox:local",
        command=["/bin/sh", "-c", "echo hi"],
        args=None,
        environment={"A": "1"},
        run_as_user=65534,
        workdir="/work",
    )
    arguments = {
        "broker": "k8s-namespace-001",
        "session_id": "0b6b7f5e-6a3c-4a59-9d0e-3f3c1f1c2d11",
        "owner": "alice",
        "namespace": "k8s-namespace-001",
        "plan": plan,
        "resources": Resources(2, 3, 1),
        "deadline": NOW + timedelta(minutes=5),
        "now": NOW,
        "pull_policy": "Never",
        **changes,
    }
    return jobs.job_manifest(**arguments)  # type: ignore[arg-type]


def test_the_job_is_named_after_the_session_and_labelled() -> None:
    job = manifest()
    assert job["metadata"]["name"] == "eb-0b6b7f5e-6a3c-4a59-9d0e-3f3c1f1c2d11"
    labels = job["metadata"]["labels"]
    assert labels[jobs.LABEL_BROKER] == "k8s-namespace-001"
    assert labels[jobs.LABEL_SESSION] == "0b6b7f5e-6a3c-4a59-9d0e-3f3c1f1c2d11"
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"][jobs.ANNOTATION_OWNER] == "alice"


def test_requests_are_limits_are_the_grant_and_the_deadline_is_the_grant() -> None:
    job = manifest()
    container = job["spec"]["template"]["spec"]["containers"][0]
    wanted = {"cpu": "2", "memory": "3Gi", "ephemeral-storage": "1Gi"}
    assert container["resources"] == {"requests": wanted, "limits": wanted}
    # The pod's deadline is the grant's; the Job's, later, only a backstop (see k8s_jobs).
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 300
    assert job["spec"]["activeDeadlineSeconds"] == 300 + jobs.JOB_DEADLINE_BACKSTOP
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    late = manifest(now=NOW + timedelta(minutes=4, seconds=30))
    # only what is left of the grant
    assert late["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 30


def test_pods_are_closed_by_default() -> None:
    pod = manifest()["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert (pod["hostNetwork"], pod["hostPID"], pod["hostIPC"]) == (False, False, False)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 65534
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert [v for v in pod["volumes"] if set(v) - {"name", "emptyDir"}] == []
    assert pod["volumes"] == [{"name": "work", "emptyDir": {"sizeLimit": "1Gi"}}]
    security = pod["containers"][0]["securityContext"]
    assert security == {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_a_broker_name_that_is_no_label_value_becomes_a_digest() -> None:
    assert jobs.label_value("ok-name") == "ok-name"
    odd = jobs.label_value("ends-with-dash-")
    assert odd.startswith("h-") and len(odd) <= 63
    assert odd == jobs.label_value("ends-with-dash-")


def test_quota_free_leaves_out_what_others_hold_and_adds_back_our_own() -> None:
    hard = {"requests.cpu": "2", "limits.cpu": "2", "requests.memory": "4Gi"}
    used = {"requests.cpu": "1500m", "limits.cpu": "1500m", "requests.memory": "3Gi"}
    own = (Decimal(1), Decimal(2 * GI))  # of the used, 1 CPU and 2 GiB are this broker's
    cpus, memory = jobs.quota_free(hard, used, own) or (None, None)
    assert cpus == Decimal("1.5") and memory == Decimal(3 * GI)
    assert jobs.whole(cpus, memory) == Resources(1, 3, 0)
    assert jobs.quota_free({"pods": "4"}, {}, own) is None


def test_the_job_states() -> None:
    failed = {
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ]
        }
    }
    reason = jobs.job_failure(failed)
    assert reason is not None and "exceeded the granted duration" in reason
    assert jobs.job_failure({"status": {}}) is None
    ended = {
        "status": {
            "phase": "Failed",
            "reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline",
        }
    }
    said = jobs.past_deadline(ended)
    assert said is not None and "exceeded the granted duration" in said and "on the node" in said
    assert jobs.past_deadline({"status": {"phase": "Failed", "reason": "Evicted"}}) is None
    assert jobs.job_complete({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    assert jobs.POD_PHASES["Succeeded"] == RunState.COMPLETED
    pod = {
        "status": {
            "containerStatuses": [
                {"name": "task", "state": {"waiting": {"reason": "ErrImageNeverPull"}}}
            ]
        }
    }
    stuck = jobs.stuck_reason(pod)
    assert stuck is not None and "does not pull" in stuck


def test_the_apis_word_that_a_containers_log_is_gone_is_no_output() -> None:
    gone = "unable to retrieve container logs for docker://f81162eb1cb6273ef0fa3780a9217143"
    assert jobs.readable_log(gone) == ""
    assert jobs.readable_log(gone + "\n") == ""
    assert jobs.readable_log(f"started\n{gone}\n") == f"started\n{gone}\n"  # the task's own
