"""scripts/bootstrap.sh recovers from a half-made .venv (an interrupted first run) and keeps a good one.

The real script runs in a temporary project against stand-ins for python3 and the venv's python
(which log their calls and make a fake venv), so no test downloads or installs anything. One case
uses a real venv made without pip: the state an interrupted `python -m venv` leaves behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Stands in for python3: passes the version check; `-m venv DIR` makes a venv whose python is VENV_PYTHON.
BASE_PYTHON = """#!/usr/bin/env bash
echo "base $*" >> "$STUB_LOG"
if [ "$1" = -m ] && [ "$2" = venv ]; then
    mkdir -p "$3/bin" && echo "home = /stub" > "$3/pyvenv.cfg" && cp "$STUB_VENV_PYTHON" "$3/bin/python"
fi
"""
# The venv's python: `pip install` fails while the number in $STUB_FAILURES is above 0; with
# $STUB_NO_PIP set it has no pip until `-m ensurepip` ran.
VENV_PYTHON = """#!/usr/bin/env bash
echo "venv $*" >> "$STUB_LOG"
if [ "$1 $2" = "-m ensurepip" ]; then rm -f "$STUB_NO_PIP"; fi
if [ "$*" = "-c import pip" ] && [ -e "$STUB_NO_PIP" ]; then exit 1; fi
if [ "$1 $2 $3" = "-m pip install" ]; then
    left="$(cat "$STUB_FAILURES")"
    if [ "$left" -gt 0 ]; then echo $((left - 1)) > "$STUB_FAILURES"; echo "pip: network down" >&2; exit 1; fi
fi
"""


class Project:
    """A temporary checkout holding only scripts/bootstrap.sh, and the stand-ins' call log."""

    def __init__(self, root: Path, repo_root: Path) -> None:
        self.root = root
        (root / "scripts").mkdir()
        shutil.copy(repo_root / "scripts" / "bootstrap.sh", root / "scripts" / "bootstrap.sh")
        self.stubs = root.parent / "stubs"
        self.stubs.mkdir()
        for name, text in [("python3", BASE_PYTHON), ("venv-python", VENV_PYTHON)]:
            (self.stubs / name).write_text(text)
            (self.stubs / name).chmod(0o755)
        self.log = self.stubs / "calls.log"
        self.venv = root / ".venv"

    def good_venv(self, *, incomplete: bool = False) -> None:
        """A venv as a completed bootstrap leaves it (or an interrupted one, with its marker)."""
        (self.venv / "bin").mkdir(parents=True)
        (self.venv / "pyvenv.cfg").write_text("home = /stub\n")
        shutil.copy(self.stubs / "venv-python", self.venv / "bin" / "python")
        (self.venv / "kept").touch()  # gone if the venv is recreated
        if incomplete:
            (self.venv / ".incomplete").touch()

    def bootstrap(self, failures: int = 0) -> subprocess.CompletedProcess[str]:
        return self.run("source scripts/bootstrap.sh test", failures=failures)

    def run(self, command: str, failures: int = 0) -> subprocess.CompletedProcess[str]:
        (self.stubs / "failures").write_text(str(failures))
        self.log.write_text("")
        env = {
            **os.environ,
            "PYTHON": str(self.stubs / "python3"),
            "STUB_VENV_PYTHON": str(self.stubs / "venv-python"),
            "STUB_LOG": str(self.log),
            "STUB_FAILURES": str(self.stubs / "failures"),
            "STUB_NO_PIP": str(self.stubs / "no-pip"),
        }
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.root, env=env, capture_output=True, text=True, timeout=60,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def installs(self) -> list[str]:
        return [call for call in self.calls() if call.startswith("venv -m pip install")]


@pytest.fixture
def project(tmp_path: Path, repo_root: Path) -> Project:
    (tmp_path / "project").mkdir()
    return Project(tmp_path / "project", repo_root)


INSTALLS = [
    "venv -m pip install --quiet --disable-pip-version-check --upgrade pip",
    "venv -m pip install --quiet --disable-pip-version-check -e .[test]",
]


def test_a_missing_venv_is_created_and_installed(project: Project) -> None:
    result = project.bootstrap()
    assert result.returncode == 0, result.stderr
    assert "==> creating .venv" in result.stderr
    assert "base -m venv .venv" in project.calls() and project.installs() == INSTALLS
    assert not (project.venv / ".incomplete").exists()


def test_a_good_venv_is_kept_and_only_installed_into(project: Project) -> None:
    """The normal path: one python start to check the venv, then the two pip calls as before."""
    project.good_venv()
    result = project.bootstrap()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == "==> installing convergio [test] into .venv\n"
    assert project.calls() == ["base -c import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)",
                               "venv -c import pip", *INSTALLS]
    assert (project.venv / "kept").exists()


