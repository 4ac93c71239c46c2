"""`make demo`: a simulated patient through a real Orthanc and the node, end to end.

Starts a local Orthanc (which auto-routes every stable study to the node) and the node
with the shipped models, writes a simulated patient's T1w and T2w study as DICOM,
sends it to Orthanc, waits until the synthetic FLAIR arrives back in the same study and
the synthetic CT waits at the review gate (its route has ``review: true``, as shipped),
shows the review queue (through the REST API, and where to see it in the dashboard, with
a reviewer's sign-in), approves the CT as a reviewer would (``POST
/api/v1/outputs/ID/approve`` with the reviewer's token; with ``--review-in-browser`` it
waits for you to approve it in the dashboard instead) and only then waits for it in
Orthanc, renders source | synthetic | truth | difference for each as a PNG, and prints
where it is and how long each stage took.
Everything lives under var/demo/ and every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from inference.geometry import Volume
from inference.training.figures import panel_figure
from inference.training.recipes import MR_REFERENCE_LEVEL, reference_units
from inference.training.simulate import Acquisition, simulate_subject

ROOT = Path(__file__).resolve().parents[1]
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
T2_ACQUISITION = Acquisition(pixel_spacing_mm=2.0, slice_thickness_mm=4.0, rows=132, columns=120)
ROUTE_LUA = """
function OnStableStudy(studyId, tags, metadata)
  RestApiPost('/modalities/node/store',
              '{"Resources": ["' .. studyId .. '"], "Asynchronous": true}')
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def write_series(
    volume: Volume, study: dict[str, str], description: str, number: int, folder: Path
) -> list[Path]:
    """A simulated acquisition as classic MR Image Storage, one file per slice."""
    folder.mkdir(parents=True)
    geometry = volume.geometry
    series_uid = generate_uid()
    stored = np.clip(np.rint(volume.array), 0, 65535).astype(np.uint16)
    paths = []
    for k in range(geometry.shape[0]):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, generate_uid()
        ds.PatientName, ds.PatientID = "Demo^Simulated", "DEMO-0001"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = study["study"], study["frame"]
        ds.StudyDate, ds.StudyTime, ds.StudyID = study["date"], "120000", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "DEMO1", ""
        ds.StudyDescription = "Simulated brain MR (dicom-node demo)"
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "MR", series_uid, number
        ds.SeriesDescription, ds.PatientPosition = description, "HFS"
        ds.BodyPartExamined, ds.PositionReferenceIndicator = "HEAD", ""
        ds.Manufacturer = "simulated"
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = list(geometry.slice_origin(k))
        ds.ImageOrientationPatient = [*geometry.row_direction, *geometry.column_direction]
        ds.PixelSpacing = [geometry.spacing[1], geometry.spacing[2]]
        ds.SliceThickness = geometry.spacing[0]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTrainLength = "2D", 1
        ds.RepetitionTime, ds.EchoTime = volume.meta.get("tr", ""), volume.meta.get("te", "")
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = geometry.shape[1], geometry.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = stored[k].tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class Orthanc:
    def __init__(self, folder: Path, node_port: int) -> None:
        self.folder, self.http, self.dicom = folder, free_port(), free_port()
        folder.mkdir(parents=True)
        (folder / "route.lua").write_text(ROUTE_LUA)
        (folder / "orthanc.json").write_text(
            json.dumps(
                {
                    "Name": "demo-pacs",
                    "StorageDirectory": str(folder / "db"),
                    "IndexDirectory": str(folder / "db"),
                    "DicomAet": "ORTHANC",
                    "DicomPort": self.dicom,
                    "HttpPort": self.http,
                    "StableAge": 2,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "Plugins": [],
                    "DicomModalities": {"node": ["DICOMNODE", "127.0.0.1", node_port]},
                    "LuaScripts": [str(folder / "route.lua")],
                }
            )
        )
        log = (folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            ["Orthanc", str(folder / "orthanc.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,
        )
        wait_for("Orthanc", self._up, 30)

    def _up(self) -> bool:
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=30) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=30) as r:
            return bytes(r.read())

    def synthetic_series(self, study_uid: str) -> dict[str, dict[str, Any]]:
        found = [
            s
            for s in self.get("/series?expand")
            if s["MainDicomTags"].get("SeriesDescription", "").startswith("SYNTHETIC")
            and self.get(f"/studies/{s['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]
            == study_uid
        ]
        return {s["MainDicomTags"]["Modality"]: s for s in found}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def start_node(folder: Path, port: int, pacs_port: int, api_port: int) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True)
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node": {
                    "ae_title": "DICOMNODE",
                    "host": "127.0.0.1",
                    "port": port,
                    "stable_seconds": 3,
                },
                "storage": {"database_url": "sqlite:///node.db", "spool_dir": "spool"},
                "inference": {"models_dir": str(ROOT / "models")},
                "destinations": [
                    {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}
                ],
                "routes": [
                    {"model": "mr-t1-to-ct", "send_to": ["pacs"], "review": True},
                    {"model": "mr-t1t2-to-flair", "send_to": ["pacs"]},
                ],
                "scheduler": {"poll_seconds": 0.2},
                "api": {"host": "127.0.0.1", "port": api_port},
            }
        )
    )
    log = (folder / "node.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "dicom_node", "--config", str(config), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for(
        "the node",
        lambda: (
            subprocess.run(
                ["echoscu", "-aec", "DICOMNODE", "127.0.0.1", str(port)],
                capture_output=True,
                env=DCMTK_ENV,
            ).returncode
            == 0
        ),
        120,
    )
    return process


