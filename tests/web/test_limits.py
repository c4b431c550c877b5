"""Request limits (api/limits.py), on SQLite and PostgreSQL: the sender is known before a body
is read (no session, no token: answered without reading or spooling it), bodies held to their
kind's limit from Content-Length and as they arrive (JSON, forms, uploads: files counted,
attachments summed while they stream), JSON nesting bounded before it is parsed, and the
server's own limits (headers' size, headers sent slowly, a body that stops arriving).

The big bodies go over a raw socket to the app served by uvicorn as `imapdesk serve` serves it
(`server_options`), from a generator that stops as soon as the server answers: what was sent
by then shows whether the server stopped reading. Nothing here waits on a clock to pass: each
wait is bounded and ends on the state it waits for."""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, func
from sqlmodel import select as sql_select

from imapdesk.api.app import SESSION_COOKIE, create_app
from imapdesk.api.limits import (
    LimitedHttpToolsProtocol,
    json_nesting_exceeds,
    sender_check,
    server_options,
)
from imapdesk.cli.serve import web_server
from imapdesk.devtools.mailserver import free_port
from imapdesk.domain.accounts.agents import create_api_token
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, Attachment, Message
from imapdesk.kernel.settings import Settings, get_settings
from tests.support import factories as f
from tests.support.web import session_cookie

MiB = 1024 * 1024
FETCH = {"X-Requested-With": "fetch"}
BOUNDARY = "imapdesk-test-boundary"


# --- fixtures and helpers ----------------------------------------------------------------------


@dataclass
class Desk:
    """A mailbox with one conversation, Alice (an admin) with an API token and a session
    cookie."""

    conversation_id: int
    token: str
    cookie: str


@pytest.fixture
def desk(engine: Engine, settings: Settings, agents: dict[str, int]) -> Desk:
    with unit_of_work(engine) as s:
        box = f.mailbox(s, smtp_host="smtp.example.com", smtp_port=587)
        conv = f.conversation(s, box, "Printer", customer_email="carol@customer.example")
        f.message(s, conv, from_email="carol@customer.example")
        alice = s.get(Agent, agents["alice"])
        assert alice is not None and conv.id is not None
        token = create_api_token(s, alice, name="tests")
        conversation_id = conv.id
    return Desk(conversation_id, token, session_cookie(settings, engine, agents["alice"]))


def small_limits(settings: Settings) -> Settings:
    """The limits small, so that the TestClient tests send little to go over them."""
    return settings.model_copy(
        update={
            "max_outbound_attachment_bytes": 10_000,
            "max_json_body_bytes": 20_000,
            "max_form_body_bytes": 10_000,
            "max_upload_files": 3,
            "max_form_fields": 50,
        }
    )


def browser(app: FastAPI, desk: Desk) -> tuple[TestClient, str]:
    """A signed-in browser (Alice's cookie) and its CSRF token."""
    client = TestClient(app, follow_redirects=False)
    client.cookies.set(SESSION_COOKIE, desk.cookie)
    page = client.get("/saved-replies").text
    return client, page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def message_count(engine: Engine, conversation_id: int) -> int:
    with Session(engine) as s:
        query = sql_select(func.count()).where(Message.conversation_id == conversation_id)
        return s.exec(query).one()


class Served:
    """The app served by uvicorn in a thread, as `imapdesk serve` serves it."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            **server_options(settings),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="limits-server", daemon=True)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)


@contextmanager
def served(app: FastAPI, settings: Settings) -> Iterator[Served]:
    server = Served(app, settings)
    server.thread.start()
    deadline = time.monotonic() + 30
    while not server.server.started:
        assert server.thread.is_alive() and time.monotonic() < deadline, "did not start"
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.server.should_exit = True
        server.thread.join(timeout=10)


@dataclass
class Answer:
    status: int
    head: str
    body: bytes
    # how much of the request's body went out before the server answered or closed
    body_bytes_sent: int


def read_answer(sock: socket.socket) -> tuple[bytes, bool]:
    """What the server sent until it closed the connection (or 30 s passed), and whether it
    closed it."""
    data = b""
    sock.settimeout(30)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except TimeoutError:
        return data, False


def send_until_answered(sock: socket.socket, head: bytes, body: Iterator[bytes]) -> Answer:
    """Sends `head`, then `body` until the server answers (or stops reading), then reads its
    answer to the end."""
    sock.sendall(head)
    sent = 0
    for chunk in body:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    data, _ = read_answer(sock)
    head_text, _, answer_body = data.partition(b"\r\n\r\n")
    status = int(head_text.split(b" ", 2)[1]) if head_text else 0
    return Answer(status, head_text.decode("latin-1"), answer_body, sent)


def filler(total: int, chunk: bytes = b"x" * MiB) -> Iterator[bytes]:
    """`total` bytes as one reused chunk after another (nothing allocated per chunk)."""
    whole, rest = divmod(total, len(chunk))
    for _ in range(whole):
        yield chunk
    if rest:
        yield chunk[:rest]


def chunked(parts: Iterator[bytes]) -> Iterator[bytes]:
    """`parts` in HTTP/1.1 chunked transfer coding (no Content-Length: counted as it comes)."""
    for part in parts:
        yield b"%x\r\n" % len(part)
        yield part
        yield b"\r\n"
    yield b"0\r\n\r\n"


def multipart_file(filename: str, total: int) -> Iterator[bytes]:
    """A multipart/form-data body of a `body` field and one file of `total` bytes."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="body"\r\n\r\nsee attached\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="attachments"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    yield from filler(total)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def error_of(answer: Answer) -> dict[str, object]:
    error: dict[str, object] = json.loads(answer.body)["error"]
    return error


