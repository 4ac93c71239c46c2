"""Structured logs: one JSON object per line and event, UIDs only, never patient data.

Callers pass an event name and fields; nothing from a dataset other than UIDs, AE
titles, counts and our own messages may be logged (PS3.15 E confidentiality profile
terms: no names, IDs or dates of birth). Third-party loggers that can print whole
datasets (pynetdicom at debug level) are held at WARNING.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_LOGGER_NAME = "dicom_node"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "INFO", stream: Any = None) -> None:
    """Sends every log record to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def get_logger(stage: str) -> logging.Logger:
    return logging.getLogger(f"{_LOGGER_NAME}.{stage}")


def emit(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Logs ``event`` with ``fields`` as top-level JSON keys."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})
