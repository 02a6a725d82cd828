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
                title=app.title, version=app.version, summary=app.summary, description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = problems_everywhere(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def problems_everywhere(schema: dict[str, Any]) -> dict[str, Any]:
    validation_example = problem_responses(422)[422]["content"][PROBLEM_JSON]
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                plain = content.get("application/json", {})
                if code == "422" and "HTTPValidationError" in str(plain.get("schema", "")):
                    response["description"] = "Invalid input; `errors` lists each field"
                    response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF, **validation_example}}
                elif PROBLEM_JSON in content and "application/json" in content:
                    content[PROBLEM_JSON].setdefault("schema", content.pop("application/json").get("schema"))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
