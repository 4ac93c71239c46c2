"""The kill -9 fault loop, shared by ``tests/test_crash.py`` (a dozen kills in CI) and
``tools/soak.py`` (hundreds).

It runs the node as its own process (``python -m dicom_node serve``) against a real
Orthanc, feeds it small T1 studies with DCMTK ``storescu``, and SIGKILLs it at chosen
moments of a study's life: while ``storescu`` is mid-association, while the study is
complete but not yet routed, while the model runs, while the output files are being
written, and while the output is being sent. Moments are found by polling the node's
SQLite database and spool (read-only use), with seeded random delays on top; random-time
kills are mixed in. After every kill the node is restarted on the same database and
spool, and what ``storescu -v`` did not report as ``Success`` is sent again, as a PACS
would retry. The phase a kill really hit is read back from the database afterwards,
so the tally says where the node died, not where the loop aimed.

At the end every study is checked: each acknowledged SOP Instance UID is indexed and its
spool file holds that instance; the destination holds exactly one synthetic series per
study, with one instance per input slice, every instance from the same, complete run;
no SOP Instance UID appears twice, at the destination or in the index.

The module lives beside ``peers.py`` and ``factories.py`` because it is test harness
built on them; ``tools/soak.py`` puts ``tests/`` on ``sys.path`` and drives the same
class, so the CI test and the soak run exercise one and the same loop.
"""

from __future__ import annotations

import io
import json
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
from conftest import write_config

from dicom_node.dicom.uids import output_series_uid
from dicom_node.evidence.keys import create_self_signed
from dicom_node.evidence.provenance import read_private_block
from factories import StudySpec, axial_series, ramp_pixels, write_series
from onnx_models import conv1x1_model, linear_card
from peers import DCMTK_ENV, NodeProcess, Orthanc, free_port, wait_until
from storage.spool import instance_key, output_series_key

MODEL_ID = "mr-t1-to-ct"
MODEL_VERSION = "1.0.0"

TARGETS = ("receiving", "stable", "inference", "writing", "dispatch")
"""Moments the loop aims at, in the order a study passes them."""

MAX_SENDS = 25
"""Associations per study before the loop gives up on it (and reports it incomplete)."""

PHASES = (
    "receiving",
    "stable",
    "queued",
    "inference",
    "writing",
    "dispatch",
    "dispatch-wait",
    "idle",
)
"""Where a kill can land, as read back from the database after the kill."""

PHASE_LABELS = {
    "receiving": "receiving (storescu mid-association)",
    "stable": "received, not yet routed",
    "queued": "routed, job not yet claimed",
    "inference": "job running, no output written yet",
    "writing": "job running, writing output files",
    "dispatch": "sending output (delivery in flight)",
    "dispatch-wait": "output waiting for its (re)send",
    "idle": "nothing in flight",
}


def _claimed_by(row: sqlite3.Row, pid: int) -> bool:
    """Whether process ``pid`` claimed the row (worker ``host:pid[.incarnation]:…``)."""
    parts = str(row["worker"] or "").split(":")
    return len(parts) > 1 and parts[1].partition(".")[0] == str(pid)


def _utc(text: str | None) -> float | None:
    """Epoch seconds of a naive UTC timestamp as the node's database stores it."""
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@dataclass
class StudyCase:
    """One study the loop sends, with what the node acknowledged of it."""

    index: int
    spec: StudySpec
    series_uid: str
    files: dict[str, Path]
    """SOP Instance UID → file."""
    acked: set[str] = field(default_factory=set)
    sends: int = 0
    kills: int = 0
    delivered: bool = False
    """The loop waited for its delivery (studies left in flight are awaited at the end)."""
    started: float = field(default_factory=time.monotonic)

    @property
    def slices(self) -> int:
        return len(self.files)

    @property
    def output_series_uid(self) -> str:
        return output_series_uid([self.series_uid], MODEL_ID, MODEL_VERSION)

    @property
    def pending(self) -> list[Path]:
        return [path for uid, path in self.files.items() if uid not in self.acked]


