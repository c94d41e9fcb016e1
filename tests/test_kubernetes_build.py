"""scripts/kubernetes/build.sh's source changes, run alone on scratch trees (no build).

The step's own failure messages say which line of which file it needs, so the test
learns the lines from the script itself: it grows a scratch tree one needed file at a
time until the step succeeds. Then a tree whose line has changed (as in a newer source
package) must stop the build loudly, naming the file and the line.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

BUILD = Path(__file__).parents[1] / "scripts" / "kubernetes" / "build.sh"
MISSING = re.compile(r"^build\.sh: '(.+)' not found in (\S+)$", re.MULTILINE)
KUBE_DIR = "/srv/kube-test"


def _patch(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD), "--patch", str(tree), KUBE_DIR],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _write(tree: Path, needed: dict[str, str]) -> None:
    """The files as an unpatched source has them (each run patches them in place)."""
    for name, line in needed.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"// before\n\t{line}\n// after\n")


def _grow(tree: Path) -> dict[str, str]:
    """Each file the step needs, with the line it looks for, until it succeeds."""
    tree.mkdir()
    needed: dict[str, str] = {}
    for _ in range(50):
        _write(tree, needed)
        ran = _patch(tree)
        if ran.returncode == 0:
            return needed
        found = MISSING.search(ran.stderr)
        assert found is not None, ran.stderr
        line, name = found.groups()
        assert name not in needed, f"{name} asked for twice: {ran.stderr}"
        needed[name] = line
    raise AssertionError(f"the patch step never succeeded: {needed}")


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A scratch tree the step succeeded on, and what it needed."""
    tree = tmp_path_factory.mktemp("build") / "tree"
    return tree, _grow(tree)


def test_the_patch_step_changes_every_line_it_names(grown: tuple[Path, dict[str, str]]) -> None:
    tree, needed = grown
    assert len(needed) >= 8, needed
    for name, line in needed.items():
        text = (tree / name).read_text()
        assert line not in text, f"{name} still has {line!r}"
        assert text.startswith("// before\n\t") and text.endswith("\n// after\n"), text
    logs = (tree / "pkg/kubelet/kubelet.go").read_text()
    assert f'ContainerLogsDir = "{KUBE_DIR}/log/containers"' in logs


def test_a_line_that_changed_in_the_source_stops_the_build_loudly(
    tmp_path: Path, grown: tuple[Path, dict[str, str]]
) -> None:
    _, needed = grown
    tree = tmp_path / "tree"
    _write(tree, needed)
    # A newer source: one of the lines reads differently now.
    changed = "pkg/kubelet/qos/policy.go"
    assert changed in needed, needed
    (tree / changed).write_text("\tguaranteedOOMScoreAdj int = -999\n")
    ran = _patch(tree)
    assert ran.returncode != 0
    assert f"build.sh: '{needed[changed]}' not found in {changed}" in ran.stderr
    # and the step stopped there: nothing after the changed line was touched
    order = list(needed)
    for name in order[order.index(changed) + 1 :]:
        assert (tree / name).read_text() == f"// before\n\t{needed[name]}\n// after\n", name
