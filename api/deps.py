"""Request dependencies: the session (the request's unit of work, and the same for a route that
writes), settings, the API caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.domain.accounts.agents import agent_for_token
from imapdesk.kernel.errors import Forbidden, NotAuthenticated
from imapdesk.kernel.models import Agent
from imapdesk.kernel.settings import Settings

# The largest id a row can have: ids are the schema's INTEGER, 32 bits on PostgreSQL. A larger
# one in a path asks for no row that could exist and is invalid input, the same on both
# databases, instead of reaching a driver or column that cannot hold it.
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
# the same for an id sent in a form or a body
IdValue = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: commits when the route succeeds, rolls back when it raises."""
    with Session(get_engine(request), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# scope="function": commit before the response is sent, so a failed commit is an error response
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_write_session(session: SessionDep) -> Session:
    """The request's session for a route that writes: on SQLite it takes the write lock up
    front (BEGIN IMMEDIATE, waiting its turn), so that concurrent writers queue instead of the
    second failing with "database is locked" when its read turns into a write. Declare it
    before the caller (the agent), so the transaction opens before that read."""
    session.connection(execution_options={"sqlite_immediate": True})
    return session


WriteSessionDep = Annotated[Session, Depends(get_write_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]


class BearerChallenge(NotAuthenticated):
    """401 with the RFC 6750 challenge in `WWW-Authenticate`."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        challenge = 'Bearer realm="imapdesk"'
        if error:
            challenge += f', error="{error}"'
        self.headers = {"WWW-Authenticate": challenge}


_bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `imapdesk token create EMAIL`.",
)


def current_agent(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Agent:
    if credentials is None:
        raise BearerChallenge("an API token is required: send `Authorization: Bearer <token>`")
    agent = agent_for_token(session, credentials.credentials)
    if agent is None:
        raise BearerChallenge("the API token is invalid or revoked", error="invalid_token")
    if not agent.is_active:
        raise Forbidden("this agent is deactivated")
    return agent


CurrentAgent = Annotated[Agent, Depends(current_agent)]