@dataclass
class Tally:
    """What the loop did and found; ``problems`` empty means the node kept every promise."""

    seed: int
    kills_target: int
    kills: Counter[str] = field(default_factory=Counter)
    aimed: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    overlapped: int = 0
    """Kills while an earlier study was still in flight too."""
    studies: int = 0
    interrupted: int = 0
    recovered: int = 0
    instances_sent: int = 0
    instance_sends: int = 0
    resent: int = 0
    acknowledged: int = 0
    stored_unacknowledged: int = 0
    reindexed: int = 0
    released_jobs: int = 0
    released_deliveries: int = 0
    delivered_series: int = 0
    delivered_instances: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    mixed: list[str] = field(default_factory=list)
    restart_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    @property
    def problems(self) -> list[str]:
        return [*self.lost, *self.duplicated, *self.incomplete, *self.mixed]

    def table(self) -> str:
        """The tally as a plain-text table, as the docs quote it."""
        restarts = sorted(self.restart_s) or [0.0]
        rows: list[tuple[str, object]] = [
            ("seed", self.seed),
            ("kills (SIGKILL of the node process)", self.total_kills),
        ]
        rows += [(f"  {PHASE_LABELS[p]}", self.kills[p]) for p in PHASES if self.kills[p]]
        rows += [
            ("aimed at / missed (phase passed first)", _counts(self.aimed, self.missed)),
            ("kills with an earlier study still in flight", self.overlapped),
            ("studies", self.studies),
            ("studies interrupted by at least one kill", self.interrupted),
            ("instances (distinct)", self.instances_sent),
            ("C-STORE requests made (with retries)", self.instance_sends),
            ("instances resent after a kill", self.resent),
            ("acknowledged with Success", self.acknowledged),
            ("stored, unacknowledged when killed (resent)", self.stored_unacknowledged),
            ("spool files re-indexed at start-up", self.reindexed),
            (
                "jobs / deliveries released after restart",
                (f"{self.released_jobs} / {self.released_deliveries}"),
            ),
            (
                "synthetic series delivered / instances",
                (f"{self.delivered_series} / {self.delivered_instances}"),
            ),
            ("LOST (acknowledged, not stored)", len(self.lost)),
            ("DUPLICATED (second series or SOP UID)", len(self.duplicated)),
            ("INCOMPLETE or missing synthetic series", len(self.incomplete)),
            ("MIXED (instances of two runs in a series)", len(self.mixed)),
            ("recovered (interrupted, one complete series)", self.recovered),
            (
                "restart to C-ECHO, median / max (s)",
                (f"{restarts[len(restarts) // 2]:.1f} / {restarts[-1]:.1f}"),
            ),
            ("elapsed (s)", f"{self.elapsed_s:.0f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines)


def _counts(aimed: Counter[str], missed: Counter[str]) -> str:
    names = (*TARGETS, "random")
    return ", ".join(f"{t} {aimed[t]}/{missed[t]}" for t in names if aimed[t] or missed[t])


@dataclass
class _Store:
    """A running ``storescu -v``; its output says which files were stored."""

    process: subprocess.Popen[str]
    paths: list[Path]

    def finish(self, timeout: float = 120) -> list[Path]:
        """Waits for the exit; returns the files answered with Success."""
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return acknowledged_files(out)

    def running(self) -> bool:
        return self.process.poll() is None


def acknowledged_files(output: str) -> list[Path]:
    """Files ``storescu -v`` reports as stored: a ``Received Store Response (Success)``
    after its ``Sending file:`` line. storescu exits 0 even when stores failed, so its
    output is the only account of what the peer acknowledged."""
    current: Path | None = None
    acked = []
    for line in output.splitlines():
        if line.startswith("I: Sending file: "):
            current = Path(line.removeprefix("I: Sending file: ").strip())
        elif line.startswith("I: Received Store Response (Success)") and current is not None:
            acked.append(current)
            current = None
        elif line.startswith("I: Received Store Response"):
            current = None
    return acked


class CrashLoop:
    """Node process + Orthanc destination + the kill loop; a context manager that stops
    every process it started, on success or failure."""

    def __init__(
        self,
        workdir: Path,
        seed: int,
        slices: tuple[int, int] = (6, 12),
        stable_seconds: float = 2.5,
        study_timeout_s: float = 120.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.workdir = workdir
        self.seed = seed
        self.rng = random.Random(seed)
        self.slices = slices
        self.stable_seconds = stable_seconds
        self.study_timeout_s = study_timeout_s
        self.log = log
        self.studies: list[StudyCase] = []
        self.pacs: Orthanc | None = None
        self.node: NodeProcess | None = None
        self.tally = Tally(seed=seed, kills_target=0)
        self._store: _Store | None = None
        self._typical_s = 3.0

    # ---------------------------------------------------------------- set-up, tear-down

    def __enter__(self) -> CrashLoop:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        models = self.workdir / "node" / "models"
        models.mkdir(parents=True, exist_ok=True)
        conv1x1_model(models / f"{MODEL_ID}.onnx", linear_card(), weights=[2.0], bias=-1000.0)
        keys = self.workdir / "keys"
        keys.mkdir(exist_ok=True)
        create_self_signed(keys / "signing.key", keys / "signing.crt", common_name="crash loop")
        self.pacs = Orthanc(folder=self.workdir / "pacs").start()
        port = free_port()
        config = _write_config(self.workdir / "node", port, self.pacs.dicom_port, keys, self)
        self.node = NodeProcess(config, port)
        self._restart()

    def close(self) -> None:
        """Stops storescu, the node and Orthanc, whatever state they are in."""
        if self._store is not None and self._store.running():
            self._store.process.kill()
            self._store.process.communicate()
        if self.node is not None:
            self.node.stop()
        if self.pacs is not None:
            self.pacs.stop()

    @property
    def db_path(self) -> Path:
        return self.workdir / "node" / "var" / "node.db"

    @property
    def spool_root(self) -> Path:
        return self.workdir / "node" / "var" / "spool"

    @property
    def node_log(self) -> Path:
        return self.workdir / "node" / "node.log"

    # ---------------------------------------------------------------- the loop

    def run(self, kills: int, cover_every_target: bool = True, max_studies: int = 10_000) -> Tally:
        """Kills the node ``kills`` times (at least), over as many studies as that takes;
        with ``cover_every_target`` it goes on until each target moment was hit once, but
        never beyond ``max_studies`` studies."""
        started = time.monotonic()
        self.tally.kills_target = kills
        uncovered = set(TARGETS) if cover_every_target else set()
        while (self.tally.total_kills < kills or uncovered) and len(self.studies) < max_studies:
            plan = self._plan(kills - self.tally.total_kills, uncovered)
            case = self._new_study()
            self._drive(case, plan)
            uncovered -= {p for p in TARGETS if self.tally.kills[p]}
        for case in self.studies:
            if not case.delivered:
                self._await_delivery(case)
        self.tally.elapsed_s = time.monotonic() - started
        self.verify()
        self.tally.elapsed_s = time.monotonic() - started
        return self.tally

    def _plan(self, remaining: int, uncovered: set[str]) -> list[str]:
        """The kills for the next study, in the order the study meets them: targeted
        moments (an ordered random subset, or every one still uncovered) or ``random``."""
        if uncovered:
            return [t for t in TARGETS if t in uncovered]
        if self.rng.random() < 0.25:
            return ["random"] * self.rng.randint(1, 2)
        plan = [t for t in TARGETS if self.rng.random() < 0.5] or [self.rng.choice(TARGETS)]
        return plan[: max(1, remaining)]

    def _new_study(self) -> StudyCase:
        index = len(self.studies)
        n = self.rng.randint(*self.slices)
        spec = StudySpec(patient_id=f"CRASH-{index:04d}")
        datasets = axial_series(spec, ramp_pixels(slices=n))
        paths = write_series(datasets, self.workdir / "studies" / f"{index:04d}")
        files = {
            str(ds.SOPInstanceUID): path.resolve() for ds, path in zip(datasets, paths, strict=True)
        }
        case = StudyCase(index, spec, str(datasets[0].SeriesInstanceUID), files)
        self.studies.append(case)
        self.tally.studies += 1
        self.tally.instances_sent += n
        return case

    def _drive(self, case: StudyCase, plan: list[str]) -> None:
        """Takes one study from its first C-STORE to its delivery, killing as planned."""
        self.log(f"study {case.index}: {case.slices} slices, plan {plan}")
        randoms = [self.rng.uniform(0.0, self._typical_s) for _ in range(plan.count("random"))]
        deadline = time.monotonic() + randoms.pop(0) if randoms else None
        targets = [t for t in plan if t != "random"]
        begun, restarts = time.monotonic(), len(self.tally.restart_s)
        while case.pending and case.sends < MAX_SENDS:
            self._send(case)
            if targets and targets[0] == "receiving":
                targets.pop(0)
                self._aim("receiving", case, self._mid_association(case))
            elif deadline is not None:
                self._random_kill(case, deadline)
                deadline = time.monotonic() + randoms.pop(0) if randoms else None
            self._collect(case)
        for target in targets:
            if target == "receiving":
                continue
            wait = {
                "stable": self._unrouted,
                "inference": self._inferring,
                "writing": self._writing,
                "dispatch": self._dispatching,
            }[target]
            self._aim(target, case, wait(case))
        if deadline is not None:
            self._random_kill(case, deadline)
        if plan[0] == "random" and self.rng.random() < 0.5:
            self.log(f"  study {case.index} left in flight; the next study starts now")
            return
        self._await_delivery(case)
        took = time.monotonic() - begun - sum(self.tally.restart_s[restarts:])
        self._typical_s = 0.8 * self._typical_s + 0.2 * max(0.5, took)

    # ---------------------------------------------------------------- sending

    def _send(self, case: StudyCase) -> None:
        assert self.node is not None
        paths = case.pending
        if case.sends:
            self.tally.resent += len(paths)
        case.sends += 1
        self.tally.instance_sends += len(paths)
        process = subprocess.Popen(
            ["storescu", "-v", "-aet", "PACS", "-aec", "DICOMNODE"]
            + ["-to", "30", "-ta", "30", "-td", "30", "127.0.0.1", str(self.node.port)]
            + [str(p) for p in paths],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=DCMTK_ENV,
        )
        self._store = _Store(process, paths)

    def _collect(self, case: StudyCase) -> None:
        """Reads which files storescu got Success for (a kill may have done so already)."""
        if self._store is None:
            return
        acked = self._store.finish()
        self._store = None
        by_path = {p: uid for uid, p in case.files.items()}
        for path in acked:
            case.acked.add(by_path[path])
        assert self.node is not None and self.node.process is not None
        if self.node.process.poll() is not None:
            raise RuntimeError(f"the node exited by itself: {self._log_tail()}")

    # ---------------------------------------------------------------- moments to aim at

    def _mid_association(self, case: StudyCase) -> bool:
        """Waits until a random number of this send's instances are indexed."""
        before = self._indexed(case)
        goal = before + self.rng.randint(0, max(0, len(case.pending) - 1))
        assert self._store is not None
        while self._store.running():
            if self._indexed(case) >= goal:
                time.sleep(self.rng.uniform(0.0, 0.01))
                return self._store.running()
            time.sleep(0.002)
        return False

    def _unrouted(self, case: StudyCase) -> bool:
        """Complete and acknowledged; killed at a random point of the stability wait."""
        time.sleep(self.rng.uniform(0.0, 0.8 * self.stable_seconds))
        return self._jobs(case) == []

    def _inferring(self, case: StudyCase) -> bool:
        """Until this process' worker holds the study's job."""
        return self._poll(lambda: self._running_job(case) is not None, case)

    def _writing(self, case: StudyCase) -> bool:
        """Until the running job has written an output file since it was claimed."""
        return self._poll(lambda: self._fresh_outputs(case) > 0, case)

    def _dispatching(self, case: StudyCase) -> bool:
        """Until a delivery of the study's output is in flight, then a random moment of it."""
        if not self._poll(lambda: self._delivery_state(case) == "sending", case):
            return False
        time.sleep(self.rng.uniform(0.0, 0.05 * case.slices))
        return True

    def _poll(self, condition: Callable[[], bool], case: StudyCase) -> bool:
        """Polls ``condition`` until it holds (True) or the study was delivered (False)."""
        deadline = time.monotonic() + self.study_timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            if self._delivery_state(case) == "done":
                return False
            time.sleep(0.003)
        return False

    def _aim(self, target: str, case: StudyCase, reached: bool) -> None:
        self.tally.aimed[target] += 1
        if not reached:
            self.tally.missed[target] += 1
            self.log(f"  missed {target}: the study went past it first")
            return
        self._kill(case, target)

    def _random_kill(self, case: StudyCase, at: float) -> None:
        time.sleep(max(0.0, at - time.monotonic()))
        self.tally.aimed["random"] += 1
        self._kill(case, "random")

    # ---------------------------------------------------------------- kill and restart

    def _kill(self, case: StudyCase, target: str) -> None:
        assert self.node is not None and self.node.process is not None
        receiving = self._store is not None and self._store.running()
        pid = self.node.process.pid
        self.node.process.send_signal(signal.SIGKILL)
        self.node.process.wait(30)
        self.node.process = None
        phase = self._observe(case, receiving, pid)
        self.tally.kills[phase] += 1
        if any(not c.delivered and self._delivery_state(c) != "done" for c in self.studies[:-1]):
            self.tally.overlapped += 1
        case.kills += 1
        self.log(
            f"  kill {self.tally.total_kills}: aimed {target}, hit {phase} (study {case.index})"
        )
        if self._store is not None:
            self._collect_after_kill(case)
        self.tally.stored_unacknowledged += len(self._indexed_uids(case) - case.acked)
        self._restart()

    def _collect_after_kill(self, case: StudyCase) -> None:
        """storescu sees the association die; note what it had acknowledged."""
        assert self._store is not None
        acked = self._store.finish()
        by_path = {p: uid for uid, p in case.files.items()}
        for path in acked:
            case.acked.add(by_path[path])
        self._store = None

    def _restart(self) -> None:
        assert self.node is not None
        begun = time.monotonic()
        self.node.start()
        self.tally.restart_s.append(time.monotonic() - begun)

    def _observe(self, case: StudyCase, receiving: bool, pid: int) -> str:
        """The phase the study was in when the node died, from what the node committed."""
        if receiving:
            return "receiving"
        jobs = self._jobs(case)
        if not jobs:
            return "stable"
        state = self._delivery_state(case)
        if state == "sending":
            return "dispatch"
        running = [j for j in jobs if j["state"] == "running" and _claimed_by(j, pid)]
        if running:
            return "writing" if self._fresh_outputs(case, running[0]) else "inference"
        if any(j["state"] in ("pending", "running") for j in jobs):
            return "queued"
        if state == "pending":
            return "dispatch-wait"
        return "idle"

    # ---------------------------------------------------------------- reading the node's state

    def _query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        """A read of the node's database; the node holds its writes to short transactions."""
        with closing(sqlite3.connect(self.db_path, timeout=60)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, args).fetchall()

    def _indexed(self, case: StudyCase) -> int:
        rows = self._query(
            "SELECT count(*) AS n FROM instance JOIN series ON series.id = instance.series_id "
            "WHERE series.series_uid = ?",
            case.series_uid,
        )
        return int(rows[0]["n"])

    def _indexed_uids(self, case: StudyCase) -> set[str]:
        return {
            str(r["sop_instance_uid"])
            for r in self._query(
                "SELECT instance.sop_instance_uid FROM instance JOIN series "
                "ON series.id = instance.series_id WHERE series.series_uid = ?",
                case.series_uid,
            )
        }

    def _jobs(self, case: StudyCase) -> list[sqlite3.Row]:
        return self._query(
            "SELECT job.* FROM job JOIN study ON study.id = job.study_id "
            "WHERE study.study_uid = ? ORDER BY job.id",
            case.spec.study_uid,
        )

    def _running_job(self, case: StudyCase) -> sqlite3.Row | None:
        assert self.node is not None and self.node.process is not None
        for job in self._jobs(case):
            if job["state"] == "running" and _claimed_by(job, self.node.process.pid):
                return job
        return None

    def _fresh_outputs(self, case: StudyCase, job: sqlite3.Row | None = None) -> int:
        """Output files (or their temporaries) written since the running job was claimed."""
        job = job if job is not None else self._running_job(case)
        claimed = _utc(job["updated_at"]) if job is not None else None
        if claimed is None:
            return 0
        folder = self.spool_root / output_series_key(case.output_series_uid)
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            return 0
        fresh = 0
        for entry in entries:
            try:
                if entry.stat().st_mtime >= claimed - 0.01:
                    fresh += 1
            except FileNotFoundError:
                fresh += 1  # a temporary renamed under us: being written right now
        return fresh

    def _delivery_state(self, case: StudyCase) -> str | None:
        rows = self._query(
            "SELECT delivery.state FROM delivery JOIN output_series "
            "ON output_series.id = delivery.output_series_id WHERE output_series.study_uid = ?",
            case.spec.study_uid,
        )
        return str(rows[0]["state"]) if rows else None

    def _await_delivery(self, case: StudyCase) -> None:
        case.delivered = True
        try:
            wait_until(
                lambda: (
                    self._delivery_state(case) == "done"
                    and self._destination_counts(case) == [case.slices]
                ),
                self.study_timeout_s,
                interval=0.05,
                what=f"study {case.index}'s synthetic series at the destination",
            )
        except TimeoutError as exc:
            self.log(f"  study {case.index}: {exc}; {self._diagnosis(case)}")

    def _destination_counts(self, case: StudyCase) -> list[int]:
        assert self.pacs is not None
        return [
            len(s["Instances"])
            for s in self.pacs.series_of_study(case.spec.study_uid)
            if s["MainDicomTags"].get("Modality") == "CT"
        ]

    def _diagnosis(self, case: StudyCase) -> str:
        jobs = [dict(j) for j in self._jobs(case)]
        return (
            f"jobs {[(j['id'], j['state'], j['attempts'], j['error']) for j in jobs]}, "
            f"delivery {self._delivery_state(case)}, destination {self._destination_counts(case)}"
        )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.node_log.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # ---------------------------------------------------------------- the final account

    def verify(self) -> Tally:
        """Checks every study end to end and fills in the tally's findings."""
        t = self.tally
        assert self.pacs is not None
        for case in self.studies:
            self._verify_received(case)
            self._verify_delivered(case)
        rows = self._query(
            "SELECT sop_instance_uid, count(*) AS n FROM instance "
            "GROUP BY sop_instance_uid HAVING n > 1"
        )
        t.duplicated += [f"SOP {r['sop_instance_uid']} indexed {r['n']} times" for r in rows]
        sops = Counter(
            str(i["MainDicomTags"].get("SOPInstanceUID"))
            for i in self.pacs.get("/instances?expand")
        )
        t.duplicated += [
            f"SOP {uid} {n} times at the destination" for uid, n in sops.items() if n > 1
        ]
        t.interrupted = sum(1 for c in self.studies if c.kills)
        for entry in self._log_events():
            if entry.get("event") == "spool.reconciled":
                t.reindexed += int(entry.get("recovered", 0))
            elif entry.get("event") == "work.released":
                t.released_jobs += int(entry.get("jobs", 0))
                t.released_deliveries += int(entry.get("deliveries", 0))
        return t

    def _verify_received(self, case: StudyCase) -> None:
        t = self.tally
        indexed = self._indexed_uids(case)
        t.acknowledged += len(case.acked)
        for uid in sorted(case.acked):
            path = self.spool_root / instance_key(case.spec.study_uid, case.series_uid, uid)
            if uid not in indexed:
                t.lost.append(f"study {case.index}: acknowledged {uid} is not indexed")
            elif not path.is_file():
                t.lost.append(f"study {case.index}: acknowledged {uid} has no spool file")
            elif str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) != uid:
                t.lost.append(f"study {case.index}: spool file of {uid} holds another instance")
        if len(case.acked) != case.slices:
            t.incomplete.append(f"study {case.index}: only {len(case.acked)} acknowledged")

    def _verify_delivered(self, case: StudyCase) -> None:
        t = self.tally
        assert self.pacs is not None
        synthetic = [
            s
            for s in self.pacs.series_of_study(case.spec.study_uid)
            if s["MainDicomTags"].get("Modality") == "CT"
        ]
        if len(synthetic) > 1:
            t.duplicated.append(f"study {case.index}: {len(synthetic)} synthetic series")
        if not synthetic:
            t.incomplete.append(
                f"study {case.index}: no synthetic series ({self._diagnosis(case)})"
            )
            return
        series = synthetic[0]
        t.delivered_series += len(synthetic)
        t.delivered_instances += sum(len(s["Instances"]) for s in synthetic)
        if series["MainDicomTags"].get("SeriesInstanceUID") != case.output_series_uid:
            t.incomplete.append(f"study {case.index}: unexpected series UID")
        if len(series["Instances"]) != case.slices:
            t.incomplete.append(
                f"study {case.index}: {len(series['Instances'])} of {case.slices} instances"
            )
            return
        runs = set()
        for instance_id in series["Instances"]:
            raw = self.pacs.get_bytes(f"/instances/{instance_id}/file")
            record = read_private_block(pydicom.dcmread(io.BytesIO(raw)))
            if record is None or record.inputs[0].instance_count != case.slices:
                t.mixed.append(f"study {case.index}: an instance from a partial input")
                return
            runs.add(record.identifier)
        if len(runs) != 1:
            t.mixed.append(f"study {case.index}: instances of {len(runs)} different runs")
        elif case.kills:
            t.recovered += 1

    def _log_events(self) -> Iterator[dict[str, Any]]:
        try:
            text = self.node_log.read_text()
        except FileNotFoundError:
            return
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def _write_config(folder: Path, port: int, pacs_port: int, keys: Path, loop: CrashLoop) -> Path:
    """The node's configuration: fast stability and polling so that a study passes every
    phase in about a second, and retry limits above what the loop's kills can use up.

    ``scheduler.job_max_attempts`` is raised from 3 to 10 on purpose: every kill during
    a job counts as a worker death on that job (the node cannot tell an external kill
    from a job that crashes it), and the loop may kill the same job more than twice."""
    return write_config(
        folder,
        {
            "node": {"port": port, "stable_seconds": loop.stable_seconds},
            "destinations": [
                {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}
            ],
            "routes": [{"model": MODEL_ID, "send_to": ["pacs"]}],
            "scheduler": {"poll_seconds": 0.1, "job_max_attempts": 10},
            "dispatch": {"backoff_initial_s": 0.2, "backoff_max_s": 1.0, "max_attempts": 50},
        },
        (keys / "signing.key", keys / "signing.crt"),
    )
