"""Receive: the node's SCP against DCMTK's real clients."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom import AE
from sqlalchemy import func, select

from dicom_node.runtime.node import Node
from dicom_node.synthesize.volume import load_series
from factories import MR_IMAGE_STORAGE, StudySpec, axial_series, ramp_pixels, write_series
from peers import DCMTK_ENV, echoscu, stored_ok, storescu, wait_until
from storage.models import Instance, Study

pytestmark = pytest.mark.integration


def _instances(node: Node) -> int:
    with node.db.session() as session:
        return int(session.scalar(select(func.count(Instance.id))) or 0)


def _port(node: Node) -> int:
    assert node.address is not None
    return node.address[1]


def test_echo_answers(node_factory: Callable[..., Node]) -> None:
    node = node_factory()
    assert echoscu("127.0.0.1", _port(node), "DICOMNODE")


def test_stored_instances_are_byte_identical_and_indexed(
    tmp_path: Path, node_factory: Callable[..., Node]
) -> None:
    node = node_factory()
    study = StudySpec()
    paths = write_series(axial_series(study, ramp_pixels(slices=5)), tmp_path / "in")
    result = storescu("127.0.0.1", _port(node), "DICOMNODE", paths)
    assert stored_ok(result) == 5, result.stdout + result.stderr
    assert _instances(node) == 5
    with node.db.session() as session:
        rows = session.execute(select(Instance.sop_instance_uid, Instance.spool_key)).all()
        study_row = session.scalar(select(Study))
        assert study_row is not None and study_row.study_uid == study.study_uid
        assert study_row.last_calling_ae == "STORESCU"
    sent = {pydicom.dcmread(p).SOPInstanceUID: p for p in paths}
    for sop_uid, key in rows:
        received = pydicom.dcmread(node.spool.path(key))
        original = pydicom.dcmread(sent[sop_uid])
        assert received.PixelData == original.PixelData
        assert received.file_meta.SourceApplicationEntityTitle == "STORESCU"
        assert "/" not in Path(key).name and sop_uid not in key


def _convert(tool: list[str], src: Path, dst: Path) -> Path:
    subprocess.run([*tool, str(src), str(dst)], check=True, capture_output=True, env=DCMTK_ENV)
    return dst


COMPRESSORS = {
    "1.2.840.10008.1.2.5": ["dcmcrle"],
    "1.2.840.10008.1.2.4.70": ["dcmcjpeg", "+e1"],
    "1.2.840.10008.1.2.4.57": ["dcmcjpeg", "+el"],
    "1.2.840.10008.1.2.4.80": ["dcmcjpls", "+el"],
    "1.2.840.10008.1.2.4.90": ["gdcmconv", "--j2k"],
    "1.2.840.10008.1.2.1.99": ["dcmconv", "+td"],
    "1.2.840.10008.1.2": ["dcmconv", "+ti"],
    "1.2.840.10008.1.2.2": ["dcmconv", "+tb"],
}

PROPOSE = {  # storescu converts files to its preferred syntax unless told to propose theirs
    "1.2.840.10008.1.2.5": ["-xr"],
    "1.2.840.10008.1.2.4.70": ["-xs"],
    "1.2.840.10008.1.2.4.80": ["-xt"],
    "1.2.840.10008.1.2.4.90": ["-xv"],
    "1.2.840.10008.1.2.1.99": ["-xd"],
    "1.2.840.10008.1.2.2": ["-xb"],
    "1.2.840.10008.1.2": ["-xi"],
}

PYNETDICOM_SENDS = {"1.2.840.10008.1.2.4.57"}  # storescu 3.6.7 will not propose Process 14


def _send_as_is(port: int, paths: list[Path], transfer_syntax: str) -> None:
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(MR_IMAGE_STORAGE, [transfer_syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        for path in paths:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0
    finally:
        assoc.release()


@pytest.mark.parametrize("transfer_syntax", sorted(COMPRESSORS))
def test_accepts_transfer_syntax_as_sent_and_decodes_it(
    tmp_path: Path, node_factory: Callable[..., Node], transfer_syntax: str
) -> None:
    node = node_factory()
    study = StudySpec()
    pixels = ramp_pixels(slices=3, rows=24, cols=20)
    originals = write_series(axial_series(study, pixels), tmp_path / "plain")
    converted = [
        _convert(COMPRESSORS[transfer_syntax], p, tmp_path / f"c{i}.dcm")
        for i, p in enumerate(originals)
    ]
    assert pydicom.dcmread(converted[0]).file_meta.TransferSyntaxUID == transfer_syntax
    if transfer_syntax in PYNETDICOM_SENDS:
        _send_as_is(_port(node), converted, transfer_syntax)
    else:
        result = storescu(
            "127.0.0.1", _port(node), "DICOMNODE", converted, extra=PROPOSE.get(transfer_syntax, [])
        )
        assert stored_ok(result) == 3, result.stdout + result.stderr
    with node.db.session() as session:
        rows = session.execute(select(Instance.transfer_syntax_uid, Instance.spool_key)).all()
    assert {ts for ts, _ in rows} == {transfer_syntax}
    series = load_series([node.spool.path(k) for _, k in rows], "x")
    np.testing.assert_array_equal(series.volume.array, pixels.astype(np.float32))


def test_unknown_calling_ae_is_rejected_and_logged(
    tmp_path: Path, node_factory: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    node = node_factory({"node": {"allowed_calling_aets": ["PACS1", "WS2"]}})
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=1)), tmp_path / "in")
    with caplog.at_level(logging.INFO, logger="dicom_node"):
        refused = storescu("127.0.0.1", _port(node), "DICOMNODE", paths, calling="INTRUDER")
        assert stored_ok(refused) == 0
        assert "Association Rejected" in refused.stdout + refused.stderr
        allowed = storescu("127.0.0.1", _port(node), "DICOMNODE", paths, calling="WS2")
    assert stored_ok(allowed) == 1
    assert _instances(node) == 1
    assert any(
        r.getMessage() == "association.rejected" and r.fields["calling_ae"] == "INTRUDER"
        for r in caplog.records
        if hasattr(r, "fields")
    )


def test_low_disk_answers_out_of_resources(
    tmp_path: Path, node_factory: Callable[..., Node]
) -> None:
    node = node_factory({"storage": {"min_free_bytes": 1 << 60}})
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=2)), tmp_path / "in")
    result = storescu("127.0.0.1", _port(node), "DICOMNODE", paths)
    output = result.stdout + result.stderr
    assert stored_ok(result) == 0
    assert "Refused: OutOfResources" in output, output
    assert _instances(node) == 0
    assert echoscu("127.0.0.1", _port(node), "DICOMNODE")


def test_database_failure_answers_out_of_resources_not_success(
    tmp_path: Path, node_factory: Callable[..., Node]
) -> None:
    node = node_factory()
    database = Path(node.db.engine.url.database or "")
    with sqlite3.connect(database) as conn:
        conn.execute("ALTER TABLE instance RENAME TO instance_gone")
    node.db.engine.dispose()
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=1)), tmp_path / "in")
    result = storescu("127.0.0.1", _port(node), "DICOMNODE", paths)
    output = result.stdout + result.stderr
    assert stored_ok(result) == 0
    assert "Refused: OutOfResources" in output, output
    with sqlite3.connect(database) as conn:
        conn.execute("ALTER TABLE instance_gone RENAME TO instance")
    node.db.engine.dispose()
    assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 1


def test_unexpected_store_fault_answers_a_status_senders_retry(
    tmp_path: Path, node_factory: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault the handler did not foresee may pass (PS3.4 B.2.3: Refused, Out of
    Resources, is the transient class); Cannot Understand would tell the sender that
    resending is useless. The fault is injected: no real one is known to reach here."""
    import dicom_node.receive.scp

    faults = iter([RuntimeError("injected fault")])
    real_record = dicom_node.receive.scp.record_instance

    def flaky_record(*args: object, **kwargs: object) -> None:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        real_record(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dicom_node.receive.scp, "record_instance", flaky_record)
    node = node_factory()
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=1)), tmp_path / "in")
    result = storescu("127.0.0.1", _port(node), "DICOMNODE", paths)
    output = result.stdout + result.stderr
    assert stored_ok(result) == 0
    assert output.count("Received Store Response") == 1, output
    assert "Refused: OutOfResources" in output, output
    # DCMTK 3.6.7 storescu neither retries nor exits 0 here: its status is the failed
    # response's high byte (0xA7; 0xC0 for Cannot Understand), what a script can act on
    assert result.returncode == 0xA7, output
    assert _instances(node) == 0
    assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 1
    assert _instances(node) == 1


