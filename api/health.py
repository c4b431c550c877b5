"""Liveness and readiness probes (no authentication).

`/healthz` answers from the event loop, with no database, no thread and no turn: it says the
process is up and serving, however busy its database connections are. `/readyz` asks the
database, waiting at most READY_WAIT_SECONDS for a turn at it (api/capacity.py)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from imapdesk.api.capacity import RETRY_AFTER_SECONDS, turns_of
from imapdesk.api.deps import EngineDep
from imapdesk.api.schemas import HealthPublic, ReadinessPublic, mailbox_readiness
from imapdesk.domain.conversations import reads
from imapdesk.domain.mailboxes import oauth2

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

# how long /readyz waits for a database connection before it answers 503 "busy"
READY_WAIT_SECONDS = 1.0


@router.get("/healthz", response_model=HealthPublic, summary="The process is up")
async def healthz() -> HealthPublic:
    return HealthPublic(status="ok")


def _readiness(engine: Engine) -> ReadinessPublic:
    with Session(engine) as session:
        session.connection().execute(text("SELECT 1"))
        views = reads.sync_overview(session)
        grants = oauth2.states(session)
        return ReadinessPublic(
            status="ok",
            database="ok",
            mailboxes=[
                mailbox_readiness(v, grants[v.mailbox.id].state if v.mailbox.id in grants else None)
                for v in views
            ],
        )


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    summary="The database answers; each mailbox's sync state",
    description=(
        "200 when the database answers `SELECT 1`, with each mailbox's folders and their sync "
        "state (errors as booleans only: the messages are in the authenticated "
        "`/api/v1/mailboxes`). 503 when the database is unreachable (`database`: "
        '`"unreachable"`), or when every connection stayed busy for a second (`"busy"`, with '
        "`Retry-After`)."
    ),
    responses={
        503: {"model": ReadinessPublic, "description": "The database is unreachable or busy."}
    },
)
async def readyz(request: Request, engine: EngineDep) -> ReadinessPublic | JSONResponse:
    turns = turns_of(request)
    if not await turns.take(READY_WAIT_SECONDS):
        log.warning("readiness: every database connection is busy")
        return JSONResponse(
            ReadinessPublic(status="unavailable", database="busy").model_dump(),
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    try:
        return await run_in_threadpool(_readiness, engine)
    except SQLAlchemyError as exc:
        log.warning("readiness: the database is unreachable: %s", exc)
        return JSONResponse(
            ReadinessPublic(status="unavailable", database="unreachable").model_dump(),
            status_code=503,
        )
    finally:
        turns.give_back()
