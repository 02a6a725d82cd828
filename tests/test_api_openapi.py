"""The OpenAPI document is complete: every operation shows examples, errors are problem+json,
and routes that need credentials say so."""

from __future__ import annotations

from typing import Any

from convergio.api.app import create_app

OPEN_ROUTES = {("get", "/healthz"), ("get", "/metrics")}


def _spec() -> dict[str, Any]:
    return create_app().openapi()


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _has_example(spec: dict[str, Any], media: dict[str, Any]) -> bool:
    if media.get("example") is not None or media.get("examples"):
        return True
    schema = _resolve(spec, media.get("schema", {}))
    return bool(schema.get("examples") or schema.get("example") is not None)


def _operations(spec: dict[str, Any]):  # noqa: ANN202
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


def test_every_operation_has_examples_for_its_parameters_body_and_responses() -> None:
    spec = _spec()
    missing: list[str] = []
    for method, path, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        for parameter in operation.get("parameters", []):
            if not (
                parameter.get("example") is not None
                or parameter.get("examples")
                or parameter.get("schema", {}).get("examples")
            ):
                missing.append(f"{where}: parameter {parameter['name']}")
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            if not _has_example(spec, media):
                missing.append(f"{where}: request body {media_type}")
        for code, response in operation["responses"].items():
            for media_type, media in response.get("content", {}).items():
                if not _has_example(spec, media):
                    missing.append(f"{where}: response {code} {media_type}")
    assert missing == []
    assert len(list(_operations(spec))) >= 12


def test_errors_are_documented_as_problem_json() -> None:
    spec = _spec()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "instance", "errors"} <= set(problem["properties"])
    for method, path, operation in _operations(spec):
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                assert list(response.get("content", {})) == ["application/problem+json"], (method, path, code)
        if (method, path) not in OPEN_ROUTES:
            codes = set(operation["responses"])
            assert {"401", "429"} <= codes, (method, path, codes)


def test_authentication_is_declared_except_on_health_and_metrics() -> None:
    spec = _spec()
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}
    for method, path, operation in _operations(spec):
        secured = bool(operation.get("security"))
        assert secured == ((method, path) not in OPEN_ROUTES), (method, path)
