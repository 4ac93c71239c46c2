"""Ingest benchmark: one DCMTK storescu association sends N CT-like slices to the node,
to a real Orthanc and to DCMTK's storescp, alternating, several rounds, in one run.

Prints instances/s (median over rounds) for each receiver and the ratios node/Orthanc
and node/storescp. Every DCMTK-based process (storescu, storescp, Orthanc) runs with
TCP_NODELAY=1: without it DCMTK waits on Nagle's algorithm and is 10-50x slower on
loopback, which would flatter the node.

    python bench/ingest.py --instances 200 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def echo(port: int, aet: str) -> bool:
    return (
        subprocess.run(
            ["echoscu", "-aec", aet, "127.0.0.1", str(port)], capture_output=True, env=DCMTK_ENV
        ).returncode
        == 0
    )


def write_study(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` 512×512 signed 16-bit CT slices of one new study (fresh UIDs)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:512, :512]
    head = ((yy - 256) ** 2 + (xx - 256) ** 2 < 200**2).astype(np.int16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(count):
        pixels = (head * 40 - (1 - head) * 1000 + rng.normal(0, 10, (512, 512))).astype(np.int16)
        ds = Dataset()
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = "Bench^Ingest", "BENCH"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame
        ds.Modality, ds.SeriesDescription, ds.InstanceNumber = "CT", "bench", k + 1
        ds.ImagePositionPatient = [-256.0, -256.0, float(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{k:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass
class Receiver:
    name: str
    aet: str
    port: int
    count: Callable[[], int]
    process: subprocess.Popen[bytes] | None = None
    rates: list[float] = field(default_factory=list)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)


def start_node(folder: Path) -> Receiver:
    import yaml

    port = free_port()
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node": {
                    "ae_title": "DICOMNODE",
                    "host": "127.0.0.1",
                    "port": port,
                    "stable_seconds": 3600,
                },
                "storage": {
                    "database_url": "sqlite:///node.db",
                    "spool_dir": "spool",
                    "min_free_bytes": 0,
                },
                "inference": {"models_dir": "no-models"},
                "logging": {"level": "WARNING"},
            }
        )
    )
    log = (folder / "node.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "dicom_node", "--config", str(config), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: echo(port, "DICOMNODE"), 60, "node")

    def count() -> int:
        import sqlite3

        with sqlite3.connect(folder / "node.db") as conn:
            return int(conn.execute("SELECT count(*) FROM instance").fetchone()[0])

    return Receiver("dicom-node", "DICOMNODE", port, count, process)


def start_orthanc(folder: Path) -> Receiver:
    port, http = free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "bench",
                "StorageDirectory": str(folder / "db"),
                "IndexDirectory": str(folder / "db"),
                "DicomAet": "ORTHANC",
                "DicomPort": port,
                "HttpPort": http,
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "Plugins": [],
            }
        )
    )
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen(
        ["Orthanc", str(config)], stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV
    )
    wait_for(lambda: echo(port, "ORTHANC"), 60, "Orthanc")

    def count() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/statistics") as r:
            return int(json.loads(r.read())["CountInstances"])

    return Receiver("Orthanc", "ORTHANC", port, count, process)


def start_storescp(folder: Path) -> Receiver:
    port = free_port()
    out = folder / "files"
    out.mkdir()
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=DCMTK_ENV,
    )
    wait_for(lambda: echo(port, "STORESCP"), 30, "storescp")
    return Receiver("storescp", "STORESCP", port, lambda: len(list(out.iterdir())), process)


def send(receiver: Receiver, paths: list[Path]) -> float:
    """Seconds storescu needs to send every file over one association."""
    before = receiver.count()
    start = time.perf_counter()
    subprocess.run(
        ["storescu", "-aec", receiver.aet, "127.0.0.1", str(receiver.port), *map(str, paths)],
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
    )
    elapsed = time.perf_counter() - start
    stored = receiver.count() - before
    if stored != len(paths):
        raise RuntimeError(f"{receiver.name} stored {stored} of {len(paths)} instances")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dicom-node-bench-") as tmp:
        root = Path(tmp)
        receivers = []
        try:
            for name, start in (
                ("node", start_node),
                ("orthanc", start_orthanc),
                ("storescp", start_storescp),
            ):
                (root / name).mkdir()
                receivers.append(start(root / name))
            studies = {
                (r, x.name): write_study(root / f"study-{r}-{x.name}", args.instances, r)
                for r in range(args.rounds)
                for x in receivers
            }
            os.sync()  # no receiver should pay for flushing the files written just now
            for r in range(args.rounds):
                order = receivers[r % 3 :] + receivers[: r % 3]
                for receiver in order:
                    paths = studies[r, receiver.name]
                    receiver.rates.append(args.instances / send(receiver, paths))
                    shutil.rmtree(paths[0].parent)
                    os.sync()
                print(
                    f"round {r + 1}: "
                    + ", ".join(f"{x.name} {x.rates[-1]:.0f}/s" for x in receivers),
                    flush=True,
                )
        finally:
            for receiver in receivers:
                receiver.stop()
    medians = {x.name: statistics.median(x.rates) for x in receivers}
    print(
        f"\n{args.instances} instances of 512x512x16 bit per association, "
        f"median of {args.rounds} rounds, {os.cpu_count()} CPUs"
    )
    for name, rate in medians.items():
        print(f"  {name:<10} {rate:7.0f} instances/s")
    node = medians["dicom-node"]
    print(f"  node/Orthanc  {node / medians['Orthanc']:.2f}x")
    print(f"  node/storescp {node / medians['storescp']:.2f}x")


if __name__ == "__main__":
    main()
