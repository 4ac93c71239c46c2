"""Structured logs: one JSON object per line and event, UIDs only, never patient data.

Callers pass an event name and fields; nothing from a dataset other than UIDs, AE
titles, counts and our own messages may be logged (PS3.15 E confidentiality profile
terms: no names, IDs or dates of birth). Third-party loggers that can print whole
datasets (pynetdicom at debug level) are held at WARNING.

Libraries speak too: pydicom warns (through both ``warnings`` and its logger) about
values a vendor's file holds that their VR does not allow, quoting the value. Those
messages become ``library.warning`` events whose quoted values are cut out, each
distinct message once per process, so a GE series cannot fill the log with non-JSON
lines or with the patient's data.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

_LOGGER_NAME = "dicom_node"
_WARNINGS_LOGGER = "py.warnings"
_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|<[^>]*>""")
_SEEN_LIMIT = 10_000


def redact(message: str) -> str:
    """A library's message with every quoted value (and link) cut out, first line only."""
    first = message.splitlines()[0] if message else ""
    return _QUOTED.sub("'…'", first)[:500]


def _is_library(record: logging.LogRecord) -> bool:
    return not record.name.startswith(_LOGGER_NAME)


class _OncePerMessage(logging.Filter):
    """Lets each distinct library message through once; the node's own events all pass."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_library(record):
            return True
        key = (record.name, redact(record.getMessage()))
        if key in self._seen:
            return False
        if len(self._seen) < _SEEN_LIMIT:
            self._seen.add(key)
        return True


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replaced: a warning is a log record, never raw stderr."""
    path = Path(filename)
    logging.getLogger(_WARNINGS_LOGGER).warning(
        str(message),
        extra={
            "fields": {
                "category": category.__name__,
                "source": f"{path.parent.name}/{path.name}:{lineno}",
            }
        },
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        if _is_library(record):
            entry["event"] = f"library.{record.levelname.lower()}"
            entry["source"] = record.name
            entry["message"] = redact(record.getMessage())
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "INFO", stream: Any = None) -> None:
    """Sends every log record, and every Python warning, to ``stream`` (stderr) as JSON
    lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_OncePerMessage())
    warnings.showwarning = _show_warning
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
