"""Synthetic images that cannot pass for real: standard marks, provenance, signature,
visible and invisible marks, and `dicom-node verify`, on real outputs that went through
a real Orthanc."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import yaml
from conftest import write_config
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_node.cli.main import main as cli
from dicom_node.config import load_config
from dicom_node.evidence.keys import create_self_signed
from dicom_node.evidence.marking import text_bitmap
from dicom_node.evidence.provenance import ProvenanceRecord, read_private_block
from dicom_node.evidence.watermark import detect
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from onnx_models import conv1x1_model, linear_card
from peers import DCMTK_ENV, Orthanc, dciodvfy_errors, free_port, stored_ok, storescu, wait_until
from storage.models import AuditEvent

pytestmark = pytest.mark.integration

SLICES = 6


@dataclass
class Outputs:
    folder: Path
    pacs: Orthanc
    node: Node
    certificate: Path
    ct: list[Path]
    flair: list[Path]
    t1: list[Dataset]
    t2: list[Dataset]
    models: Path


def _download(pacs: Orthanc, study_uid: str, modality: str, folder: Path) -> list[Path]:
    folder.mkdir()
    series = [
        s
        for s in pacs.series_of_study(study_uid)
        if s["MainDicomTags"].get("Modality") == modality
        and s["MainDicomTags"].get("SeriesDescription", "").startswith("SYNTHETIC")
    ]
    assert len(series) == 1
    return [pacs.download(i, folder / f"{n}.dcm") for n, i in enumerate(series[0]["Instances"])]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outputs]:
    """One study (T1 + T2) through Orthanc → node → Orthanc: a synthetic CT (overlay)
    and a synthetic FLAIR (burned in), downloaded back from Orthanc."""
    folder = tmp_path_factory.mktemp("marking")
    models = folder / "models"
    models.mkdir()
    conv1x1_model(models / "mr-t1-to-ct.onnx", linear_card(), [2.0], -1000.0)
    flair = linear_card("mr-t1t2-to-flair", ("T1", "T2"), "FLAIR", "MR", value_range=(0, 4095))
    conv1x1_model(models / "mr-t1t2-to-flair.onnx", flair, [0.5, 0.5], 0.0)
    key, certificate = folder / "keys" / "node.key", folder / "keys" / "node.crt"
    create_self_signed(key, certificate, common_name="marking tests")
    pacs = Orthanc(folder=folder / "pacs").start()
    config = write_config(
        folder,
        {
            "node": {"port": free_port()},
            "destinations": [
                {
                    "name": "pacs",
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": pacs.dicom_port,
                }
            ],
            "routes": [
                {"model": "mr-t1-to-ct", "send_to": ["pacs"]},
                {"model": "mr-t1t2-to-flair", "send_to": ["pacs"]},
            ],
        },
        keys=(key, certificate),
    )
    node = Node(load_config(config))
    node.start()
    try:
        study = StudySpec()
        t1 = axial_series(study, ramp_pixels(SLICES, 128, 128) * 3, description="T1 MPRAGE")
        t2 = axial_series(
            study,
            (ramp_pixels(SLICES, 128, 128) * 5)[:, ::-1].copy(),
            description="T2 TSE",
            series_number=4,
        )
        paths = write_series([*t1, *t2], folder / "inputs")
        assert node.address is not None
        assert stored_ok(storescu("127.0.0.1", node.address[1], "DICOMNODE", paths)) == 2 * SLICES

        def arrived() -> bool:
            counts = [len(s["Instances"]) for s in pacs.series_of_study(study.study_uid)]
            return counts == [SLICES] * 2

        wait_until(arrived, 90, what="synthetic CT and FLAIR in the PACS")
        yield Outputs(
            folder,
            pacs,
            node,
            certificate,
            _download(pacs, study.study_uid, "CT", folder / "ct"),
            _download(pacs, study.study_uid, "MR", folder / "flair"),
            t1,
            t2,
            models,
        )
    finally:
        node.stop(drain_s=5)
        pacs.stop()


def _by_position(series: list[Dataset]) -> dict[tuple[float, ...], Dataset]:
    return {tuple(round(float(v), 3) for v in ds.ImagePositionPatient): ds for ds in series}


def _source(ds: Dataset, series: list[Dataset]) -> Dataset:
    return _by_position(series)[tuple(round(float(v), 3) for v in ds.ImagePositionPatient)]


def _dcmsign(path: Path, certificate: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dcmsign", "--verify", "+cf", str(certificate), str(path)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=60,
    )


# Standard marking ------------------------------------------------------------------------


def test_every_output_carries_the_standard_marks_and_passes_dciodvfy(outputs: Outputs) -> None:
    for path in outputs.ct + outputs.flair:
        ds = pydicom.dcmread(path)
        assert ds.SyntheticData == "YES"
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and "SYNTHETIC" in ds.ImageType
        assert ds.SeriesDescription.startswith("SYNTHETIC ")
        assert "not an acquired image" in ds.DerivationDescription
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert {s.SeriesInstanceUID for s in ds.ReferencedSeriesSequence} >= {
            outputs.t1[0].SeriesInstanceUID
        }
        (equipment,) = ds.ContributingEquipmentSequence
        code = equipment.PurposeOfReferenceCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "109100",
            "DCM",
            "Synthesizing Equipment",
        )
        assert equipment.Manufacturer == "dicom-node"
        assert equipment.ManufacturerModelName == "dicom-node"
        model = "mr-t1-to-ct" if ds.Modality == "CT" else "mr-t1t2-to-flair"
        assert f"{model}@1.0.0" in equipment.SoftwareVersions
        assert dciodvfy_errors(path) == []


def test_flair_from_two_inputs_references_both_source_series(outputs: Outputs) -> None:
    ds = pydicom.dcmread(outputs.flair[0])
    referenced = {s.SeriesInstanceUID for s in ds.ReferencedSeriesSequence}
    assert referenced == {outputs.t1[0].SeriesInstanceUID, outputs.t2[0].SeriesInstanceUID}
    sources = {i.ReferencedSOPInstanceUID for i in ds.SourceImageSequence}
    assert _source(ds, outputs.t1).SOPInstanceUID in sources
    assert _source(ds, outputs.t2).SOPInstanceUID in sources


# Provenance ------------------------------------------------------------------------------


def _pixel_sha256(series: list[Dataset]) -> str:
    ordered = sorted(series, key=lambda d: float(d.ImagePositionPatient[2]))
    digest = hashlib.sha256()
    for ds in ordered:
        digest.update(ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def test_provenance_record_names_model_file_inputs_and_matches_the_audit_table(
    outputs: Outputs,
) -> None:
    ds = pydicom.dcmread(outputs.flair[0])
    record = read_private_block(ds)
    assert record is not None
    model_file = outputs.models / "mr-t1t2-to-flair.onnx"
    assert record.model_id == "mr-t1t2-to-flair" and record.model_version == "1.0.0"
    assert record.model_sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert record.providers == ("CPUExecutionProvider",)
    assert [(i.role, i.series_uid, i.instance_count) for i in record.inputs] == [
        ("T1", outputs.t1[0].SeriesInstanceUID, SLICES),
        ("T2", outputs.t2[0].SeriesInstanceUID, SLICES),
    ]
    assert record.inputs[0].pixel_sha256 == _pixel_sha256(outputs.t1)
    assert record.inputs[1].pixel_sha256 == _pixel_sha256(outputs.t2)
    assert record.route_destinations == ("pacs",)
    assert record.study_uid == ds.StudyInstanceUID
    assert record.output_series_uid == ds.SeriesInstanceUID
    assert record.node_version and record.created_at
    for path in outputs.flair:
        assert read_private_block(pydicom.dcmread(path)) == record
    with outputs.node.db.session() as session:
        audited = session.scalar(
            select(AuditEvent.detail).where(
                AuditEvent.kind == "series.synthesized",
                AuditEvent.series_uid == ds.SeriesInstanceUID,
            )
        )
    assert audited is not None and ProvenanceRecord.from_dict(audited) == record


# Signature -------------------------------------------------------------------------------


def test_dcmsign_verifies_every_output(outputs: Outputs) -> None:
    for path in outputs.ct + outputs.flair:
        result = _dcmsign(path, outputs.certificate)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Signature Verification : OK" in result.stdout + result.stderr


def test_one_changed_pixel_breaks_the_signature(outputs: Outputs, tmp_path: Path) -> None:
    ds = pydicom.dcmread(outputs.ct[2])
    pixels = ds.pixel_array.copy()
    pixels[40, 40] += 1
    ds.PixelData = pixels.tobytes()
    tampered = tmp_path / "tampered.dcm"
    ds.save_as(tampered)
    result = _dcmsign(tampered, outputs.certificate)
    assert result.returncode != 0
    assert "signature verification failed" in result.stdout + result.stderr
    verdict = _verify_json([tampered], outputs)[0]
    assert verdict["signature"] == "invalid" and verdict["tampered"] is True


# Visible marks ---------------------------------------------------------------------------


def test_ct_overlay_reads_synthetic_and_leaves_hu_within_the_watermark(outputs: Outputs) -> None:
    for path in outputs.ct:
        ds = pydicom.dcmread(path)
        assert ds.BurnedInAnnotation == "NO"
        assert ds[0x60001500].value == "SYNTHETIC" and ds[0x60000040].value == "G"
        overlay = ds.overlay_array(0x6000)
        assert overlay.shape == (128, 128) and overlay.any()
        expected = 2 * _source(ds, outputs.t1).pixel_array.astype(np.int32) - 1000
        change = np.abs(ds.pixel_array.astype(np.int32) - expected)
        assert change.max() <= 1 and change.mean() <= 0.5


def test_mr_output_has_synthetic_burned_in(outputs: Outputs) -> None:
    ds = pydicom.dcmread(outputs.flair[0])
    assert ds.BurnedInAnnotation == "YES"
    assert 0x60003000 not in ds
    glyphs = text_bitmap("SYNTHETIC")
    corner = ds.pixel_array[1 : 1 + glyphs.shape[0], 1 : 1 + glyphs.shape[1]]
    assert np.array_equal(corner >= 4094, glyphs), "the text, at full scale less the watermark"


# Invisible watermark ---------------------------------------------------------------------


def _strip(ds: Dataset) -> Dataset:
    """Only what a bare image needs: every private and every optional attribute gone."""
    bare = Dataset()
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelData",
    ):
        bare[keyword] = ds[keyword]
    bare.file_meta = ds.file_meta
    return bare


def test_watermark_survives_stripping_anonymisation_and_lossless_transcoding(
    outputs: Outputs, tmp_path: Path
) -> None:
    for n, path in enumerate(outputs.ct + outputs.flair):
        ds = pydicom.dcmread(path)
        record = read_private_block(ds)
        assert record is not None
        stripped = tmp_path / f"stripped{n}.dcm"
        _strip(ds).save_as(stripped, enforce_file_format=True)
        variants = [stripped]
        for tool, name in (
            (["dcmcjpls", "+el"], "jls"),
            (["gdcmconv", "--j2k"], "j2k"),
            (["dcmcrle"], "rle"),
        ):
            out = tmp_path / f"{name}{n}.dcm"
            subprocess.run(
                [*tool, str(stripped), str(out)], check=True, capture_output=True, env=DCMTK_ENV
            )
            variants.append(out)
        for variant in variants:
            found = detect(pydicom.dcmread(variant).pixel_array)
            assert found.identifier == record.identifier, variant.name


def test_watermark_survives_orthanc_anonymisation(outputs: Outputs, tmp_path: Path) -> None:
    for n, path in enumerate([outputs.ct[0], outputs.flair[0]]):
        original = pydicom.dcmread(path)
        (found,) = outputs.pacs.post(
            "/tools/find",
            {"Level": "Instance", "Query": {"SOPInstanceUID": original.SOPInstanceUID}},
        )
        anonymised = tmp_path / f"anonymised{n}.dcm"
        anonymised.write_bytes(outputs.pacs.post_bytes(f"/instances/{found}/anonymize", {}))
        ds = pydicom.dcmread(anonymised)
        assert ds.SOPInstanceUID != original.SOPInstanceUID, "Orthanc did anonymise it"
        assert read_private_block(ds) is None, "Orthanc removed the private provenance"
        record = read_private_block(original)
        assert record is not None
        assert detect(ds.pixel_array).identifier == record.identifier
        (verdict,) = _verify_json([anonymised], outputs)
        assert verdict["synthetic"] and verdict["watermark"]


def test_verify_sees_synthetic_in_outputs_and_in_nothing_else(outputs: Outputs) -> None:
    verdicts = _verify_json(outputs.ct + outputs.flair, outputs)
    assert all(
        v["synthetic"]
        and v["watermark"]
        and v["signature"] == "valid"
        and v["certificate_trusted"]
        and not v["tampered"]
        and v["watermark_matches_provenance"]
        for v in verdicts
    )
    inputs = sorted((outputs.folder / "inputs").iterdir())
    verdicts = _verify_json(inputs, outputs)
    assert len(verdicts) == 2 * SLICES
    assert not any(v["synthetic"] or v["watermark"] for v in verdicts)
    assert {v["signature"] for v in verdicts} == {"absent"}


def _verify_json(paths: list[Path], outputs: Outputs, expect: int = 0) -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicom_node",
            "--config",
            str(outputs.folder / "config.yaml"),
            "verify",
            "--json",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == expect, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_verify_reports_stripped_marks_as_tampered_and_unreadable_files_with_exit_2(
    outputs: Outputs, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(outputs.ct[1])
    del ds.SyntheticData
    stripped = tmp_path / "no-synthetic-tag.dcm"
    ds.save_as(stripped)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a dicom file at all")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicom_node",
            "--config",
            str(outputs.folder / "config.yaml"),
            "verify",
            "--json",
            str(stripped),
            str(broken),
            str(outputs.ct[0]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert str(broken) in result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["path"] == str(stripped) and first["synthetic"] and first["tampered"]
    assert first["signature"] == "invalid" and first["watermark"]
    assert second["path"] == str(outputs.ct[0]) and not second["tampered"]


def test_verify_prints_the_evidence_for_people(
    outputs: Outputs, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(["--config", str(outputs.folder / "config.yaml"), "verify", str(outputs.flair[0])])
    text = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC" in text and "TAMPERED" not in text
    assert "model mr-t1t2-to-flair 1.0.0" in text
    assert "signature: valid, trusted" in text
    assert "matches the provenance record" in text


def test_keys_init_makes_a_pair_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"signing": {"key_file": "k/node.key", "certificate_file": "k/node.crt"}})
    )
    assert cli(["--config", str(config), "keys", "init"]) == 0
    assert (tmp_path / "k" / "node.key").stat().st_mode & 0o777 == 0o600
    assert cli(["--config", str(config), "keys", "init"]) == 1
    assert "already exists" in capsys.readouterr().err
