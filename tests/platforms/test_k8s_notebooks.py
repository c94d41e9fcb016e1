"""How a notebook's outputs leave a Kubernetes pod: packed on its log, unpacked by the broker."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath

from execbroker.platforms import k8s_notebooks as nb


def test_the_outputs_printed_after_the_marker_come_back_and_leave_the_logs(
    tmp_path: Path,
) -> None:
    task = tmp_path / "pod"
    (task / "outputs").mkdir(parents=True)
    (task / "outputs" / "notebook.ipynb").write_text('{"cells": []}')
    (task / "notebook-result.json").write_text('{"state": "COMPLETED"}')
    (task / "secret.txt").write_text("not an output")
    _, pack = nb.command("python3", ("python3", "runner.py"), limit=1 << 20)
    packed = subprocess.run(
        [sys.executable, "-c", pack], cwd=task, capture_output=True, text=True, check=True
    ).stdout
    log = f"cell 1\ncell 2\n{nb.MARKER}\n{packed}"
    shown, payload = nb.split_logs(log)
    assert shown == "cell 1\ncell 2\n"
    assert payload is not None
    workdir = tmp_path / "session"
    nb.unpack(payload, workdir, limit=1 << 20)
    assert (workdir / "outputs" / "notebook.ipynb").read_text() == '{"cells": []}'
    assert (workdir / "notebook-result.json").read_text() == '{"state": "COMPLETED"}'
    assert not (workdir / "secret.txt").exists()
    assert nb.split_logs("no marker\n") == ("no marker\n", None)


def test_unpack_takes_only_plain_files_in_their_places(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind in (
            ("outputs/../../escape.txt", tarfile.REGTYPE),
            ("/etc/absolute", tarfile.REGTYPE),
            ("outputs/link", tarfile.SYMTYPE),
            ("elsewhere.txt", tarfile.REGTYPE),
            ("outputs/ok.txt", tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            data = b"x" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    workdir = tmp_path / "session"
    nb.unpack(base64.b64encode(buffer.getvalue()).decode(), workdir, limit=100)
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert found == ["session/outputs/ok.txt"]


def test_the_pods_command_runs_the_runner_and_prints_its_outputs_through_sh(
    tmp_path: Path,
) -> None:
    """The whole pod command under a real /bin/sh (what the notebook image runs), in
    scratch directories instead of /files and /session: the runner's exit code is the
    pod's, and its outputs come back from what it printed."""
    files, session = tmp_path / "files", tmp_path / "session"
    files.mkdir()
    session.mkdir()
    (files / "notebook-task.json").write_text("{}")
    runner = (
        "import pathlib; print('ran', pathlib.Path('notebook-task.json').read_text()); "
        "pathlib.Path('outputs/notebook.ipynb').write_text('{\"cells\": []}'); "
        "pathlib.Path('notebook-result.json').write_text('{\"state\": \"COMPLETED\"}')"
    )
    argv, pack = nb.command(
        sys.executable,
        (sys.executable, "-c", runner),
        limit=1 << 20,
        files_dir=PurePosixPath(files),
        session_dir=PurePosixPath(session),
    )
    ran = subprocess.run(
        argv, cwd=session, env={"EXECBROKER_PACK": pack}, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    shown, payload = nb.split_logs(ran.stdout)
    assert shown == "ran {}\n"
    assert payload is not None
    workdir = tmp_path / "kept"
    nb.unpack(payload, workdir, limit=1 << 20)
    assert (workdir / "outputs" / "notebook.ipynb").read_text() == '{"cells": []}'
    assert (workdir / "notebook-result.json").read_text() == '{"state": "COMPLETED"}'
    failing = subprocess.run(
        [*argv[:4], sys.executable, "-c", "raise SystemExit(3)"],
        cwd=session,
        env={"EXECBROKER_PACK": pack},
        capture_output=True,
        text=True,
    )
    assert failing.returncode == 3, failing.stderr
    assert nb.MARKER in failing.stdout
