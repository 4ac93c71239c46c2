"""Routing: roles, decisions, synthetic marks, fingerprints, and job rows in a database."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicom_node.config import Route
from dicom_node.evidence.provenance import PRIVATE_CREATOR, PRIVATE_GROUP
from dicom_node.roles.defaults import DEFAULT_ROLES
from dicom_node.roles.rules import RoleRule
from dicom_node.route.routing import (
    Decision,
    SeriesInfo,
    classify,
    decide,
    fingerprint,
    is_synthetic,
    record_decisions,
    study_roles,
)
from inference.card import ModelCard
from onnx_models import linear_card
from storage.database import Database
from storage.models import AuditEvent, Job, JobState, Study, StudyState

MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

CT_CARD = linear_card()
FLAIR_CARD = linear_card(
    model_id="mr-t1t2-to-flair",
    roles=("T1", "T2"),
    output_role="FLAIR",
    modality="MR",
    value_range=(0.0, 4095.0),
)
CARDS: dict[str, ModelCard] = {CT_CARD.id: CT_CARD, FLAIR_CARD.id: FLAIR_CARD}
CT_ROUTE = Route(model=CT_CARD.id, send_to=["pacs"])
FLAIR_ROUTE = Route(model=FLAIR_CARD.id, send_to=["pacs"])


def _header(
    description: str = "T1 MPRAGE", modality: str = "MR", sop_class: str | None = None, **attrs: Any
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class or (CT if modality == "CT" else MR)
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows, ds.Columns = 64, 64
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def _series(
    description: str = "T1 MPRAGE",
    modality: str = "MR",
    instances: int = 3,
    number: int | None = None,
    header: Dataset | None = None,
    **attrs: Any,
) -> SeriesInfo:
    return SeriesInfo(
        series_uid=generate_uid(),
        header=header if header is not None else _header(description, modality, **attrs),
        sop_instance_uids=tuple(generate_uid() for _ in range(instances)),
        series_number=number,
    )


def _mark_synthetic(ds: Dataset, mark: str) -> Dataset:
    if mark == "SyntheticData":
        ds.SyntheticData = "YES"
    elif mark == "ContributingEquipment":
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "109100", "DCM"
        code.CodeMeaning = "Synthesizing Equipment"
        item = Dataset()
        item.Manufacturer = "dicom-node"
        item.PurposeOfReferenceCodeSequence = [code]
        ds.ContributingEquipmentSequence = [item]
    elif mark == "private-creator":
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(0x01, "UT", "{}")
    else:
        raise ValueError(mark)
    return ds


SYNTHETIC_MARKS = ["SyntheticData", "ContributingEquipment", "private-creator"]


def _only(decisions: list[Decision]) -> Decision:
    assert len(decisions) == 1
    return decisions[0]


# --- decide ----------------------------------------------------------------------------


def test_t1_present_and_ct_missing_plans_a_job_on_the_t1() -> None:
    t1 = _series("T1 MPRAGE", instances=5)
    d = _only(decide([t1], DEFAULT_ROLES, [CT_ROUTE], CARDS, None))
    assert d.plan is not None
    assert d.plan.inputs == (t1,)
    assert d.plan.card == CT_CARD
    assert d.plan.send_to == ("pacs",)
    assert d.reason == "inputs present, output missing"


def test_real_ct_present_means_no_job_and_says_so() -> None:
    series = [_series("T1 MPRAGE"), _series("Head 2mm", modality="CT")]
    d = _only(decide(series, DEFAULT_ROLES, [CT_ROUTE], CARDS, None))
    assert d.plan is None
    assert d.reason == "CT already present"


def test_study_without_the_input_role_gets_no_job() -> None:
    d = _only(decide([_series("T2 TSE")], DEFAULT_ROLES, [CT_ROUTE], CARDS, None))
    assert d.plan is None
    assert d.reason == "missing input roles ['T1']"


def test_route_to_a_model_that_is_not_loaded_gets_no_job() -> None:
    d = _only(decide([_series()], DEFAULT_ROLES, [CT_ROUTE], {}, None))
    assert (d.plan, d.reason) == (None, "model not loaded")


@pytest.mark.parametrize("mark", SYNTHETIC_MARKS)
def test_own_synthetic_ct_neither_counts_as_present_nor_changes_the_plan(mark: str) -> None:
    t1 = _series("T1 MPRAGE")
    synthetic_ct = _series(
        header=_mark_synthetic(_header("SYNTHETIC Head", modality="CT"), mark), instances=5
    )
    roles = study_roles([t1, synthetic_ct], DEFAULT_ROLES)
    assert (synthetic_ct.series_uid, "synthetic") in roles.ignored
    assert not roles.present("CT")

    before = _only(decide([t1], DEFAULT_ROLES, [CT_ROUTE], CARDS, None))
    after = _only(decide([synthetic_ct, t1], DEFAULT_ROLES, [CT_ROUTE], CARDS, None))
    assert before.plan is not None and after.plan is not None
    assert after.plan.inputs == (t1,)
    assert after.plan.fingerprint == before.plan.fingerprint


@pytest.mark.parametrize("mark", SYNTHETIC_MARKS)
def test_synthetic_series_is_never_an_input(mark: str) -> None:
    synthetic_t1 = _series(header=_mark_synthetic(_header("T1 MPRAGE"), mark))
    d = _only(decide([synthetic_t1], DEFAULT_ROLES, [CT_ROUTE], CARDS, None))
    assert d.plan is None
    assert d.reason == "missing input roles ['T1']"


def test_multi_input_model_waits_for_every_input_then_orders_them_as_its_card() -> None:
    t1, t2, flair = _series("T1 SE"), _series("T2 TSE"), _series("T2 FLAIR")
    routes = [FLAIR_ROUTE]

    missing = _only(decide([t1], DEFAULT_ROLES, routes, CARDS, None))
    assert (missing.plan, missing.reason) == (None, "missing input roles ['T2']")

    ready = _only(decide([t2, t1], DEFAULT_ROLES, routes, CARDS, None))
    assert ready.plan is not None
    assert ready.plan.inputs == (t1, t2)

    present = _only(decide([t1, t2, flair], DEFAULT_ROLES, routes, CARDS, None))
    assert (present.plan, present.reason) == (None, "FLAIR already present")


def test_each_route_is_decided_independently() -> None:
    t1, t2 = _series("T1 SE"), _series("T2 TSE")
    decisions = decide([t1, t2], DEFAULT_ROLES, [CT_ROUTE, FLAIR_ROUTE], CARDS, None)
    assert [d.model for d in decisions] == [CT_CARD.id, FLAIR_CARD.id]
    assert all(d.plan is not None for d in decisions)
    decisions = decide([t1], DEFAULT_ROLES, [CT_ROUTE, FLAIR_ROUTE], CARDS, None)
    assert [d.plan is not None for d in decisions] == [True, False]


# --- classify ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "modality", "roles"),
    [
        ("T1 MPRAGE", "MR", {"T1"}),
        ("t1_mprage_sag_p2_iso", "MR", {"T1"}),
        ("T2 TSE axial", "MR", {"T2"}),
        ("T2 FLAIR", "MR", {"FLAIR"}),
        ("t2_flair_tra", "MR", {"FLAIR"}),
        ("T1 FLAIR post", "MR", {"T1"}),  # T1-weighted; FLAIR means T2-FLAIR
        ("3D Flair", "MR", {"FLAIR"}),
        ("DWI b1000", "MR", set()),
        ("T1 MPRAGE", "CT", {"CT"}),
        ("Head 2mm", "CT", {"CT"}),
    ],
)
def test_default_roles_classify_by_modality_and_description(
    description: str, modality: str, roles: set[str]
) -> None:
    assert classify(_header(description, modality), DEFAULT_ROLES) == frozenset(roles)


def test_t2_flair_is_flair_so_a_study_with_t1_and_t2_flair_lacks_t2() -> None:
    series = [_series("T1 SE"), _series("T2 FLAIR")]
    roles = study_roles(series, DEFAULT_ROLES)
    assert roles.present("T1") and roles.present("FLAIR") and not roles.present("T2")


ECHO_ROLES: dict[str, RoleRule] = {
    "T2": {"Modality": "^MR$", "EchoTime": (80.0, 120.0)},
    "T1": {"Modality": "^MR$", "EchoTime": (0.0, 20.0)},
}


@pytest.mark.parametrize(
    ("echo_time", "roles"),
    [(100.0, {"T2"}), (80.0, {"T2"}), (120.0, {"T2"}), (120.5, set()), (3.0, {"T1"}), (50, set())],
)
def test_numeric_range_rule_is_inclusive_on_both_ends(echo_time: float, roles: set[str]) -> None:
    assert classify(_header("whatever", EchoTime=echo_time), ECHO_ROLES) == frozenset(roles)


def test_range_rule_does_not_match_a_missing_or_non_numeric_value() -> None:
    assert classify(_header("no TE"), ECHO_ROLES) == frozenset()
    header = _header("odd TE")
    header.add_new(0x00180081, "LO", "long")  # EchoTime with a non-numeric value
    assert classify(header, ECHO_ROLES) == frozenset()


MAGNITUDE_ROLES: dict[str, RoleRule] = {
    "T1": {"Modality": "^MR$", "ImageType": r"^ORIGINAL\\PRIMARY\\M(\\|$)"},
}


@pytest.mark.parametrize(
    ("image_type", "matches"),
    [
        (["ORIGINAL", "PRIMARY", "M", "ND"], True),
        (["ORIGINAL", "PRIMARY", "M"], True),
        (["ORIGINAL", "PRIMARY", "P", "ND"], False),
        (["ORIGINAL", "PRIMARY", "MPR"], False),
        (["DERIVED", "PRIMARY", "M", "ND"], False),
        ("ORIGINAL", False),
    ],
)
def test_multi_valued_image_type_is_matched_as_backslash_joined_text(
    image_type: str | list[str], matches: bool
) -> None:
    header = _header("anything", ImageType=image_type)
    assert classify(header, MAGNITUDE_ROLES) == (frozenset({"T1"}) if matches else frozenset())


@pytest.mark.parametrize(
    ("sop_class", "rows"),
    [(ENHANCED_SR, False), (ENCAPSULATED_PDF, False), (SEGMENTATION, True)],
    ids=["SR", "encapsulated-PDF", "segmentation"],
)
def test_non_image_series_are_ignored_even_when_their_header_matches_a_role(
    sop_class: str, rows: bool
) -> None:
    header = _header("T1 MPRAGE report", sop_class=sop_class)
    if not rows:
        del header.Rows
        del header.Columns
    other = _series(header=header)
    roles = study_roles([other], DEFAULT_ROLES)
    assert roles.ignored == [(other.series_uid, "not an image series")]
    d = _only(decide([other], DEFAULT_ROLES, [CT_ROUTE], CARDS, None))
    assert d.plan is None


def test_series_matching_no_role_is_listed_as_ignored() -> None:
    dwi = _series("DWI b1000")
    assert study_roles([dwi], DEFAULT_ROLES).ignored == [(dwi.series_uid, "no role matches")]


# --- choosing between candidates ---------------------------------------------------------


def _chosen(series: list[SeriesInfo]) -> SeriesInfo:
    d = _only(decide(series, DEFAULT_ROLES, [CT_ROUTE], CARDS, None))
    assert d.plan is not None
    (chosen,) = d.plan.inputs
    return chosen


def test_choice_between_candidate_t1_series_does_not_depend_on_their_order() -> None:
    candidates = [
        _series("T1 SE", instances=20, number=5),
        _series("T1 MPRAGE", instances=176, number=7),
        _series("T1 MPRAGE repeat", instances=176, number=9),
        _series("T1/T2 combined", instances=300, number=1),  # plays two roles: last resort
    ]
    choices = {_chosen(list(p)).series_uid for p in itertools.permutations(candidates)}
    assert choices == {candidates[1].series_uid}


def test_candidates_with_equal_slices_and_number_are_split_by_series_uid() -> None:
    a = SeriesInfo("1.2.3.5", _header("T1 a"), ("1", "2"), 4)
    b = SeriesInfo("1.2.3.4", _header("T1 b"), ("3", "4"), 4)
    assert _chosen([a, b]) is b
    assert _chosen([b, a]) is b


def test_a_series_playing_only_the_role_beats_a_bigger_one_playing_two() -> None:
    only_t1 = _series("T1 SE", instances=10, number=8)
    both = _series("T1 T2 mixed", instances=100, number=1)
    assert _chosen([both, only_t1]) is only_t1


# --- send_to -----------------------------------------------------------------------------


def test_sender_resolves_to_its_destination_when_the_sender_is_configured() -> None:
    route = Route(model=CT_CARD.id, send_to=["pacs", "sender"])
    d = _only(decide([_series()], DEFAULT_ROLES, [route], CARDS, "ris"))
    assert d.plan is not None
    assert d.plan.send_to == ("pacs", "ris")


def test_sender_is_dropped_when_the_calling_ae_is_no_configured_destination() -> None:
    route = Route(model=CT_CARD.id, send_to=["sender", "pacs"])
    d = _only(decide([_series()], DEFAULT_ROLES, [route], CARDS, None))
    assert d.plan is not None
    assert d.plan.send_to == ("pacs",)
    assert "sender" not in d.plan.send_to


def test_a_route_that_would_send_nowhere_runs_no_job() -> None:
    route = Route(model=CT_CARD.id, send_to=["sender"])
    d = _only(decide([_series()], DEFAULT_ROLES, [route], CARDS, None))
    assert d.plan is None
    assert d.reason == "no destination: the sender is not a configured destination"


def test_a_destination_named_twice_is_sent_to_once() -> None:
    route = Route(model=CT_CARD.id, send_to=["pacs", "sender"])
    d = _only(decide([_series()], DEFAULT_ROLES, [route], CARDS, "pacs"))
    assert d.plan is not None and d.plan.send_to == ("pacs",)


# --- is_synthetic ------------------------------------------------------------------------


@pytest.mark.parametrize("mark", SYNTHETIC_MARKS)
def test_each_synthetic_mark_alone_is_recognised(mark: str) -> None:
    assert is_synthetic(_mark_synthetic(_header(), mark))


def test_acquired_image_and_look_alike_marks_are_not_synthetic() -> None:
    assert not is_synthetic(_header())
    assert not is_synthetic(_header(SyntheticData="NO"))

    other_purpose = _header()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "109101", "DCM"  # Acquisition Equipment
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [code]
    other_purpose.ContributingEquipmentSequence = [item]
    assert not is_synthetic(other_purpose)

    other_scheme = _header()
    code2 = Dataset()
    code2.CodeValue, code2.CodingSchemeDesignator = "109100", "99LOCAL"
    item2 = Dataset()
    item2.PurposeOfReferenceCodeSequence = [code2]
    other_scheme.ContributingEquipmentSequence = [item2]
    assert not is_synthetic(other_scheme)

    other_creator = _header()
    other_creator.private_block(PRIVATE_GROUP, "SOME VENDOR", create=True).add_new(1, "LO", "x")
    assert not is_synthetic(other_creator)


def test_synthetic_data_mark_is_case_insensitive() -> None:
    with pytest.warns(UserWarning, match="Invalid value for VR CS"):
        header = _header(SyntheticData="yes")
    assert is_synthetic(header)


# --- fingerprint -------------------------------------------------------------------------


def test_fingerprint_ignores_instance_order_and_changes_with_an_added_instance() -> None:
    s = _series(instances=4)
    reordered = SeriesInfo(s.series_uid, s.header, tuple(reversed(s.sop_instance_uids)))
    grown = SeriesInfo(s.series_uid, s.header, (*s.sop_instance_uids, generate_uid()))
    shrunk = SeriesInfo(s.series_uid, s.header, s.sop_instance_uids[:-1])
    assert fingerprint([s]) == fingerprint([reordered])
    assert fingerprint([grown]) != fingerprint([s])
    assert fingerprint([shrunk]) != fingerprint([s])


def test_fingerprint_depends_on_series_identity_and_input_order() -> None:
    a, b = _series(), _series()
    renamed = SeriesInfo(generate_uid(), a.header, a.sop_instance_uids)
    assert fingerprint([a]) != fingerprint([renamed])
    assert fingerprint([a, b]) != fingerprint([b, a])
    # An instance moved from one series to the other is a different input.
    moved = (
        SeriesInfo(a.series_uid, a.header, a.sop_instance_uids[:-1]),
        SeriesInfo(b.series_uid, b.header, (*b.sop_instance_uids, a.sop_instance_uids[-1])),
    )
    assert fingerprint(moved) != fingerprint([a, b])


# --- record_decisions against SQLite -----------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("sqlite:///" + str(tmp_path / "x.db"))
    yield database
    database.dispose()


def _study(db: Database, uid: str) -> int:
    with db.session() as session:
        study = Study(
            study_uid=uid,
            state=StudyState.RECEIVING,
            first_received_at=NOW,
            last_received_at=NOW,
        )
        session.add(study)
        session.flush()
        return study.id


def _route(db: Database, study_id: int, series: list[SeriesInfo], card: ModelCard = CT_CARD) -> int:
    """Routes like the scheduler does; returns how many jobs were created."""
    with db.session() as session:
        study = session.get(Study, study_id)
        assert study is not None
        decisions = decide(series, DEFAULT_ROLES, [CT_ROUTE], {CT_CARD.id: card}, None)
        return len(record_decisions(session, study, decisions, NOW))


def _jobs(db: Database) -> list[Job]:
    with db.session() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def test_rerouting_the_same_inputs_creates_no_second_job(db: Database) -> None:
    study_id = _study(db, "1.2.3")
    t1 = _series(instances=4)
    assert _route(db, study_id, [t1]) == 1
    assert _route(db, study_id, [t1]) == 0
    (job,) = _jobs(db)
    assert job.state == JobState.PENDING
    assert job.input_series == [t1.series_uid]
    assert job.send_to == ["pacs"]
    assert (job.model_id, job.model_version) == (CT_CARD.id, CT_CARD.version)
    with db.session() as session:
        reasons = [e.detail["reason"] for e in session.scalars(select(AuditEvent))]
    assert reasons == ["inputs present, output missing", f"already decided as job {job.id}"]


def test_routed_back_synthetic_output_creates_no_second_job(db: Database) -> None:
    study_id = _study(db, "1.2.3")
    t1 = _series(instances=4)
    assert _route(db, study_id, [t1]) == 1
    own_output = _series(
        header=_mark_synthetic(_header("SYNTHETIC T1", modality="CT"), "SyntheticData"),
        instances=4,
    )
    assert _route(db, study_id, [t1, own_output]) == 0
    assert len(_jobs(db)) == 1


def test_added_input_instances_create_a_new_job(db: Database) -> None:
    study_id = _study(db, "1.2.3")
    t1 = _series(instances=4)
    assert _route(db, study_id, [t1]) == 1
    grown = SeriesInfo(t1.series_uid, t1.header, (*t1.sop_instance_uids, generate_uid()))
    assert _route(db, study_id, [grown]) == 1
    first, second = _jobs(db)
    assert first.fingerprint != second.fingerprint
    assert second.input_series == [t1.series_uid]


def test_a_new_model_version_creates_a_new_job(db: Database) -> None:
    study_id = _study(db, "1.2.3")
    t1 = _series(instances=4)
    assert _route(db, study_id, [t1]) == 1
    assert _route(db, study_id, [t1], card=linear_card(version="1.1.0")) == 1
    assert [j.model_version for j in _jobs(db)] == ["1.0.0", "1.1.0"]


def test_same_inputs_in_another_study_are_a_separate_job(db: Database) -> None:
    t1 = _series(instances=4)
    assert _route(db, _study(db, "1.2.3"), [t1]) == 1
    assert _route(db, _study(db, "1.2.4"), [t1]) == 1
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2


def test_every_decision_leaves_an_audit_row_with_its_reason(db: Database) -> None:
    study_id = _study(db, "1.2.9")
    with db.session() as session:
        study = session.get(Study, study_id)
        assert study is not None
        decisions = decide([_series("T1 SE")], DEFAULT_ROLES, [CT_ROUTE, FLAIR_ROUTE], CARDS, None)
        record_decisions(session, study, decisions, NOW)
    with db.session() as session:
        events = [
            (e.kind, e.study_uid, e.detail)
            for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]
    assert events == [
        ("route.job", "1.2.9", {"model": CT_CARD.id, "reason": "inputs present, output missing"}),
        ("route.skip", "1.2.9", {"model": FLAIR_CARD.id, "reason": "missing input roles ['T2']"}),
    ]
