"""The node itself in ``/api/v1``: its models, its destinations (with a C-ECHO), and who
uses it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from dicom_node.api.auth import context
from dicom_node.api.routes_outputs import Admin, Reviewer, Viewer
from dicom_node.ops import destinations
from dicom_node.ops.accounts import list_users

router = APIRouter(prefix="/api/v1")


@router.get("/models", tags=["node"])
def get_models(request: Request, _user: Viewer) -> dict[str, Any]:
    """Each model's card in ``models_dir`` (id, version, inputs, output, intended use,
    training data, input guard, the quality figures measured on it), read once when the
    API started; ``refused`` lists files whose card cannot be read."""
    rows, problems = request.app.state.models
    return {"models": rows, "refused": problems}


@router.get("/destinations", tags=["node"])
def get_destinations(request: Request, _user: Viewer) -> list[dict[str, Any]]:
    """The configured destinations and the routes that send to each."""
    return destinations.list_destinations(context(request).config)


@router.post("/destinations/{name}/echo", tags=["node"])
def echo_destination(request: Request, _user: Reviewer, name: str) -> dict[str, Any]:
    """A real C-ECHO from the node's calling AE title: ``ok``, ``status``, ``ms`` and, on
    failure, ``error`` (a failed echo is still 200: the check ran). Reviewer or admin: it
    opens a connection to a peer. 404 for a destination not configured."""
    ctx = context(request)
    try:
        destination = ctx.config.destination(name)
    except KeyError as exc:
        raise HTTPException(404, f"no destination named {name!r}") from exc
    return destinations.echo(destination, ctx.config.calling_ae_title, ctx.config.path)


@router.get("/me", tags=["users"])
def me(user: Viewer) -> dict[str, str]:
    """Who the token (or session) acts for, and their role."""
    return {"name": user.name, "role": user.role.value}


@router.get("/users", tags=["users"])
def users(request: Request, _user: Admin) -> list[dict[str, object]]:
    """Every user with their role, whether they have a password, when created or
    disabled, and their number of live tokens; never a hash."""
    with context(request).db.session() as session:
        return list_users(session)
