"""``execbroker serve`` with a bad config says what is wrong, field by field, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "execbroker.cli", "serve", "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_a_config_with_bad_fields_names_each_and_exits(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text(
        "name: bad\nquota: {cores: 1, memory: 1}\nplatforms: [{type: local}]\n"
        "users: [{name: alice, token: short}]\ntes: {file_roots: [/data/x]}\n"
    )
    done = serve(config)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{config} is not a valid config" in done.stderr
    assert "  users.0.token: " in done.stderr
    assert "  tes.file_roots.0: " in done.stderr and "/data/x/{user}" in done.stderr


def test_a_config_that_is_not_yaml_says_so(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("name: [unclosed\n")
    done = serve(config)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "is not valid YAML" in done.stderr
