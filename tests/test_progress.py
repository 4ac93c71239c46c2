"""A job's progress: inference reports (done, total) over every pass, the synthesize
stage writes it to the job row without holding inference up, and the cards of the
models are read from their files without loading them."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from dicom_node.synthesize.progress import ProgressWriter
from inference.card import ModelCardError, Spatial3D, Spatial25D
from inference.cardfile import read_card
from inference.geometry import Geometry, Volume
from inference.predict import Augmentation, translate_with_spread
from inference.registry import load_model
from inference.reorient import predict_in_plane
from onnx_models import conv1x1_model, linear_card
from storage.database import Database
from storage.models import Job, JobState, Study

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def _volume(shape: tuple[int, int, int]) -> Volume:
    geometry = Geometry(
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(1.0, 1.0, 1.0),
        shape=shape,
    )
    return Volume(np.random.default_rng(0).random(shape, dtype=np.float32) * 100, geometry)


def _calls(
    tmp_path: Path, spatial: Spatial25D | Spatial3D | None, augmentation: Augmentation | None
) -> list[tuple[int, int]]:
    card = linear_card(spatial=spatial)
    model = load_model(
        conv1x1_model(tmp_path / "m.onnx", card, weights=[1.0] * card.channels, bias=0.0),
        ["CPUExecutionProvider"],
        intra_op_threads=1,
    )
    seen: list[tuple[int, int]] = []
    predict_in_plane(model, [_volume((7, 8, 8))], 3, augmentation, lambda d, t: seen.append((d, t)))
    return seen


@pytest.mark.parametrize(
    ("augmentation", "total"),
    [
        (None, 7),
        (Augmentation(), 14),
        (Augmentation(intensity_gain=1.05), 21),
    ],
    ids=["one pass", "mirrored", "mirrored and gained"],
)
def test_progress_counts_every_slice_of_every_pass(
    tmp_path: Path, augmentation: Augmentation | None, total: int
) -> None:
    seen = _calls(tmp_path, None, augmentation)
    done = [d for d, _ in seen]
    assert {t for _, t in seen} == {total}
    assert done[0] == 0 and done[-1] == total
    assert done == sorted(done) and len(set(done)) == len(done), "strictly rising"
    assert max(b - a for a, b in itertools.pairwise(done)) <= 3, "after each batch"


def test_progress_of_a_25d_model_counts_slices(tmp_path: Path) -> None:
    seen = _calls(tmp_path, Spatial25D(slices=3), None)
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)


def test_progress_of_a_3d_model_counts_patches(tmp_path: Path) -> None:
    seen = _calls(tmp_path, Spatial3D(patch=(4, 4, 4), overlap=0.5), Augmentation())
    # corners per axis: slices 0, 2, 3; rows and columns 0, 2, 4: 27 patches a pass
    assert seen[0] == (0, 54) and seen[-1] == (54, 54)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_without_a_callback_nothing_changes(tmp_path: Path) -> None:
    card = linear_card()
    model = load_model(
        conv1x1_model(tmp_path / "m.onnx", card, weights=[2.0], bias=-1.0),
        ["CPUExecutionProvider"],
    )
    volume = _volume((3, 8, 8))
    plain = translate_with_spread(model, [volume], 2, Augmentation(mirror=False))
    followed = translate_with_spread(
        model, [volume], 2, Augmentation(mirror=False), progress=lambda d, t: None
    )
    assert np.array_equal(plain.output.array, followed.output.array)


@pytest.fixture
def job_db(tmp_path: Path) -> tuple[Database, int]:
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    with db.session() as session:
        study = Study(study_uid="1.2.3", first_received_at=NOW, last_received_at=NOW)
        job = Job(
            study=study,
            model_id="m",
            model_version="1",
            input_series=["1.2.3.1"],
            fingerprint="f" * 64,
            send_to=[],
            state=JobState.RUNNING,
            created_at=NOW,
            updated_at=NOW,
            claim="mine",
        )
        session.add(job)
        session.flush()
        return db, job.id


def _progress(db: Database) -> tuple[int, int]:
    with db.session() as session:
        job = session.scalars(select(Job)).one()
        return job.slices_done, job.slices_total


def test_the_writer_throttles_and_always_writes_the_last_figure(
    job_db: tuple[Database, int],
) -> None:
    db, job_id = job_db
    with ProgressWriter(db, job_id, "mine", interval_s=60) as progress:
        progress(0, 100)
        deadline = time.monotonic() + 10
        while _progress(db) != (0, 100) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _progress(db) == (0, 100), "the first figure is written at once"
        for done in range(1, 101):
            progress(done, 100)
        time.sleep(0.3)
        assert _progress(db) == (0, 100), "then no more than once per interval"
    assert _progress(db) == (100, 100), "the last figure when the run ends"


def test_a_writer_whose_claim_was_lost_writes_nothing(job_db: tuple[Database, int]) -> None:
    db, job_id = job_db
    with ProgressWriter(db, job_id, "someone else's", interval_s=0.01) as progress:
        progress(5, 10)
    assert _progress(db) == (0, 0)


def test_a_card_is_read_from_the_file_as_the_registry_reads_it(tmp_path: Path) -> None:
    card = linear_card(spatial=Spatial25D(slices=5))
    path = conv1x1_model(tmp_path / "m.onnx", card, weights=[0.2] * 5, bias=0.0)
    assert read_card(path) == card == load_model(path, ["CPUExecutionProvider"]).card
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 20)
    with pytest.raises(ModelCardError, match=r"junk\.onnx"):
        read_card(tmp_path / "junk.onnx")
