"""The dashboard's pages: studies, one study, the review queue, the outbox, models and
destinations. Each reads through dicom_node.ops and renders a server-side template;
the only script fetches previews and job progress."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from dicom_node.api.auth import context
from dicom_node.api.evidence_cache import evidence
from dicom_node.api.rendering import render
from dicom_node.api.routes_outputs import output_item
from dicom_node.api.signin import Visitor, fragment_visitor, page_visitor
from dicom_node.ops import destinations, jobs, outbox, review
from dicom_node.ops.outputs import output_ids, study_headers, study_outputs
from dicom_node.ops.previews import CT_WINDOWS
from dicom_node.ops.studies import list_studies, study_detail

router = APIRouter(include_in_schema=False)
Page = Annotated[Visitor, Depends(page_visitor)]
Fragment = Annotated[Visitor, Depends(fragment_visitor)]


def _studies(request: Request) -> list[dict[str, Any]]:
    ctx = context(request)
    config = ctx.config
    with ctx.db.session() as session:
        rows = list_studies(session, ctx.spool, config.series_roles, config.series_exclusions)
        headers = study_headers(session)
    for row in rows:
        row["header"] = headers.get(row["study_uid"], {})
    return rows


@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request, user: Page) -> HTMLResponse:
    """Every study, newest first, with its state and its series' roles and outputs."""
    return render(request, user, "studies.html", studies=list(reversed(_studies(request))))


@router.get("/studies/{study_uid}", response_class=HTMLResponse)
def study_page(request: Request, user: Page, study_uid: str) -> HTMLResponse:
    """One study: its series, its jobs with live progress, and each output with its
    previews, provenance, evidence and review."""
    ctx = context(request)
    config = ctx.config
    with ctx.db.session() as session:
        study = study_detail(
            session, ctx.spool, config.series_roles, config.series_exclusions, study_uid
        )
        if study is None:
            raise HTTPException(404, "no such study on this node")
        study["header"] = study_headers(session).get(study_uid, {})
        modality = {s["series_uid"]: s["modality"] for s in study["series"]}
        queue = review.review_queue(session, ctx.clock())
        held = {r["series_uid"]: r for r in queue}
        outputs = []
        for output in study_outputs(session, study_uid):
            item = output_item(session, output, ctx.spool)
            item["provenance"] = output.provenance
            hold = held.get(output.series_uid, {})
            item["version"] = hold.get("version")
            item["held_since"] = hold.get("awaiting_since")
            item["windows"] = list(CT_WINDOWS) if modality.get(output.series_uid) == "CT" else []
            item["evidence"] = evidence(request, session, output)
            outputs.append(item)
    return render(request, user, "study.html", study=study, outputs=outputs)


@router.get("/studies/{study_uid}/jobs.json")
def study_jobs(request: Request, _user: Fragment, study_uid: str) -> JSONResponse:
    """The study's jobs, for the study page's progress to poll."""
    ctx = context(request)
    with ctx.db.session() as session:
        rows = [j for j in jobs.list_jobs(session) if j["study_uid"] == study_uid]
    return JSONResponse(rows, headers={"Cache-Control": "no-store"})


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, user: Page) -> HTMLResponse:
    """The output series awaiting review, oldest first, with how long each waited."""
    ctx = context(request)
    with ctx.db.session() as session:
        queue = review.review_queue(session, ctx.clock())
        ids = output_ids(session, [row["series_uid"] for row in queue])
        headers = study_headers(session)
    for row in queue:
        row["output_id"] = ids.get(row["series_uid"])
        row["header"] = headers.get(row["study_uid"], {})
    return render(request, user, "review.html", queue=queue)


@router.get("/outbox", response_class=HTMLResponse)
def outbox_page(request: Request, user: Page) -> HTMLResponse:
    """Every delivery, newest first; admins may send again."""
    ctx = context(request)
    with ctx.db.session() as session:
        deliveries = list(reversed(outbox.list_deliveries(session)))
    return render(request, user, "outbox.html", deliveries=deliveries)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, user: Page) -> HTMLResponse:
    """The models in the models folder, with their cards, quality figures and routes."""
    config = context(request).config
    read, problems = request.app.state.models
    routed = {r.model: r for r in config.routes}
    cards = []
    for card in read:
        route = routed.get(card["id"])
        shown = {"send_to": route.send_to, "review": route.review} if route else None
        cards.append(card | {"route": shown})
    return render(request, user, "models.html", cards=cards, problems=problems)


@router.get("/destinations", response_class=HTMLResponse)
def destinations_page(request: Request, user: Page) -> HTMLResponse:
    """The configured destinations, each with the last C-ECHO's answer."""
    echoes = request.app.state.echo_results
    rows = destinations.list_destinations(context(request).config)
    for row in rows:
        row["echo"] = echoes.get(row["name"])
    return render(request, user, "destinations.html", destinations=rows)