def _stages(db: Path) -> list[tuple[str, datetime]]:
    received = (
        "FROM instance WHERE series_id NOT IN (SELECT series.id FROM series "
        "JOIN output_series ON output_series.series_uid = series.series_uid)"
    )
    with sqlite3.connect(db) as conn:
        q = conn.execute
        stamps = [
            ("node received the first instance", q(f"SELECT min(received_at) {received}")),
            ("node received the last instance", q(f"SELECT max(received_at) {received}")),
            ("study stable and routed", q("SELECT max(routed_at) FROM study")),
            ("jobs done", q("SELECT max(updated_at) FROM job WHERE state = 'done'")),
            ("outputs delivered to Orthanc", q("SELECT max(delivered_at) FROM delivery")),
        ]
        return [
            (label, datetime.fromisoformat(cur.fetchone()[0]).replace(tzinfo=UTC))
            for label, cur in stamps
        ]


def _slice(path_list: list[Path], k: int) -> np.ndarray:
    ordered = sorted(
        (pydicom.dcmread(p) for p in path_list), key=lambda d: float(d.ImagePositionPatient[2])
    )
    ds = ordered[k]
    return ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1)) + float(
        getattr(ds, "RescaleIntercept", 0)
    )


def _nearest_slice(volume: Volume, reference: Volume, k: int) -> int:
    """The slice of ``volume`` nearest to slice ``k`` of ``reference`` (axial stacks)."""
    z = reference.geometry.slice_origin(k)[2]
    depths = [volume.geometry.slice_origin(j)[2] for j in range(volume.geometry.shape[0])]
    return int(np.argmin(np.abs(np.asarray(depths) - z)))


