"""Structured logs: with ``CONVERGIO_LOG_FORMAT=json`` one JSON object per line carrying the
trace and span ids of the current span plus workflow id, step id and tenant when known.

Those come from :func:`log_context` (context variables the worker interceptor and
``run_agent_turn`` set) or, inside an activity, from ``activity.info()``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from convergio.settings import Settings

_CONTEXT_FIELDS = ("workflow_id", "step_id", "tenant", "agent", "activity")
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("convergio_log_context", default={})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (None values ignored) to every log record made inside the block."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, Any]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Puts trace_id, span_id, workflow_id, step_id and tenant on every record (None if unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        else:
            record.trace_id = record.span_id = None
        fields = _context.get()
        if "workflow_id" not in fields:
            fields = {**fields, **_activity_fields()}
        for name in _CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, fields.get(name))
        return True


def _activity_fields() -> dict[str, Any]:
    try:
        from temporalio import activity

        info = activity.info()
    except Exception:  # noqa: BLE001 - not in an activity
        return {}
    return {"workflow_id": info.workflow_id, "activity": info.activity_type}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("trace_id", "span_id", *_CONTEXT_FIELDS):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that carry prompts and answers verbatim (autogen_core.EVENT_LOGGER_NAME and AgentChat's).
AUTOGEN_CONTENT_LOGGERS = ("autogen_core.events", "autogen_agentchat.events")


def setup_logging(settings: Settings, *, stream: Any = None, level: int = logging.INFO) -> logging.Handler:
    """Replace the root logger's handlers with one (JSON or text) handler on ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_convergio", False)]:
        root.removeHandler(old)
    handler._convergio = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # AutoGen logs every model call's prompt and answer as an INFO event (LLMCall, LLMStreamStart,
    # LLMStreamEnd on "autogen_core.events"): whole texts, with the secrets and personal data the
    # guardian keeps out of the event stream and the report. Logs get warnings and errors only.
    for name in AUTOGEN_CONTENT_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return handler
