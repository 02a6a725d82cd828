"""The README documents what the code does: every setting, and the commands CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from convergio.settings import Settings


def test_every_setting_is_documented(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    documented = set(re.findall(r"^\| `(CONVERGIO_[A-Z_]+)` \|", readme, flags=re.MULTILINE))
    expected = {f"CONVERGIO_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_ci_runs_the_readme_test_command(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    commands = re.findall(r"```bash\n(bash scripts/\S+)\n```", readme)
    assert commands[:2] == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = (repo_root / ".ci" / "run").read_text()
    assert "exec bash scripts/test.sh" in ci
