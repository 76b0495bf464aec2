"""Structured logs: one JSON object per line, with the binding and destination of the message
being handled (and the trace of the current span, when OpenTelemetry is installed).

The binding and destination come from the record's ``extra`` (``binding=``,
``destination=``) or, for records logged while a message is handled, from a context variable
that the app sets around each dispatch once JSON logs are on.
"""

from __future__ import annotations

import logging
import sys
import traceback
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

import orjson

_handling: ContextVar[tuple[str, str | None] | None] = ContextVar(
    "streamlib_handling", default=None
)

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

context_enabled = False
"""Whether dispatches record their binding for the logs (set by ``use_json_logs``)."""


def enter(binding: str, destination: str | None) -> Token[tuple[str, str | None] | None]:
    """From now on (in this task) log records carry ``binding`` and ``destination``."""
    return _handling.set((binding, destination))


def leave(token: Token[tuple[str, str | None] | None]) -> None:
    _handling.reset(token)


def _trace_ids() -> dict[str, str]:
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "binding", "destination", "trace_id", ...}``:
    keys without a value are left out; other ``extra`` fields are kept."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        handled = _handling.get()
        if handled is not None:
            out["binding"], destination = handled
            if destination is not None:
                out["destination"] = destination
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        out.update(_trace_ids())
        if record.exc_info:
            out["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            out["exception"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


def use_json_logs(level: str | int) -> None:
    """Log to stderr as JSON lines at ``level`` (``streamlib run --log-format json``)."""
    global context_enabled
    context_enabled = True
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
