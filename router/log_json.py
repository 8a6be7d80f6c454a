"""`[log] format = "json"`: one JSON object per line, for log collectors.

Each record carries `time`, `level`, `logger`, `message` and, inside an HTTP request, the
request's id (router/api/request_ids.py). What may be logged is what the text format logs:
the same records, the same filters (router/log_safety.py); JSON's own escaping keeps a
control character in a value from ending the line."""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the HTTP request being handled, set by its middleware."""


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def use_json_logs() -> None:
    """Switch the root logger's handlers (router.log_safety.configure_logging's) to JSON."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())
