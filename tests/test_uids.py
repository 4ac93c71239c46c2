"""Deterministic output UIDs: valid 2.25 UIDs, a pure function of the inputs."""

from __future__ import annotations

import itertools
import re
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import UID

from dicom_node.dicom.uids import output_instance_uid, output_series_uid, uid_from_names
from factories import hypothesis_outside_the_tree

hypothesis_outside_the_tree()

UID_SYNTAX = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _assert_valid_2_25(uid: str) -> None:
    assert len(uid) <= 64, uid
    assert UID_SYNTAX.match(uid), uid
    assert uid.startswith("2.25.")
    assert UID(uid).is_valid
    value = int(uid[len("2.25.") :])
    assert 0 < value < 2**128
    as_uuid = uuid.UUID(int=value)
    assert as_uuid.version == 8
    assert as_uuid.variant == uuid.RFC_4122


def test_same_inputs_give_the_same_uids() -> None:
    a = output_series_uid(["1.2.3", "1.2.4"], "mr-t1t2-to-flair", "1.0.0")
    b = output_series_uid(["1.2.3", "1.2.4"], "mr-t1t2-to-flair", "1.0.0")
    assert a == b
    assert output_instance_uid(a, "1.2.3.7") == output_instance_uid(b, "1.2.3.7")


def test_uid_derivation_is_pinned_across_releases() -> None:
    """Re-running a job after an upgrade must replace its earlier output at the
    destination, not add a second series: the derivation must never change."""
    series = output_series_uid(["1.2.3"], "mr-t1-to-ct", "1.0.0")
    assert series == "2.25.59730984705397875746262311949752851258"
    assert output_instance_uid(series, "1.2.3.1") == "2.25.102146606615446899917895639747550802312"


def test_uids_differ_for_other_slices_models_versions_and_inputs() -> None:
    series = {
        output_series_uid(["1.2.3"], "mr-t1-to-ct", "1.0.0"),
        output_series_uid(["1.2.3"], "mr-t1-to-ct", "1.0.1"),
        output_series_uid(["1.2.3"], "mr-t1-to-ct-v2", "1.0.0"),
        output_series_uid(["1.2.4"], "mr-t1-to-ct", "1.0.0"),
        output_series_uid(["1.2.3", "1.2.4"], "mr-t1-to-ct", "1.0.0"),
        output_series_uid(["1.2.3", "mr-t1-to-ct"], "1.0.0", "x"),
    }
    assert len(series) == 6
    base = output_series_uid(["1.2.3"], "mr-t1-to-ct", "1.0.0")
    sources = [f"1.2.3.{k}" for k in range(500)]
    instances = [output_instance_uid(base, uid) for uid in sources]
    assert len(set(instances)) == 500
    assert base not in instances
    other = output_series_uid(["1.2.3"], "mr-t1-to-ct", "1.0.1")
    assert not set(instances) & {output_instance_uid(other, uid) for uid in sources}


def test_input_order_matters_for_multi_input_models() -> None:
    uids = {
        output_series_uid(list(order), "mr-t1t2-to-flair", "1.0.0")
        for order in itertools.permutations(["1.2.3", "1.2.4", "1.2.5"])
    }
    assert len(uids) == 6


def test_series_and_instance_namespaces_do_not_collide() -> None:
    # "instance" + (series, source) vs "series" + (inputs, model, version), same names.
    assert uid_from_names("series", "a", "0") != uid_from_names("instance", "a", "0")
    assert output_instance_uid("x", "0") != output_series_uid(["x"], "0", "")


@settings(database=None)  # no example database written into the working tree
@given(
    inputs=st.lists(st.text(min_size=1, max_size=64), min_size=1, max_size=4),
    model=st.text(max_size=64),
    version=st.text(max_size=32),
    source=st.text(alphabet="0123456789.", min_size=1, max_size=64),
)
def test_every_derived_uid_is_a_valid_2_25_uid(
    inputs: list[str], model: str, version: str, source: str
) -> None:
    series = output_series_uid(inputs, model, version)
    _assert_valid_2_25(series)
    _assert_valid_2_25(output_instance_uid(series, source))
    assert series == output_series_uid(list(inputs), model, version)


@settings(database=None)
@given(st.text(alphabet="0123456789.", max_size=20), st.text(alphabet="0123456789.", max_size=20))
def test_names_are_separated_not_concatenated(a: str, b: str) -> None:
    assert uid_from_names(a, b) != uid_from_names(a + b)
