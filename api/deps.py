"""Request dependencies: the session (the request's unit of work; a route that writes takes
the write the one way, `take_write`), settings, the API caller."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.api.capacity import DatabaseTurn
from imapdesk.domain.accounts.agents import record_token_use, token_holder, token_use_due
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


def get_session(request: Request, _turn: DatabaseTurn) -> Iterator[Session]:
    """One session per request: commits when the route succeeds, rolls back when it raises.
    Opened once the request has its turn at the database (api/capacity.py)."""
    with Session(get_engine(request), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# scope="function": commit before the response is sent, so a failed commit is an error response
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


# Session.info's mark of a session that holds the write (see take_write)
_WRITES = "imapdesk.writes"


def take_write(session: Session) -> None:
    """From here on the request's session writes. On SQLite it takes the write lock up front
    (BEGIN IMMEDIATE, waiting its turn with busy_timeout), so that concurrent writers queue
    instead of the second failing with "database is locked" when its read turns into a write;
    what the request read so far ends with its read transaction (it wrote nothing), so take
    the write before the reads that decide what to write. The same code on PostgreSQL. A
    route with a slow step (hashing a password, a connection test) takes it after that step."""
    if session.info.get(_WRITES):
        return
    session.commit()
    session.connection(execution_options={"sqlite_immediate": True})
    session.info[_WRITES] = True


def release(session: Session) -> None:
    """End the request's reads so far, giving the connection back to the pool before a slow
    step that needs no database (a password's hash, a connection test); reads after it start
    afresh. Only before take_write: a write is never split."""
    assert not writes(session), "release() after take_write() would commit half a write"
    session.commit()


def writes(session: Session) -> bool:
    """Whether the request's session holds the write (take_write)."""
    return bool(session.info.get(_WRITES))


@contextmanager
def bookkeeping_write(session: Session) -> Iterator[Session]:
    """A small write a reading request makes in passing (when a token or a browser session
    was last used, a sign-in attempt): in a request that writes, part of its transaction; in
    one that reads, a short transaction of its own on the same session, committed at the end
    of the block, so that the read never turns into a write ("database is locked" on SQLite)
    and the request never holds two connections. Reads after the block start afresh."""
    if writes(session):
        yield session
        return
    session.commit()
    session.connection(execution_options={"sqlite_immediate": True})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def get_write_session(session: SessionDep) -> Session:
    """The request's session for a route that writes (take_write). Declare it before the
    caller (the agent), so the transaction opens before that read."""
    take_write(session)
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
    found = token_holder(session, credentials.credentials)
    if found is None:
        raise BearerChallenge("the API token is invalid or revoked", error="invalid_token")
    api_token, agent = found
    if token_use_due(api_token) and api_token.id is not None:
        with bookkeeping_write(session):
            record_token_use(session, api_token.id)
    if not agent.is_active:
        raise Forbidden("this agent is deactivated")
    return agent


CurrentAgent = Annotated[Agent, Depends(current_agent)]
