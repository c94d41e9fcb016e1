"""Notebooks on the ``kubernetes`` backend: the task's files in, the outputs back out.

The task's files (what ``notebooks.prepare`` writes: the runner, the task, the notebook)
go into a ConfigMap owned by the session's Job (deleted with it), mounted read-only at
``/files``; the pod copies them into ``/session``, an empty directory of its own, and runs
the runner there. A batch runner's outputs (the executed notebook) and its result cannot
be copied out of a container that has ended, so the pod's last act is to print them, after
a marker line, as one base64 gzip'd tar on its own output (``pack``); the backend unpacks
them into the session's work directory once the task has ended (``unpack``, which takes
only plain files under ``outputs/`` and the result file) and cuts them off the logs it
shows (``split_logs``). An interactive server's file (where it answers) is read from the
running container through the API's exec.

Pure, apart from ``unpack`` writing into the work directory it is given.
"""

from __future__ import annotations

import base64
import binascii
import io
import shlex
import tarfile
from pathlib import Path, PurePosixPath

from execbroker import notebooks
from execbroker.notebooks import task as notebook_files

SESSION_DIR = PurePosixPath("/session")
FILES_DIR = PurePosixPath("/files")
MARKER = "=== execbroker: the notebook's outputs follow ==="
NOTEBOOK_PORT = 8888

# Run by /bin/sh in the notebook image. Only constants of the broker's own in it.
_PACK = (
    "import base64, io, os, sys, tarfile\n"
    "buffer = io.BytesIO()\n"
    "with tarfile.open(fileobj=buffer, mode='w:gz') as tar:\n"
    "    for name in ({outputs!r}, {result!r}):\n"
    "        if os.path.exists(name):\n"
    "            tar.add(name)\n"
    "data = buffer.getvalue()\n"
    "if len(data) > {limit}:  # too much to print: the result alone\n"
    "    buffer = io.BytesIO()\n"
    "    with tarfile.open(fileobj=buffer, mode='w:gz') as tar:\n"
    "        if os.path.exists({result!r}):\n"
    "            tar.add({result!r})\n"
    "    data = buffer.getvalue()\n"
    "sys.stdout.write(base64.b64encode(data).decode() + '\\n')\n"
)


def command(
    python: str,
    argv: tuple[str, ...],
    *,
    limit: int,
    files_dir: PurePosixPath = FILES_DIR,
    session_dir: PurePosixPath = SESSION_DIR,
) -> tuple[list[str], str]:
    """The pod's command (place the files, run the runner, print its outputs) and the
    packing program it runs last, which goes in by the environment (EXECBROKER_PACK).
    Every word is quoted for the shell: the marker itself has an apostrophe."""
    pack = _PACK.format(
        outputs=notebooks.OUTPUTS_DIR, result=notebook_files.RESULT_FILE, limit=limit
    )
    files, session = shlex.quote(str(files_dir)), shlex.quote(str(session_dir))
    outputs = shlex.quote(str(session_dir / notebooks.OUTPUTS_DIR))
    work = shlex.quote(str(session_dir / "work"))
    script = (
        f"cp {files}/* {session}/ && mkdir -p {outputs} {work} || exit 1\n"
        '"$@"; code=$?\n'
        f"cd {session} && echo {shlex.quote(MARKER)} && "
        f'{shlex.quote(python)} -c "$EXECBROKER_PACK"\n'
        'exit "$code"\n'
    )
    return ["/bin/sh", "-c", script, "notebook", *argv], pack


def split_logs(text: str) -> tuple[str, str | None]:
    """(what the task wrote, the packed outputs after the marker or None)."""
    head, found, tail = text.partition(f"\n{MARKER}\n")
    if not found and text.startswith(f"{MARKER}\n"):
        head, found, tail = "", MARKER, text[len(MARKER) + 1 :]
    return (head + "\n" if found and head else head), (tail.strip() if found else None)


def unpack(payload: str, workdir: Path, *, limit: int) -> None:
    """Plain files under ``outputs/`` and the result file, into ``workdir``; anything else
    in the archive (links, devices, paths outside) is ignored."""
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return
    total = 0
    allowed = notebooks.OUTPUTS_DIR
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = PurePosixPath(member.name)
                if not member.isfile() or name.is_absolute() or ".." in name.parts:
                    continue
                if name.parts[0] != allowed and str(name) != notebook_files.RESULT_FILE:
                    continue
                total += member.size
                if total > limit:
                    return
                source = tar.extractfile(member)
                if source is None:
                    continue
                target = workdir.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
    except (tarfile.TarError, OSError, EOFError):
        return
