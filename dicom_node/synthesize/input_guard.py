"""The input guard in a synthesis job: judge every input series before the model runs.

The judging itself is ``inference.guard`` (signature, score, threshold from the model
card); this module applies the route's ``input_guard`` mode to a job's decoded inputs
and turns a refusal into a job error that names the series, its role, the model, the
score and the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

from dicom_node.evidence.provenance import GuardRecord, RoleAssessment
from dicom_node.synthesize.volume import SeriesVolume
from inference.card import ModelCard
from inference.guard import assess

OUT_OF_DISTRIBUTION_MARK = "INPUT OUT OF DISTRIBUTION"
"""What a ``warn`` route's output says, in Image Comments, when an input was refused."""


class InputRefused(ValueError):
    """An input series does not look like what the model was trained on."""


def assess_inputs(
    card: ModelCard, sources: Sequence[SeriesVolume], mode: str
) -> GuardRecord | None:
    """The guard's assessment of every input the card has a reference for (None when
    ``mode`` is ``off``); a card without a guard gets a record saying none was
    available."""
    if mode == "off":
        return None
    if card.guard is None:
        return GuardRecord(mode, available=False)
    assessments = []
    for role, source in zip(card.input_roles, sources, strict=True):
        reference = card.guard.get(role)
        if reference is None:
            continue
        verdict = assess(source.volume, reference)
        assessments.append(
            RoleAssessment(
                role=role,
                series_uid=source.series_uid,
                accepted=verdict.accepted,
                score=round(verdict.score, 3),
                threshold=round(verdict.threshold, 3),
                feature=verdict.feature,
                reference_cases=verdict.reference_cases,
            )
        )
    return GuardRecord(mode, available=True, inputs=tuple(assessments))


def refusal_message(card: ModelCard, refused: RoleAssessment) -> str:
    """Why the job was refused, naming the series, its role, model, score and threshold."""
    return (
        f"input guard refused series {refused.series_uid} (role {refused.role}) for model "
        f"{card.key}: score {refused.score:.2f} > threshold {refused.threshold:.2f} "
        f"(most atypical feature: {refused.feature}); it does not look like the "
        f"{refused.role} series the model was trained on"
    )


def enforce(card: ModelCard, record: GuardRecord | None) -> None:
    """Raises :class:`InputRefused` for the first refused input of a ``refuse`` route."""
    if record is None or record.mode != "refuse" or not record.refused:
        return
    raise InputRefused(refusal_message(card, record.refused[0]))
