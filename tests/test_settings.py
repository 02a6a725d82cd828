"""Settings come from CONVERGIO_* variables; unset URLs mean the embedded stack."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from convergio.settings import Settings


def test_unset_urls_mean_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.embedded_temporal and settings.embedded_postgres and settings.embedded_redis
    assert settings.effective_temporal_address == "127.0.0.1:7233"
    assert settings.effective_temporal_ui_url == "http://127.0.0.1:8233"


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGIO_TEMPORAL_ADDRESS", "temporal.internal:7233")
    monkeypatch.setenv("CONVERGIO_DATABASE_URL", "postgresql://u@db/convergio")
    monkeypatch.setenv("CONVERGIO_REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("CONVERGIO_MODEL", "openai:gpt-4o-mini")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert not (settings.embedded_temporal or settings.embedded_postgres or settings.embedded_redis)
    assert settings.effective_temporal_address == "temporal.internal:7233"
    assert settings.effective_redis_url == "redis://cache:6379/1"
    assert settings.model == "openai:gpt-4o-mini"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CONVERGIO_TEMPORAL_NAMESPACE=acme\nCONVERGIO_API_PORT=9000\n")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.temporal_namespace == "acme"
    assert settings.api_port == 9000


@pytest.mark.parametrize(("name", "value"), [("CONVERGIO_API_PORT", "99999"), ("CONVERGIO_MODEL", "  ")])
def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as error:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert error.value.errors()[0]["loc"] == (name.removeprefix("CONVERGIO_").lower(),)


def test_workflow_link_points_at_the_namespace() -> None:
    settings = Settings(_env_file=None, temporal_namespace="acme")  # type: ignore[call-arg]
    assert settings.workflow_ui_url("wf-1") == "http://127.0.0.1:8233/namespaces/acme/workflows/wf-1"


@pytest.mark.parametrize(
    "limits",
    ['{"acme": {"daily": 200}}', '{"acme": {"daily_usd": -1}}', '{"acme": {"turn_spike_fraction": 2}}'],
)
def test_bad_tenant_budget_limits_are_rejected_at_start(
    monkeypatch: pytest.MonkeyPatch, limits: str
) -> None:
    """A misspelt or out-of-range tenant limit is a bad setting, named when the settings load;
    it was accepted, then every run of that tenant failed to start (HTTP 500)."""
    monkeypatch.setenv("CONVERGIO_BUDGET_TENANT_LIMITS", limits)
    with pytest.raises(ValidationError) as error:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert error.value.errors()[0]["loc"] == ("budget_tenant_limits",)
    assert "acme" in error.value.errors()[0]["msg"]


def test_good_tenant_budget_limits_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGIO_BUDGET_TENANT_LIMITS", '{"acme": {"daily_usd": 200, "workflow_usd": 10}}')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.budget_tenant_limits == {"acme": {"daily_usd": 200, "workflow_usd": 10}}


@pytest.mark.parametrize(
    "content", [None, "models: [1, 2]\n", "models:\n  offline: {input: -1, output: 1}\n"]
)
def test_a_bad_price_table_is_rejected_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None
) -> None:
    """CONVERGIO_PRICE_TABLE naming a missing or malformed file is reported as a bad setting
    (it passed, and the worker died with a traceback after the servers had started)."""
    path = tmp_path / "prices.yaml"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("CONVERGIO_PRICE_TABLE", str(path))
    with pytest.raises(ValidationError) as error:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert error.value.errors()[0]["loc"] == ("price_table",)
    assert str(path) in error.value.errors()[0]["msg"]


def test_a_good_price_table_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("models:\n  offline: {input: 1.5, output: 6}\n")
    monkeypatch.setenv("CONVERGIO_PRICE_TABLE", str(path))
    assert Settings(_env_file=None).price_table == path  # type: ignore[call-arg]
