"""The sample knowledge base the demo ingests (Acme Analytics and the German mid-market)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_dir() -> Path:
    """The folder of the shipped sample documents (Markdown with front matter)."""
    return Path(str(resources.files("convergio.knowledge") / "sample"))
