"""A TES task's executors as one ``/bin/sh`` script, and its per-executor logs read back.

The executors run in order in one script: in the first executor's image on a docker
platform (so every executor must name that image), or as a batch script on local or
Slurm, where the task's absolute paths live under ``$TES_ROOT`` (the job's directory)
instead of the host's root. Every value is quoted with ``shlex.quote``; nothing a client
sends is spliced into the script unquoted. Around each executor the script writes a
marker line (with a per-task nonce) to stdout and stderr, so the broker can split the
task's two logs into the executors' own, with their exit codes and times.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from shlex import quote

from execbroker.model.executables import ENV_NAME
from execbroker.model.tes import ExecutorLog, Task

NOW = '"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'
# A batch task's paths: the session directory's ``tes/`` folder, beside $EXECBROKER_OUTPUTS
# (where the broker reads the outputs back from: ``deliveries``).
TASK_ROOT = "tes"
BATCH_ROOT = (
    'TES_ROOT="${EXECBROKER_OUTPUTS:?}"; '
    f'TES_ROOT="${{TES_ROOT%/*}}/{TASK_ROOT}"; export TES_ROOT'
)


def nonce() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Staging:
    """Files the broker puts in place before the executors: inline text, or a URL to fetch."""

    path: str
    content: str | None = None
    url: str | None = None


def _path(path: str) -> str:
    """A task path under ``$TES_ROOT`` (empty in a container), quoted for the shell."""
    return f'"$TES_ROOT"{quote(path)}'


def script(
    task: Task,
    marker: str,
    *,
    in_container: bool,
    staging: list[Staging],
    outputs: list[dict[str, str]],
) -> str:
    """The script; ``outputs`` (``path``, ``type``) get their folders made, and are left
    where the executors write them, for the broker to deliver once the script ends."""
    lines = [
        "#!/bin/sh",
        "# A GA4GH TES task, written by execbroker: its executors, in order.",
        'TES_ROOT=""' if in_container else BATCH_ROOT,
        f"M={quote('::tes:' + marker)}",
    ]
    for item in outputs:
        folder = item["path"] if item.get("type") == "DIRECTORY" else item["path"].rsplit("/", 1)[0]
        if folder:
            lines.append(f"mkdir -p {_path(folder)}")
    for item in staging:
        target = _path(item.path)
        lines.append(f'mkdir -p "$(dirname {target})"')
        if item.content is not None:
            lines.append(f"printf '%s' {quote(item.content)} > {target} || exit 3")
        elif item.url is not None:
            lines.append(f"wget -q -O {target} {quote(item.url)} || exit 3")
    for index, executor in enumerate(task.executors):
        environment = []
        for name, value in (executor.env or {}).items():
            if not ENV_NAME.match(name):
                raise ValueError(f"executors[{index}].env: {name!r} is not a variable name")
            environment.append(f"export {name}={quote(value)}")
        command = " ".join(quote(word) for word in executor.command)
        redirects = "".join(
            f" {symbol}{_path(path)}"
            for symbol, path in (
                ("<", executor.stdin),
                (">", executor.stdout),
                ("2>", executor.stderr),
            )
            if path
        )
        steps = [f"cd {_path(executor.workdir)}"] if executor.workdir else []
        steps += [*environment, f"exec {command}{redirects}"]
        lines += [
            *(f'mkdir -p "$(dirname {_path(p)})"' for p in (executor.stdout, executor.stderr) if p),
            *([f"mkdir -p {_path(executor.workdir)}"] if executor.workdir else []),
            f"printf '\\n%s:{index}:start:%s\\n' \"$M\" {NOW}",
            f"printf '\\n%s:{index}:start:%s\\n' \"$M\" {NOW} >&2",
            f"( {' && '.join(steps)} )",
            "code=$?",
            f'printf \'\\n%s:{index}:end:%s:%s\\n\' "$M" "$code" {NOW}',
            f'printf \'\\n%s:{index}:end:%s:%s\\n\' "$M" "$code" {NOW} >&2',
        ]
        if not executor.ignore_error:
            lines.append('[ "$code" -eq 0 ] || exit "$code"')
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


_MARK = re.compile(r"^::tes:(?P<nonce>[0-9a-f]+):(?P<rest>.*)$")


def _split(text: str, marker: str) -> tuple[dict[int, list[str]], list[tuple[int, str, list[str]]]]:
    """The lines of one log stream by executor, and its markers in order."""
    lines: dict[int, list[str]] = {}
    marks: list[tuple[int, str, list[str]]] = []
    current: int | None = None
    for line in text.splitlines():
        found = _MARK.match(line)
        if found and found["nonce"] == marker:
            head, *fields = found["rest"].split(":", 2)
            if not head.isdigit():
                continue
            index, what = int(head), fields[0] if fields else ""
            marks.append((index, what, fields[1].split(":", 1) if len(fields) > 1 else []))
            current = index if what == "start" else None
            if what == "end" and lines.get(index) and lines[index][-1] == "":
                lines[index].pop()  # the newline the marker put before itself
            continue
        if current is not None:
            lines.setdefault(current, []).append(line)
    return lines, marks


def executor_logs(stdout: str, stderr: str, marker: str) -> list[ExecutorLog]:
    """Per-executor logs (start, end, exit code, their own output) of those that started."""
    out, _ = _split(stdout, marker)
    err, marks = _split(stderr, marker)
    logs: dict[int, dict[str, object]] = {}
    for index, what, fields in marks:
        if what == "start" and fields:
            logs[index] = {"start_time": ":".join(fields), "exit_code": -1}
        elif what == "end" and index in logs and fields:
            code, _, when = ":".join(fields).partition(":")
            logs[index].update(
                exit_code=int(code) if code.lstrip("-").isdigit() else -1, end_time=when
            )
    found = [
        ExecutorLog(
            stdout="\n".join(out.get(index, [])),
            stderr="\n".join(err.get(index, [])),
            **logs[index],  # type: ignore[arg-type]
        )
        for index in sorted(logs)
    ]
    return found
