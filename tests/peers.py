"""Real peers for the tests: an Orthanc server, the DCMTK command-line clients, and a
Prometheus server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset


def _without_python_scripts(path: str) -> str:
    """``path`` without this interpreter's scripts folder: pynetdicom installs console
    scripts named like DCMTK's (storescu, findscu, …) there, and with a virtual
    environment activated they would stand in for DCMTK, whose output the tests read."""
    scripts = os.path.realpath(sysconfig.get_path("scripts"))
    return os.pathsep.join(
        entry for entry in path.split(os.pathsep) if os.path.realpath(entry or ".") != scripts
    )


os.environ["PATH"] = _without_python_scripts(os.environ.get("PATH", ""))
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

AUTO_ROUTE_LUA = """
function OnStableStudy(studyId, tags, metadata)
  RestApiPost('/modalities/node/store',
              '{"Resources": ["' .. studyId .. '"], "Asynchronous": true}')
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Orthanc:
    """An Orthanc process on free loopback ports, with its own storage folder."""

    folder: Path
    aet: str = "ORTHANC"
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    auto_route: bool = False
    lua: list[str] = field(default_factory=list)
    stable_age: int = 1
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "Name": "dicom-node-tests",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "StableAge": self.stable_age,
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "Plugins": [],
            "ConcurrentJobs": 2,
        }
        scripts = [*self.lua, AUTO_ROUTE_LUA] if self.auto_route else list(self.lua)
        paths = []
        for i, script in enumerate(scripts):
            path = self.folder / f"script{i}.lua"
            path.write_text(script)
            paths.append(str(path))
        cfg["LuaScripts"] = paths
        return cfg

    def start(self) -> Orthanc:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            ["Orthanc", str(path)], stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV
        )
        wait_until(self._alive, 30, what="Orthanc to answer on its REST port")
        return self

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()}")
        try:
            self.get("/system")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return bytes(r.read())

    def post(self, path: str, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def post_bytes(self, path: str, body: Any) -> bytes:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return bytes(r.read())

    def delete(self, path: str) -> None:
        req = urllib.request.Request(self.url + path, method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()

    def series_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every series of a study with its main tags and instance count."""
        found = self.post(
            "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        )
        if not found:
            return []
        return list(self.get(f"/studies/{found[0]}/series?expand"))

    def instances_of_series(self, series_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/series/{series_id}/instances"))

    def download(self, instance_id: str, dest: Path) -> Path:
        dest.write_bytes(self.get_bytes(f"/instances/{instance_id}/file"))
        return dest

    def upload(self, path: Path) -> Any:
        return self.post("/instances", path.read_bytes())


def storescu(
    host: str,
    port: int,
    called: str,
    paths: Sequence[Path],
    calling: str = "STORESCU",
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """DCMTK storescu, verbose, so that every store response can be read."""
    return subprocess.run(
        [
            "storescu",
            "-v",
            "-aet",
            calling,
            "-aec",
            called,
            *extra,
            host,
            str(port),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=300,
    )


def stored_ok(result: subprocess.CompletedProcess[str]) -> int:
    """How many store responses storescu reports as Success (it exits 0 on failures)."""
    return (result.stdout + result.stderr).count("Received Store Response (Success)")


def findscu(port: int, folder: Path, keys: list[str], model: str = "-S") -> list[Dataset]:
    """DCMTK findscu against the node (AE DICOMNODE on loopback, calling AE FINDSCU):
    the C-FIND responses, as datasets, that it writes into ``folder`` (created)."""
    folder.mkdir()
    subprocess.run(
        [
            "findscu",
            model,
            "-X",
            "-od",
            str(folder),
            "-aec",
            "DICOMNODE",
            "127.0.0.1",
            str(port),
            *[a for k in keys for a in ("-k", k)],
        ],
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
        timeout=60,
    )
    return [pydicom.dcmread(p) for p in sorted(folder.glob("rsp*.dcm"))]


def echoscu(
    host: str, port: int, called: str, calling: str = "ECHOSCU", extra: Sequence[str] = ()
) -> bool:
    result = subprocess.run(
        ["echoscu", "-aet", calling, "-aec", called, *extra, host, str(port)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=60,
    )
    return result.returncode == 0


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines of dciodvfy, without the one it reports for Synthetic Data (0008,001C),
    which the 2022 dicom3tools predate."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error") and "(0x0008,0x001c)" not in line]


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


@dataclass
class StoreSCP:
    """DCMTK storescp writing to ``folder``; remove the folder while it runs and every
    store is refused with Out of Resources (0xA700), as a full PACS would. ``extra``
    options go to storescp (e.g. ``+tls key cert +cf ca``)."""

    folder: Path
    port: int = field(default_factory=free_port)
    aet: str = "STORESCP"
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self, echo: Sequence[str] = ()) -> StoreSCP:
        """Starts it and waits until it answers C-ECHO (``echo``: echoscu's TLS options)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["storescp", "-aet", self.aet, *self.extra, "-od", str(self.folder), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=DCMTK_ENV,
        )
        wait_until(
            lambda: echoscu("127.0.0.1", self.port, self.aet, extra=echo), 20, what="storescp"
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@dataclass
class NodeProcess:
    """`python -m dicom_node serve` in its own process, for kill and restart tests; with
    ``stages``, `serve --stages` (ready once it logs so, when it does not listen)."""

    config: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    stages: str | None = None

    @property
    def log(self) -> Path:
        return self.config.parent / (f"node-{self.stages}.log" if self.stages else "node.log")

    def start(self) -> NodeProcess:
        stages = ["--stages", self.stages] if self.stages else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dicom_node", "--config", str(self.config), "serve", *stages],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_until(self._ready, 60, what="the node to answer C-ECHO")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"node exited: {self.log.read_text()}")
        if self.stages is None or "receive" in self.stages:
            return echoscu("127.0.0.1", self.port, "DICOMNODE")
        return '"node.ready"' in self.log.read_text()

    def signal(self, signum: int) -> int:
        """Sends ``signum`` and returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signum)
        code = self.process.wait(60)
        self.process = None
        return code

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL cluster in ``folder`` on a free loopback port (Debian's
    server binaries; run as the ``postgres`` user when the tests run as root)."""

    folder: Path
    port: int = field(default_factory=free_port)

    @staticmethod
    def binaries() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("PostgreSQL server binaries not found (Debian package postgresql)")
        return found[-1].parent

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        data = self.folder / "data"
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        bin_dir = self.binaries()
        self._run(
            str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"
        )
        self._run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.folder / "pg.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200",
            "start",
        )
        self._run(
            str(bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "dicomnode",
        )
        return self

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/dicomnode"

    def stop(self) -> None:
        self._run(
            str(self.binaries() / "pg_ctl"),
            "-D",
            str(self.folder / "data"),
            "-m",
            "fast",
            "-w",
            "stop",
        )


@dataclass
class Prometheus:
    """A Prometheus server (Debian's ``prometheus``) on a free loopback port, with its own
    data folder, scraping ``targets`` (host:port) every second at ``metrics_path``."""

    folder: Path
    targets: list[str]
    metrics_path: str = "/metrics"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "dicomnode",
                            "metrics_path": self.metrics_path,
                            "static_configs": [{"targets": self.targets}],
                        }
                    ],
                }
            )
        )
        log = (self.folder / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.folder / 'data'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, 30, what="Prometheus to be ready")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Prometheus exited: {(self.folder / 'prometheus.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` evaluates to, through Prometheus' HTTP API."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as r:
            answer = json.loads(r.read())
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {answer}")
        return list(answer["data"]["result"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