def test_a_venv_without_pip_is_recreated(project: Project) -> None:
    """What an interrupted `python -m venv` leaves: a python that runs, no pip, and the marker the
    first run wrote. It failed every run."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(project.venv)], check=True)
    (project.venv / ".incomplete").touch()
    result = project.bootstrap()
    assert result.returncode == 0, result.stderr
    assert "==> .venv is unusable (it was left without pip)" in result.stderr
    assert "base -m venv .venv" in project.calls() and project.installs() == INSTALLS
    assert not (project.venv / ".incomplete").exists()


def test_a_complete_venv_without_pip_gets_pip_and_is_kept(project: Project) -> None:
    """A venv made without pip on purpose (uv, --without-pip) is not half-made: pip is added to it."""
    project.good_venv()
    (project.stubs / "no-pip").touch()
    result = project.bootstrap()
    assert result.returncode == 0, result.stderr
    assert "==> .venv has no pip (made with uv or --without-pip): adding it" in result.stderr
    assert "venv -m ensurepip --upgrade" in project.calls() and project.installs() == INSTALLS
    assert (project.venv / "kept").exists()


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [("dangling python", "its python does not run"), ("no pyvenv.cfg", "it has no pyvenv.cfg")],
)
def test_a_broken_venv_is_recreated(project: Project, breakage: str, reason: str) -> None:
    """A python whose interpreter is gone made even `python -m venv` fail, on every run."""
    project.good_venv()
    if breakage == "dangling python":
        (project.venv / "bin" / "python").unlink()
        (project.venv / "bin" / "python").symlink_to("/nonexistent/python3.11")
    else:
        (project.venv / "pyvenv.cfg").unlink()
    result = project.bootstrap()
    assert result.returncode == 0, result.stderr
    assert f"==> .venv is unusable ({reason})" in result.stderr
    assert not (project.venv / "kept").exists() and project.installs() == INSTALLS


def test_an_interrupted_install_is_finished_in_place(project: Project) -> None:
    project.good_venv(incomplete=True)
    result = project.bootstrap()
    assert result.returncode == 0, result.stderr
    assert "==> .venv was left half-installed by an interrupted run: finishing the install" in result.stderr
    assert (project.venv / "kept").exists() and project.installs() == INSTALLS
    assert not (project.venv / ".incomplete").exists()


def test_a_half_made_venv_that_fails_to_install_is_recreated_once(project: Project) -> None:
    project.good_venv(incomplete=True)
    result = project.bootstrap(failures=1)
    assert result.returncode == 0, result.stderr
    assert "recreating .venv and trying once more" in result.stderr
    assert not (project.venv / "kept").exists() and project.installs() == [INSTALLS[0], *INSTALLS]
    assert not (project.venv / ".incomplete").exists()


def test_a_complete_venv_is_kept_when_the_install_fails(project: Project) -> None:
    """A failure in a venv that once installed completely may be the network: never delete it for that."""
    project.good_venv()
    result = project.bootstrap(failures=1)
    assert result.returncode != 0 and "network down" in result.stderr
    assert "recreating" not in result.stderr and (project.venv / "kept").exists()


def test_a_first_install_that_fails_leaves_the_marker(project: Project) -> None:
    """The next run must know the venv is half-made."""
    result = project.bootstrap(failures=2)
    assert result.returncode != 0 and "network down" in result.stderr
    assert (project.venv / ".incomplete").exists()


def test_the_demo_passes_its_arguments_to_the_demo_not_to_pip(project: Project, repo_root: Path) -> None:
    """README: `bash scripts/demo.sh --template market-entry ...`. The sourced bootstrap took the demo's
    first argument for its extras and pip failed on `.[--template]`. Its progress goes to stderr, so
    `demo.sh --json` prints only the report on stdout."""
    shutil.copy(repo_root / "scripts" / "demo.sh", project.root / "scripts" / "demo.sh")
    project.good_venv()
    convergio = project.venv / "bin" / "convergio"
    convergio.write_text('#!/usr/bin/env bash\necho "convergio $*" >> "$STUB_LOG"\n')
    convergio.chmod(0o755)
    result = project.run("bash scripts/demo.sh --template market-entry --input 'company=Acme Corp'")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert project.installs() == [INSTALLS[0], "venv -m pip install --quiet --disable-pip-version-check -e ."]
    assert project.calls()[-1] == "convergio demo --template market-entry --input company=Acme Corp"