def cli(config: Path, *args: str, stdin: str | None = None) -> str:
    """``dicom-node ARGS`` on the demo node, as an administrator types it; its output."""
    result = subprocess.run(
        [sys.executable, "-m", "dicom_node", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        input=stdin,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dicom-node {' '.join(args[:2])} failed: {result.stderr}")
    return result.stdout


class Api:
    """The demo node's REST API, as a reviewer's script uses it: bearer token, JSON."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=9001, help="simulated patient")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "demo")
    parser.add_argument(
        "--review-in-browser",
        action="store_true",
        help="wait for you to approve the synthetic CT in the dashboard (up to 30 min)",
    )
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    node_port, api_port = free_port(), free_port()
    started = time.monotonic()
    subject = simulate_subject(args.seed)
    # The T2 of the same head on a coarser grid, as a T2 often is: the FLAIR model
    # resamples it onto the T1's grid by patient coordinates.
    coarse_t2 = simulate_subject(args.seed, T2_ACQUISITION).images["T2"]
    print(f"simulated patient {args.seed} in {time.monotonic() - started:.1f} s")
    study = {
        "study": generate_uid(),
        "frame": generate_uid(),
        "date": datetime.now(UTC).strftime("%Y%m%d"),
    }
    t1 = write_series(subject.images["T1"], study, "T1 SE (simulated)", 3, args.out / "t1")
    t2 = write_series(coarse_t2, study, "T2 TSE (simulated)", 4, args.out / "t2")
    pacs = Orthanc(args.out / "orthanc", node_port)
    node = None
    try:
        node = start_node(args.out / "node", node_port, pacs.dicom, api_port)
        config = args.out / "node" / "config.yaml"
        password = secrets.token_urlsafe(12)
        cli(
            config,
            "users",
            "add",
            "reviewer",
            "--role",
            "reviewer",
            "--password-stdin",
            stdin=password + "\n",
        )
        api = Api(api_port, cli(config, "tokens", "create", "reviewer").splitlines()[-1])
        sent_at = datetime.now(UTC)
        result = subprocess.run(
            ["storescu", "-aec", "ORTHANC", "127.0.0.1", str(pacs.dicom), *map(str, t1 + t2)],
            capture_output=True,
            env=DCMTK_ENV,
        )
        if result.returncode != 0:
            raise RuntimeError(f"storescu to Orthanc failed: {result.stderr.decode()}")
        stored_at = datetime.now(UTC)
        (held,) = wait_for(
            "the synthetic CT awaiting review",
            lambda: api.call("GET", "/api/v1/outputs?state=awaiting_review"),
            600,
        )
        wait_for(
            "the synthetic FLAIR in Orthanc", lambda: pacs.synthetic_series(study["study"]), 600
        )
        print(
            f"awaiting review: synthetic CT {held['series_instance_uid']} "
            f"({held['instances']} instances, model {held['model']}); in Orthanc: "
            f"{sorted(pacs.synthetic_series(study['study']))} (no CT before approval)\n"
            f"dashboard: http://127.0.0.1:{api_port}/studies/{study['study']} "
            f"(sign in as reviewer, password {password}; only while the demo runs)"
        )
        if "CT" in pacs.synthetic_series(study["study"]):
            raise RuntimeError("the synthetic CT reached Orthanc before it was approved")
        if args.review_in_browser:
            print("waiting for you to approve it in the dashboard ...")
            decided = wait_for(
                "a decision in the dashboard",
                lambda: (
                    (o := api.call("GET", f"/api/v1/outputs/{held['id']}"))["state"]
                    != "awaiting_review"
                    and o
                ),
                1800,
            )
            if decided["state"] == "rejected":
                print(f"rejected: {decided['review']}; the synthetic CT is never sent")
                return
        else:
            approved = api.call(
                "POST",
                f"/api/v1/outputs/{held['id']}/approve",
                {"comment": "checked against the T1"},
            )
            review = approved["review"]
            print(f"approved by {review['reviewer']} at {review['at']}: {approved['state']}")
        arrived = wait_for(
            "the synthetic CT and FLAIR in Orthanc",
            lambda: (
                s
                if len(s := pacs.synthetic_series(study["study"])) == 2
                and all(len(x["Instances"]) == len(t1) for x in s.values())
                else None
            ),
            600,
        )
        arrived_at = datetime.now(UTC)
        outputs = {}
        for modality, series in arrived.items():
            folder = args.out / f"synthetic-{modality.lower()}"
            folder.mkdir()
            outputs[modality] = []
            for n, instance in enumerate(series["Instances"]):
                path = folder / f"{n:04d}.dcm"
                path.write_bytes(pacs.get_bytes(f"/instances/{instance}/file"))
                outputs[modality].append(path)
        k = len(t1) // 2
        ct_truth = subject.images["CT"].array[k]
        flair_truth = reference_units(subject, "FLAIR")[k]
        ct, flair = _slice(outputs["CT"], k), _slice(outputs["MR"], k)
        lo, hi = np.percentile(subject.images["T1"].array, [1, 99.5])
        f_hi = 1.1 * MR_REFERENCE_LEVEL
        png = args.out / "demo.png"
        panel_figure(
            [
                [
                    ("T1 (source)", _slice(t1, k), lo, hi),
                    ("synthetic CT", ct, -200, 1200),
                    ("true CT", ct_truth, -200, 1200),
                    ("difference ±300 HU", ct - ct_truth, -300, 300),
                ],
                [
                    (
                        "T2 (source, nearest slice)",
                        _slice(t2, _nearest_slice(coarse_t2, subject.images["T1"], k)),
                        0,
                        float(np.percentile(coarse_t2.array, 99.5)),
                    ),
                    ("synthetic FLAIR", flair, 0, f_hi),
                    ("true FLAIR", flair_truth, 0, f_hi),
                    ("difference", flair - flair_truth, -f_hi / 3, f_hi / 3),
                ],
            ],
            png,
        )
        stages = [
            ("sent to Orthanc", sent_at),
            ("Orthanc stored it", stored_at),
            *_stages(args.out / "node" / "node.db"),
            ("both series visible in Orthanc", arrived_at),
        ]
        print(f"\nfigure: {png}")
        print(f"synthetic series: {args.out / 'synthetic-ct'}, {args.out / 'synthetic-mr'}")
        print(
            f"Orthanc explorer: http://127.0.0.1:{pacs.http}/app/explorer.html "
            "(only while the demo runs)\n\nstage                                   t (s)"
        )
        for label, at in sorted(stages, key=lambda s: s[1]):
            print(f"  {label:<38}{(at - sent_at).total_seconds():6.1f}")
    finally:
        if node is not None:
            node.send_signal(signal.SIGTERM)
            node.wait(60)
        pacs.stop()


if __name__ == "__main__":
    main()
