"""The evidence of an output series (signature, watermark), checked once per version of
the series and kept for the app's lifetime: a reviewer reloading a page should not wait
for the watermark search again."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from dicom_node.api.auth import context
from dicom_node.ops.evidence import output_evidence
from storage.models import OutputSeries

_lock = threading.Lock()


def evidence(request: Request, session: Session, output: OutputSeries) -> dict[str, Any]:
    """:func:`output_evidence` of ``output``, from the app's cache when this version of
    the series (its creation time and instance count) was checked before."""
    cache: dict[tuple[int, str, int], dict[str, Any]] = request.app.state.evidence_cache
    key = (output.id, output.created_at.isoformat(), output.instance_count)
    with _lock:
        found = cache.get(key)
    if found is None:
        found = output_evidence(session, context(request).spool, output)
        with _lock:
            cache[key] = found
    return found
