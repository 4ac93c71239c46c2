"""Whether an output series' own files still say what the node wrote into them: the
signature and the invisible watermark of a sample of its instances in the spool, read
by the same checks as `dicom-node verify`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.evidence.verify import UnreadableFile, verify_file
from storage.models import Instance, OutputSeries, Series
from storage.spool import Spool

SAMPLE = 3
"""Instances checked per series (first, middle, last): the watermark search reads every
pixel, and a reviewer's page should not wait for a whole series."""


def output_evidence(session: Session, spool: Spool, output: OutputSeries) -> dict[str, Any]:
    """``checked`` instances of ``instances``; ``signature`` (valid when every checked
    file's signature is, else the first other status), ``watermark`` (found in every
    checked file), ``tampered`` (any checked file's evidence disagrees) and the
    ``reasons`` and ``signer`` the checks gave."""
    keys = list(
        session.scalars(
            select(Instance.spool_key)
            .join(Series)
            .where(Series.series_uid == output.series_uid)
            .order_by(Instance.instance_number, Instance.id)
        )
    )
    picked = sorted({0, len(keys) // 2, len(keys) - 1}) if keys else []
    verdicts, reasons = [], []
    for index in picked[:SAMPLE]:
        try:
            verdicts.append(verify_file(spool.path(keys[index])))
        except (UnreadableFile, OSError) as exc:
            reasons.append(str(exc))
    statuses = {v.signature for v in verdicts}
    signature = (
        "valid"
        if statuses == {"valid"}
        else next((s for s in ("invalid", "absent") if s in statuses), "unreadable")
    )
    return {
        "instances": len(keys),
        "checked": len(verdicts),
        "signature": signature,
        "signer": next((v.signer for v in verdicts if v.signer), None),
        "watermark": bool(verdicts) and all(v.watermark for v in verdicts),
        "synthetic": bool(verdicts) and all(v.synthetic for v in verdicts),
        "tampered": bool(reasons) or any(v.tampered for v in verdicts),
        "reasons": reasons + [r for v in verdicts for r in v.reasons],
    }