# --- the sender first ------------------------------------------------------------------------


def test_a_form_post_without_a_session_is_redirected_without_reading_its_body(
    app: FastAPI, settings: Settings, desk: Desk
) -> None:
    """400 MiB of attachments posted to the composer by someone not signed in: the sign-in
    redirect comes before the body is read, and the connection closes (before: 399 MiB were
    spooled to disk, then the redirect)."""
    path = f"/conversations/{desk.conversation_id}/compose"
    size = 400 * MiB
    head = request_head(
        "POST",
        path,
        {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(len(b"".join(multipart_file("x", 0))) + size),
        },
    )
    with served(app, settings) as server, server.connect() as sock:
        answer = send_until_answered(sock, head, multipart_file("big.bin", size))
    assert answer.status == 303, answer.head
    assert "location: /login?next=" in answer.head.lower()
    assert "connection: close" in answer.head.lower()
    # what the socket buffers held when the answer came, not the body
    assert answer.body_bytes_sent < 16 * MiB


def test_an_api_write_without_a_token_is_refused_before_its_body_is_read(
    app: FastAPI, settings: Settings, desk: Desk
) -> None:
    size = 85 * MiB
    head = request_head(
        "PATCH",
        f"/api/v1/conversations/{desk.conversation_id}",
        {"Content-Type": "application/json", "Content-Length": str(size)},
    )
    with served(app, settings) as server, server.connect() as sock:
        answer = send_until_answered(sock, head, filler(size, b"[" + b"1," * (MiB // 2 - 1) + b"1"))
    assert answer.status == 401, answer.head
    assert "www-authenticate: bearer" in answer.head.lower()
    assert answer.body_bytes_sent < 16 * MiB


def test_the_routes_that_read_a_form_first_know_their_sender_first(app: FastAPI) -> None:
    """Every route whose body FastAPI reads before its dependencies, and which needs an agent,
    is found as such (the sign-in form, which needs none, is not)."""
    checked: dict[str, str | None] = {}

    def walk(routes: list[object]) -> None:
        for route in routes:
            original = getattr(route, "original_router", None)
            if original is not None:
                walk(original.routes)
            elif getattr(route, "body_field", None) is not None:
                check = sender_check(route)  # type: ignore[arg-type]
                checked[getattr(route, "name", "")] = check.__name__ if check else None

    walk(list(app.router.routes))
    assert checked["conversation_compose"] == "current_web_agent"
    assert checked["admin_agent_add"] == "current_web_agent"
    assert checked["update_conversation"] == "current_agent"
    assert checked["login_submit"] is None
    unknown = {name for name, check in checked.items() if check is None}
    assert unknown <= {"login_submit", "logout"}, unknown


def test_an_unknown_web_session_gets_the_redirect_and_a_known_one_the_page(
    app: FastAPI, desk: Desk
) -> None:
    stranger = TestClient(app, follow_redirects=False)
    stranger.cookies.set(SESSION_COOKIE, desk.cookie + "tampered")
    r = stranger.post("/saved-replies", data={"name": "x", "body": "y"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    client, token = browser(app, desk)
    r = client.post("/saved-replies", data={"csrf_token": token, "name": "Hi", "body": "Hello"})
    assert r.status_code == 303 and r.headers["location"] != "/login"


# --- bodies ------------------------------------------------------------------------------------


def test_an_85_mb_json_body_is_refused_unread(app: FastAPI, settings: Settings, desk: Desk) -> None:
    """By its Content-Length before a byte is read, and sent chunked (no length) as soon as
    it goes over the limit (before: parsed whole, the process peaked at 724 MiB)."""
    size = 85 * 1000 * 1000
    array = b"[" + b"1," * (MiB // 2 - 1) + b"1"
    path = f"/api/v1/conversations/{desk.conversation_id}"
    auth = {"Authorization": f"Bearer {desk.token}", "Content-Type": "application/json"}
    with served(app, settings) as server:
        with server.connect() as sock:
            head = request_head("PATCH", path, {**auth, "Content-Length": str(size)})
            answer = send_until_answered(sock, head, filler(size, array))
        assert answer.status == 413, answer.head
        error = error_of(answer)
        assert error["code"] == "request_too_large"
        assert error["setting"] == "IMAPDESK_MAX_JSON_BODY_BYTES"
        assert "IMAPDESK_MAX_JSON_BODY_BYTES" in str(error["message"])
        assert answer.body_bytes_sent < 16 * MiB

        with server.connect() as sock:
            head = request_head("PATCH", path, {**auth, "Transfer-Encoding": "chunked"})
            answer = send_until_answered(sock, head, chunked(filler(size, array)))
        assert answer.status == 413, answer.head
        assert error_of(answer)["setting"] == "IMAPDESK_MAX_JSON_BODY_BYTES"
        assert answer.body_bytes_sent < settings.max_json_body_bytes + 16 * MiB


def test_an_oversize_upload_is_refused_while_it_streams_and_memory_stays_flat(
    app: FastAPI, settings: Settings, desk: Desk
) -> None:
    """An authenticated note with a 400 MiB attachment, chunked: refused once the attachments
    pass their limit, with the process's memory never near the attachment's size (before: read
    into memory before the size check, RSS 206 -> 559 MiB)."""
    size = 400 * MiB
    head = request_head(
        "POST",
        f"/api/v1/conversations/{desk.conversation_id}/notes",
        {
            "Authorization": f"Bearer {desk.token}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Transfer-Encoding": "chunked",
        },
    )
    process = psutil.Process()
    peak = baseline = process.memory_info().rss
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, process.memory_info().rss)
            sampling.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    with served(app, settings) as server, server.connect() as sock:
        sampler.start()
        try:
            answer = send_until_answered(sock, head, chunked(multipart_file("big.bin", size)))
        finally:
            sampling.set()
            sampler.join()
    assert peak - baseline < 100 * MiB, f"RSS grew by {(peak - baseline) // MiB} MiB"
    assert answer.body_bytes_sent < settings.max_outbound_attachment_bytes + 32 * MiB
    assert answer.status == 413, answer.head
    error = error_of(answer)
    assert error["setting"] == "IMAPDESK_MAX_OUTBOUND_ATTACHMENT_BYTES"
    assert error["limit"] == settings.max_outbound_attachment_bytes
    assert message_count(app.state.engine, desk.conversation_id) == 1


def test_900_files_in_one_note_are_refused(app: FastAPI, engine: Engine, desk: Desk) -> None:
    api = TestClient(app, headers={"Authorization": f"Bearer {desk.token}"})
    url = f"/api/v1/conversations/{desk.conversation_id}/notes"
    files = [("attachments", (f"f{i}.txt", b"x", "text/plain")) for i in range(900)]
    r = api.post(url, data={"body": "many"}, files=files)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["setting"] == "IMAPDESK_MAX_UPLOAD_FILES"
    assert r.json()["error"]["limit"] == 20
    assert message_count(engine, desk.conversation_id) == 1
    # at the limit it is a note like any other
    r = api.post(url, data={"body": "twenty"}, files=files[:20])
    assert r.status_code == 201, r.text
    with Session(engine) as s:
        assert s.exec(sql_select(func.count()).select_from(Attachment)).one() == 20


def test_the_composer_is_held_to_the_attachment_limit_as_the_files_arrive(
    settings: Settings, engine: Engine, desk: Desk
) -> None:
    """The composer's script is told in JSON (it shows the message), a plain form gets the
    error page; four files are one too many, a form with 51 fields has one too many."""
    app = create_app(settings=small_limits(settings), engine=engine)
    client, token = browser(app, desk)
    url = f"/conversations/{desk.conversation_id}/compose"
    form = {"csrf_token": token, "kind": "note", "body": "see attached"}
    big = {"attachments": ("big.bin", b"x" * 10_001, "application/octet-stream")}
    r = client.post(url, data=form, files=big, headers=FETCH)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["setting"] == "IMAPDESK_MAX_OUTBOUND_ATTACHMENT_BYTES"
    assert "10000" in r.json()["error"]["message"]
    r = client.post(url, data=form, files=big)
    assert r.status_code == 413 and r.headers["content-type"].startswith("text/html")
    assert "IMAPDESK_MAX_OUTBOUND_ATTACHMENT_BYTES" in r.text
    four = [("attachments", (f"f{i}.txt", b"x", "text/plain")) for i in range(4)]
    r = client.post(url, data=form, files=four, headers=FETCH)
    assert r.status_code == 413 and r.json()["error"]["setting"] == "IMAPDESK_MAX_UPLOAD_FILES"
    assert message_count(engine, desk.conversation_id) == 1
    r = client.post(url, data=form, files=four[:3], headers=FETCH)
    assert r.status_code == 200, r.text
    fields = {"csrf_token": token, "name": "Hi", "body": "Hello"}
    fields.update({f"extra{i}": "x" for i in range(48)})
    r = client.post("/saved-replies", data=fields)
    assert r.status_code == 413 and "IMAPDESK_MAX_FORM_FIELDS" in r.text
    del fields["extra0"]
    assert client.post("/saved-replies", data=fields).status_code == 303


def test_json_and_form_bodies_over_their_limits(
    settings: Settings, engine: Engine, desk: Desk
) -> None:
    app = create_app(settings=small_limits(settings), engine=engine)
    api = TestClient(app, headers={"Authorization": f"Bearer {desk.token}"})
    url = f"/api/v1/conversations/{desk.conversation_id}"
    r = api.post(url + "/notes", json={"body": "x" * 20_000})
    assert r.status_code == 413 and r.json()["error"]["limit"] == 20_000
    # the same text as a multipart form's field: a JSON body's worth of text, not a form's
    r = api.post(url + "/notes", data={"body": "x" * 15_000}, files={"a": ("a.txt", b"x")})
    assert r.status_code == 201, r.text
    client, token = browser(app, desk)
    r = client.post("/saved-replies", data={"csrf_token": token, "name": "x", "body": "y" * 10_000})
    assert r.status_code == 413 and "IMAPDESK_MAX_FORM_BODY_BYTES" in r.text


# --- JSON nesting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/conversations/{id}/replies"),
        ("POST", "/api/v1/conversations/{id}/notes"),
        ("PATCH", "/api/v1/conversations/{id}"),
        ("POST", "/api/v1/conversations"),
    ],
)
def test_json_nested_1000_deep_is_422_naming_the_limit(
    app: FastAPI, desk: Desk, method: str, path: str
) -> None:
    """Before: RecursionError, a 500 (the replies) or a 400 that did not say why."""
    api = TestClient(app, headers={"Authorization": f"Bearer {desk.token}"})
    deep = '{"body": ' + "[" * 1000 + "]" * 1000 + "}"
    r = api.request(
        method,
        path.format(id=desk.conversation_id),
        content=deep,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "body" and error["setting"] == "IMAPDESK_MAX_JSON_DEPTH"
    assert "deeper than 32" in error["message"]
    # as deep as allowed: an ordinary validation error, naming the field
    shallow = '{"body": ' + "[" * 31 + "]" * 31 + "}"
    r = api.request(
        method,
        path.format(id=desk.conversation_id),
        content=shallow,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert "IMAPDESK_MAX_JSON_DEPTH" not in r.text


def test_nesting_is_counted_outside_strings() -> None:
    assert not json_nesting_exceeds(b'{"a": "[[[[[[[[[[", "b": "\\"[[[[[[["}', 3)
    assert not json_nesting_exceeds(b"[[[]]]" * 1000, 3)
    assert json_nesting_exceeds(b"[[[[]]]]", 3)
    assert json_nesting_exceeds(b'{"a": {"b": {"c": {"d": 1}}}}', 3)
    assert not json_nesting_exceeds(b'{"a": {"b": {"c": 1}}}', 3)
    # never closed: the parser would go in once per opener
    assert json_nesting_exceeds(b"[" * 1000, 32)
    assert not json_nesting_exceeds(b'{"a": [1, 2}', 32)
    assert not json_nesting_exceeds(b"[" * 20 + b"]" * 20 + b"[" * 5, 32)
    assert json_nesting_exceeds(b"[" * 20 + b"]" * 20 + b"[" * 40, 32)


# --- the server's limits -----------------------------------------------------------------------


def test_the_server_holds_connections_to_the_limits() -> None:
    """`imapdesk serve`'s uvicorn: the limited protocol, the keep-alive setting."""
    config = web_server(FastAPI(), "127.0.0.1", free_port()).config
    assert issubclass(config.http, LimitedHttpToolsProtocol)
    assert config.http.max_head_bytes == get_settings().max_header_bytes
    assert config.timeout_keep_alive == get_settings().keep_alive_seconds


def test_a_64_kib_header_is_refused_with_431(app: FastAPI, settings: Settings) -> None:
    """Before: a 64 MiB header was accepted (httptools holds a header whole until it ends)."""
    with served(app, settings) as server:
        for size in (64 * 1024, 8 * MiB):
            with server.connect() as sock:
                head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
                answer = send_until_answered(sock, head, filler(size + 4, b"a" * 65536))
            assert answer.status == 431, answer.head
            assert b"IMAPDESK_MAX_HEADER_BYTES" in answer.body
            assert answer.body_bytes_sent < settings.max_header_bytes + 8 * MiB
        with server.connect() as sock:
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fine: " + b"a" * 16_000 + b"\r\n\r\n"
            )
            assert read_answer_head(sock).startswith(b"HTTP/1.1 200")


def read_answer_head(sock: socket.socket) -> bytes:
    """One whole answer (its body read by its content-length, so that the next answer on the
    connection starts clean), returned with its head first."""
    data = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0]
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    want = len(head) + 4 + (int(length.group(1)) if length else 0)
    while len(data) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_connection_sending_its_headers_a_byte_a_second_is_closed(
    app: FastAPI, settings: Settings
) -> None:
    """Slowloris: the headers must all come within the header timeout (here 2 s), however
    steadily the bytes trickle in; an idle new connection closes too. Before: never closed."""
    slow = settings.model_copy(update={"header_timeout_seconds": 2.0})
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n\r\n"
    with served(app, slow) as server:
        with server.connect() as sock:
            sent = 0
            for byte in request:
                sock.sendall(bytes([byte]))
                sent += 1
                readable, _, _ = select.select([sock], [], [], 1.0)
                if readable:
                    break
            data, closed = read_answer(sock)
        assert closed and sent < len(request)
        assert data.startswith(b"HTTP/1.1 408"), data
        assert b"IMAPDESK_HEADER_TIMEOUT_SECONDS" in data
        with server.connect() as idle:
            data, closed = read_answer(idle)
        assert closed and data == b""
        # a request sent at once is answered, and the connection kept for the next one
        with server.connect() as sock:
            sock.sendall(request)
            assert read_answer_head(sock).startswith(b"HTTP/1.1 200")
            sock.sendall(request)
            assert read_answer_head(sock).startswith(b"HTTP/1.1 200")


def test_a_body_that_stops_arriving_ends_with_408(
    app: FastAPI, settings: Settings, desk: Desk
) -> None:
    stalled = settings.model_copy(update={"body_timeout_seconds": 1.0})
    head = request_head(
        "PATCH",
        f"/api/v1/conversations/{desk.conversation_id}",
        {
            "Authorization": f"Bearer {desk.token}",
            "Content-Type": "application/json",
            "Content-Length": "100",
        },
    )
    stalling_app = create_app(settings=stalled, engine=app.state.engine)
    with served(stalling_app, stalled) as server, server.connect() as sock:
        sock.sendall(head + b'{"status": ')
        data, closed = read_answer(sock)
    assert closed and data.startswith(b"HTTP/1.1 408"), data
    assert b"IMAPDESK_BODY_TIMEOUT_SECONDS" in data


def test_limits_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MAX_HEADER_BYTES": "4096",
        "HEADER_TIMEOUT_SECONDS": "3",
        "KEEP_ALIVE_SECONDS": "7",
        "MAX_JSON_BODY_BYTES": "65536",
        "MAX_FORM_BODY_BYTES": "32768",
        "MAX_UPLOAD_FILES": "5",
        "MAX_FORM_FIELDS": "60",
        "MAX_JSON_DEPTH": "16",
        "BODY_TIMEOUT_SECONDS": "9",
    }.items():
        monkeypatch.setenv(f"IMAPDESK_{name}", value)
    configured = Settings(data_dir=tmp_path)
    options = server_options(configured)
    assert options["http"].max_head_bytes == 4096 and options["http"].head_timeout == 3
    assert options["timeout_keep_alive"] == 7
    assert (configured.max_json_body_bytes, configured.max_form_body_bytes) == (65536, 32768)
    assert (configured.max_upload_files, configured.max_form_fields) == (5, 60)
    assert (configured.max_json_depth, configured.body_timeout_seconds) == (16, 9)
