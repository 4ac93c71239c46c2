"""Start-up reconciliation: spool files without a row are indexed when whole, and
set aside when not (they were never acknowledged)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydicom
from sqlalchemy import func, select

from dicom_node.receive.reconcile import reconcile_spool
from factories import StudySpec, axial_series, ramp_pixels
from storage.database import Database
from storage.models import Instance
from storage.spool import Spool, instance_key


def _spool_file(spool: Spool, ds: pydicom.Dataset, cut: int = 0) -> str:
    key = instance_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    path = spool.path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])
    return key


def test_whole_files_are_indexed_and_cut_ones_quarantined(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    spool = Spool(tmp_path / "spool")
    whole, cut = axial_series(StudySpec(), ramp_pixels(slices=2))
    _spool_file(spool, whole)
    cut_key = _spool_file(spool, cut, cut=1000)

    assert reconcile_spool(db, spool, lambda: datetime.now(UTC)) == 1
    with db.session() as session:
        uids = list(session.scalars(select(Instance.sop_instance_uid)))
        assert session.scalar(select(func.count(Instance.id))) == 1
    assert uids == [whole.SOPInstanceUID]
    assert not spool.exists(cut_key)
    assert spool.exists(f"quarantine/{Path(cut_key).name}")
    assert reconcile_spool(db, spool, lambda: datetime.now(UTC)) == 0