def test_log_lines_are_json_without_patient_data(
    tmp_path: Path, node_factory: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    from dicom_node.obs.logs import JsonFormatter

    node = node_factory({"logging": {"level": "DEBUG"}})
    study = StudySpec(patient_name="Doe^Johnathan", patient_id="PID-98765", birth_date="19451231")
    paths = write_series(axial_series(study, ramp_pixels(slices=2)), tmp_path / "in")
    with caplog.at_level(logging.DEBUG):
        assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 2
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert any(json.loads(line)["event"] == "instance.stored" for line in lines)
    text = "\n".join(lines)
    for secret in ("Doe", "Johnathan", "PID-98765", "19451231"):
        assert secret not in text


def test_node_polls_fast_only_while_instances_flow(
    tmp_path: Path, node_factory: Callable[..., Node]
) -> None:
    import pynetdicom.association

    from dicom_node.net.patches import polling

    node = node_factory()
    assert isinstance(pynetdicom.association.time, polling.AdaptiveTime)
    paths = write_series(axial_series(StudySpec(), ramp_pixels(slices=1)), tmp_path / "in")
    assert stored_ok(storescu("127.0.0.1", _port(node), "DICOMNODE", paths)) == 1
    assert polling.busy()
    wait_until(lambda: not polling.busy(), 5, what="the busy window to close")


def _jobs_done(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM job WHERE state = 'done'").fetchone()[0])


def test_malformed_patient_values_never_reach_the_node_output(
    tmp_path: Path, models_dir: Path
) -> None:
    """A patient ID or name with a control character, received and synthesized from,
    never reaches the node's output: not through its own logs, nor through a library's
    warnings (pydicom's value checks quote the values they refuse, for the VRs they
    check)."""
    from conftest import write_config

    from peers import NodeProcess, free_port

    study = StudySpec(patient_name="Doe^Secretname\x07", patient_id="PID\x01SECRET-7")
    datasets = axial_series(study, ramp_pixels(slices=3))
    with pydicom.config.disable_value_validation():
        paths = write_series(datasets, tmp_path / "in")
    port = free_port()
    config = write_config(
        tmp_path,
        {
            "node": {"port": port},
            "inference": {"models_dir": str(models_dir)},
            "destinations": [
                {"name": "nowhere", "ae_title": "NOWHERE", "host": "127.0.0.1", "port": free_port()}
            ],
            "routes": [{"model": "mr-t1-to-ct", "send_to": ["nowhere"]}],
            "logging": {"level": "DEBUG"},
        },
    )
    node = NodeProcess(config, port).start()
    try:
        assert stored_ok(storescu("127.0.0.1", port, "DICOMNODE", paths)) == 3
        db = tmp_path / "var" / "node.db"
        wait_until(lambda: _jobs_done(db) == 1, 60, what="the job on the malformed study to finish")
    finally:
        node.stop()
    output = (tmp_path / "node.log").read_text()
    assert "job.done" in output
    for secret in ("SECRET", "Secretname"):
        assert secret not in output
