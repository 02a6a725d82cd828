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
