"""The wheel as a new user gets it: built from this repository, installed into a fresh
virtualenv outside the checkout, and run from an empty folder on SQLite and on PostgreSQL;
with the `[demo]` extra `imapdesk demo` runs too, and without it says what to install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from imapdesk.devtools.mailserver import LocalMailServer, free_port
from tests.support.corpus import REPO
from tests.support.databases import fresh_pg_database, pg_url
from tests.support.processes import REQUEST_TIMEOUT, ImapdeskProcess, demo_ports

# what the build reads: the package, the folders it links to, and the project's metadata
BUILD_SOURCES = ("pyproject.toml", "README.md", "imapdesk", "api", "worker", "frontend", "alembic")
PASSWORD = "a long enough password"


def build_wheel(tmp_path: Path) -> Path:
    """The wheel, built from a copy of the sources (the build writes `build/` and egg-info
    beside them, which must not race with other tests or land in the checkout)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_SOURCES:
        if (REPO / name).is_dir():
            # imapdesk/api and the others stay links, as in the repository
            shutil.copytree(
                REPO / name,
                source / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        else:
            shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)])
    (wheel,) = wheels.glob("imapdesk-*.whl")
    return wheel


def run(
    command: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> None:
    """Runs a command to its end; it must succeed."""
    done = subprocess.run(
        command, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"


def user_env(**values: str) -> dict[str, str]:
    """The environment of a user's shell: none of this run's IMAPDESK_* settings, no virtualenv
    or Python path pointing into the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("IMAPDESK_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return env | {"COLUMNS": "200"} | values


def test_the_wheel_holds_one_package_with_its_migrations_and_templates(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
    top = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"imapdesk"}, top
    assert len(dist_info) == 1
    for folder, packaged in (
        ("alembic", "imapdesk/migrations"),
        ("frontend/templates", "imapdesk/frontend/templates"),
        ("frontend/static", "imapdesk/frontend/static"),
    ):
        expected = {
            f"{packaged}/{path.relative_to(REPO / folder)}"
            for path in (REPO / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
        assert expected, folder
        assert expected <= names, expected - names
    assert "imapdesk/py.typed" in names


@pytest.mark.slow
@pytest.mark.timeout(1200)  # builds and installs a wheel: minutes on a loaded machine
def test_the_installed_wheel_runs_from_an_empty_folder(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    run([*pip, str(wheel)])
    imapdesk = str(venv / "bin" / "imapdesk")

    # on SQLite in the folder's ./data, as the defaults have it
    serve_from_an_empty_folder(imapdesk, tmp_path / "sqlite", user_env())
    with fresh_pg_database("imapdesk_wheel_") as name:
        serve_from_an_empty_folder(
            imapdesk, tmp_path / "postgresql", user_env(IMAPDESK_DATABASE_URL=pg_url(name))
        )

    empty = tmp_path / "no-demo"
    empty.mkdir()
    for command in (["demo"], ["mailserver", "status"]):
        refused = subprocess.run(
            [imapdesk, *command], cwd=empty, env=user_env(), capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "pip install 'imapdesk[demo]'" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr, refused.stderr

    run([*pip, f"{wheel}[demo]"])
    demo_from_an_empty_folder(imapdesk, tmp_path / "demo")


def serve_from_an_empty_folder(imapdesk: str, folder: Path, env: dict[str, str]) -> None:
    """`db upgrade`, `user add` and `run` in a new folder: the API answers, the agent signs in,
    and Ctrl-C stops it."""
    folder.mkdir()
    run([imapdesk, "db", "upgrade"], cwd=folder, env=env)
    run(
        [imapdesk, "user", "add", "alice@example.com", "--name", "Alice", "--password-stdin"],
        cwd=folder, env=env, stdin=PASSWORD + "\n",
    )  # fmt: skip
    port = free_port()
    server = ImapdeskProcess([imapdesk, "run"], cwd=folder, env=env | {"IMAPDESK_PORT": str(port)})
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT) as web:
            health = server.get_when_up(web, "/healthz", deadline)
            assert health.status_code == 200, health.text
            ready = web.get("/readyz")
            assert ready.status_code == 200, ready.text
            page = web.get("/login")
            assert page.status_code == 200, page.text
            token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            signed_in = web.post(
                "/login",
                data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": token},
            )
            assert signed_in.status_code == 303, signed_in.text
            assert web.get("/").status_code == 200
    finally:
        code = server.interrupt()
    assert code == 0, server.output


def demo_from_an_empty_folder(imapdesk: str, folder: Path) -> None:
    """`imapdesk demo` comes up with its mail server, and Ctrl-C stops all of it."""
    folder.mkdir()
    port = free_port()
    with demo_ports():
        demo = ImapdeskProcess([imapdesk, "demo", "--port", str(port)], cwd=folder, env=user_env())
        try:
            deadline = time.monotonic() + 180
            demo.wait_for_line("Ctrl-C stops everything", deadline)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT) as web:
                page = demo.get_when_up(web, "/login", deadline)
                assert page.status_code == 200, page.text
        finally:
            code = demo.interrupt()
            mail_server = folder / "data" / "mailserver"
            still_running = (mail_server / "mailserver.json").exists() and (
                LocalMailServer.load(mail_server).is_running()
            )
            if still_running:
                LocalMailServer.load(mail_server).stop()
    assert code == 0, demo.output
    assert not still_running, demo.output
