"""The models in ``models_dir`` as their cards describe them: what each takes and makes,
what it is for, its input guard and the quality figures measured on it.

The cards are read from the files' metadata (:mod:`inference.cardfile`), never by loading
the models, so a process serving only the API reads them cheaply; it still reports a
file whose card is unreadable. What the node actually serves (the trial run, the
providers) is `dicom-node models list`'s business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference.card import ModelCard, ModelCardError
from inference.cardfile import read_card


def guard_summary(card: ModelCard) -> str:
    """Whether a model's card carries an input guard, and for which roles."""
    if not card.guard:
        return "no input guard"
    roles = ", ".join(
        f"{role} ({g.reference_cases} reference cases, threshold {g.threshold:.2f})"
        for role, g in card.guard.items()
    )
    return f"input guard: {roles}"


def card_row(card: ModelCard, file: str) -> dict[str, Any]:
    """One model's card as the API and the dashboard show it."""
    return {
        "id": card.id,
        "version": card.version,
        "key": card.key,
        "inputs": list(card.input_roles),
        "output": {
            "role": card.output.role,
            "modality": card.output.modality,
            "units": card.output.units,
        },
        "spatial": card.spatial.mode,
        "plane": card.plane,
        "intended_use": card.intended_use,
        "training_data": card.training_data,
        "guard": guard_summary(card),
        "guarded_roles": sorted(card.guard or {}),
        "validation": dict(card.validation),
        "file": file,
    }


def model_cards(models_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every ``*.onnx`` card in ``models_dir`` in file order (a model id seen twice: the
    first file wins, as in the registry), and a problem line for each file refused."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    if not models_dir.is_dir():
        return rows, [f"{models_dir}: models folder does not exist"]
    seen: dict[str, str] = {}
    for path in sorted(models_dir.glob("*.onnx")):
        try:
            card = read_card(path)
        except (ModelCardError, OSError) as exc:
            problems.append(str(exc))
            continue
        if card.id in seen:
            problems.append(f"{path.name}: model id {card.id} already provided by {seen[card.id]}")
            continue
        seen[card.id] = path.name
        rows.append(card_row(card, path.name))
    return rows, problems
