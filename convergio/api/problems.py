"""Every error as RFC 9457 ``application/problem+json``.

``type`` names the kind of problem (``urn:convergio:problem:<slug>``), ``title`` is its
fixed summary, ``detail`` what went wrong this time, ``instance`` the request path.
Validation problems add ``errors`` (one per field); unexpected failures say only that
they happened and the request path, never the exception: details go to the log.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

import psycopg
import redis.exceptions
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.service import RPCError, RPCStatusCode

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("convergio.api")

_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    500: "internal-error",
    503: "service-unavailable",
}


class FieldError(BaseModel):
    loc: list[str | int] = Field(examples=[["body", "template"]])
    msg: str = Field(examples=["Field required"])
    type: str = Field(examples=["missing"])


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:convergio:problem:not-found",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "no workflow 'strategic-analysis-0f3a'",
                    "instance": "/workflows/strategic-analysis-0f3a",
                }
            ]
        },
    )

    type: str = Field(default="about:blank", examples=["urn:convergio:problem:not-found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(default="", examples=["no workflow 'strategic-analysis-0f3a'"])
    instance: str = Field(default="", examples=["/workflows/strategic-analysis-0f3a"])
    errors: list[FieldError] | None = Field(default=None, description="Validation problems: one per field.")


def problem_type(status: int) -> str:
    return f"urn:convergio:problem:{_SLUGS.get(status, str(status))}"


def problem_response(
    status: int,
    detail: str,
    instance: str,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {
        "type": problem_type(status),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    body.update({k: v for k, v in extensions.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


class ProblemError(Exception):
    """Raise for a problem with extension members (e.g. ``checks`` of a failed health check)."""

    def __init__(self, status: int, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extensions = extensions


def _detail_text(detail: Any) -> str:
    return detail if isinstance(detail, str) else json.dumps(detail, default=str)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": [str(p) if not isinstance(p, int) else p for p in e.get("loc", ())],
            "msg": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]


_RPC_STATUS = {
    RPCStatusCode.NOT_FOUND: 404,
    RPCStatusCode.INVALID_ARGUMENT: 400,
    RPCStatusCode.ALREADY_EXISTS: 409,
    RPCStatusCode.FAILED_PRECONDITION: 409,
    RPCStatusCode.PERMISSION_DENIED: 403,
    RPCStatusCode.RESOURCE_EXHAUSTED: 429,
}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method the path takes, for a 405's ``Allow``: Starlette names only those of the first
    route matching the path (``POST`` for ``DELETE /workflows``, though ``GET`` is served too).
    Each method is tried against the app's routes, as the router would dispatch it."""
    allowed: list[str] = []
    for method in _METHODS:
        probe = {
            "type": "http", "method": method, "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""), "path_params": {},
            "headers": request.scope.get("headers", []),
        }
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def install_problem_handlers(app: FastAPI) -> None:
    """Problem responses for HTTP errors, validation errors, Temporal errors and the unexpected."""

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        extensions = getattr(exc, "extensions", {})
        headers = exc.headers
        allowed = _allowed_methods(request) if exc.status_code == 405 else ""
        if allowed:
            headers = {**(headers or {}), "Allow": allowed}
        return problem_response(
            exc.status_code, _detail_text(exc.detail), request.url.path, headers=headers, **extensions
        )

    @app.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)[:2000]
        return problem_response(422, detail or "invalid request", request.url.path, errors=errors)

    @app.exception_handler(ProblemError)
    async def explicit_problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.detail, request.url.path, **exc.extensions)

    @app.exception_handler(psycopg.DataError)
    async def unstorable_data(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # e.g. a NUL character, which PostgreSQL text and jsonb cannot hold: the input's fault;
        # the transaction rolled back, so nothing was stored.
        return problem_response(
            422, "the request holds text PostgreSQL cannot store (such as a NUL character)", request.url.path
        )

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def postgres_down(request: Request, exc: Exception) -> JSONResponse:
        # psycopg's message names hosts and ports: logged, not returned.
        log.warning("PostgreSQL unreachable: %s", exc)
        return problem_response(503, "PostgreSQL unreachable; try again shortly", request.url.path)

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis unreachable: %s", exc)
        return problem_response(503, "Redis unreachable; try again shortly", request.url.path)

    @app.exception_handler(RPCError)
    async def temporal_problem(request: Request, exc: RPCError) -> JSONResponse:
        status = _RPC_STATUS.get(exc.status, 503)
        prefix = "Temporal: " if status == 503 else ""
        return problem_response(status, f"{prefix}{exc.message}", request.url.path)


class ProblemMiddleware:
    """Outermost guard: bodies over the limit get 413; an unexpected exception gets a bare 500.

    Pure ASGI (no BaseHTTPMiddleware) so streaming responses pass straight through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        settings = getattr(scope["app"].state, "settings", None)
        limit = settings.api_max_body_bytes if settings is not None else 1_000_000
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await problem_response(400, "invalid Content-Length", path)(scope, receive, send)
                return
            if too_big:
                await self._too_large(scope, receive, send, path, limit)
                return
        started = False
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await self._too_large(scope, receive, send, path, limit)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if started:
                raise
            await problem_response(500, "an unexpected error occurred; it has been logged", path)(
                scope, receive, send
            )

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, path: str, limit: int) -> None:
        await problem_response(413, f"request body larger than {limit} bytes", path, max_bytes=limit)(
            scope, receive, send
        )


class _BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on instead of calling it a parse error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.extensions = {"max_bytes": limit}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these problem statuses, each with an example."""
    descriptions = {
        400: "Malformed request",
        401: "Missing, unknown or expired credentials",
        403: "Role or tenant not allowed",
        415: "Unsupported media type",
        404: "No such resource (or not visible to your tenant)",
        409: "Conflicts with the current state",
        413: "Request body too large",
        422: "Invalid input; `errors` lists each field",
        429: "Rate limit reached; see `Retry-After`",
        503: "Temporal, PostgreSQL or Redis unreachable",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        example: dict[str, Any] = {
            "type": problem_type(status),
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": descriptions.get(status, ""),
            "instance": "/workflows",
        }
        if status == 422:
            example["errors"] = [{"loc": ["body", "template"], "msg": "Field required", "type": "missing"}]
        out[status] = {
            "description": descriptions.get(status, HTTPStatus(status).phrase),
            "model": Problem,
            "content": {PROBLEM_JSON: {"example": example}},
        }
    return out
