"""Which models an API caller may ask a run to use.

A model setting says where prompts go and which of the server's API keys goes with them
(``openai-compatible:<url>#<model>``, ``local:<file>``), so callers choose only among the
models the operator listed: CONVERGIO_MODEL and CONVERGIO_RUN_MODELS.
"""

from __future__ import annotations

from fastapi import status

from convergio.agents.models import run_model_allowed
from convergio.api.problems import ProblemError
from convergio.settings import Settings


def refuse_unlisted_model(settings: Settings, model: str | None, loc: list[str]) -> None:
    """422 naming the field and the allowed models when ``model`` is not one of them."""
    if model is None or run_model_allowed(settings, model):
        return
    allowed = ", ".join(sorted({settings.model, *settings.run_models}))
    message = (
        f"model {model!r} is not allowed for runs started through the API (allowed: {allowed}); "
        "an operator can list more in CONVERGIO_RUN_MODELS"
    )
    raise ProblemError(
        status.HTTP_422_UNPROCESSABLE_CONTENT, message,
        errors=[{"loc": loc, "msg": message, "type": "model_not_allowed"}],
    )
