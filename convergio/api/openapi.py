"""The OpenAPI document says what the API really answers: errors are problem+json.

FastAPI documents validation errors as ``application/json`` ``HTTPValidationError``; this
API answers them (and every other error) as RFC 9457 problems, so the document is fixed up
once, when first generated.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from convergio.api.problems import PROBLEM_JSON, problem_responses

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = problems_everywhere(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def problems_everywhere(schema: dict[str, Any]) -> dict[str, Any]:
    """Every error response documented as problem+json; secured operations also list 401 and 429."""
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                for code in ("401", "429"):
                    responses.setdefault(code, {"description": ""})
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400:
                    continue
                content = response.get("content", {})
                plain = content.get("application/json", {})
                if PROBLEM_JSON in content and "application/json" in content:
                    content[PROBLEM_JSON].setdefault("schema", content.pop("application/json").get("schema"))
                    continue
                if PROBLEM_JSON in content:
                    continue
                # Undocumented content, or FastAPI's HTTPValidationError: what the API really sends.
                documented = problem_responses(int(code))[int(code)]
                example = {**documented["content"][PROBLEM_JSON]["example"], "instance": path}
                if not response.get("description") or "HTTPValidationError" in str(plain.get("schema", "")):
                    response["description"] = documented["description"]
                response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF, "example": example}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
