"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from imapdesk.api.deps import EngineDep
from imapdesk.api.schemas import HealthPublic, ReadinessPublic, mailbox_readiness
from imapdesk.domain.conversations import reads

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, summary="The process is up")
def healthz() -> HealthPublic:
    return HealthPublic(status="ok")


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    summary="The database answers; each mailbox's sync state",
    description=(
        "200 when the database answers `SELECT 1`, with each mailbox's folders and their sync "
        "state (errors as booleans only: the messages are in the authenticated "
        "`/api/v1/mailboxes`). 503 when the database is unreachable."
    ),
    responses={503: {"model": ReadinessPublic, "description": "The database is unreachable."}},
)
def readyz(engine: EngineDep) -> ReadinessPublic | JSONResponse:
    try:
        with Session(engine) as session:
            session.connection().execute(text("SELECT 1"))
            views = reads.sync_overview(session)
            body = ReadinessPublic(
                status="ok", database="ok", mailboxes=[mailbox_readiness(v) for v in views]
            )
    except SQLAlchemyError as exc:
        log.warning("readiness: the database is unreachable: %s", exc)
        return JSONResponse(
            ReadinessPublic(status="unavailable", database="unreachable").model_dump(),
            status_code=503,
        )
    return body
