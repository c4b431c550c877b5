"""The agent and token commands as an admin types them (`imapdesk user add`, `imapdesk token
create`), run as the real console program on SQLite and PostgreSQL; and the demo commands
without the `[demo]` extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from imapdesk.cli.app import app
from imapdesk.domain.accounts.agents import agent_for_token
from tests.support.corpus import REPO


def imapdesk(
    db_url: str, data: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAPDESK_")}
    env |= {"IMAPDESK_DATABASE_URL": db_url, "IMAPDESK_DATA_DIR": str(data), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "imapdesk", *args],
        cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_token_for_an_agent_found_by_any_case_of_its_address(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    added = imapdesk(
        db_url, tmp_path, "user", "add", "Alice@Example.com", "--name", "Alice",
        "--password-stdin", stdin="a long enough password\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    made = imapdesk(db_url, tmp_path, "token", "create", "ALICE@example.COM", "--name", "ci")
    assert made.returncode == 0, made.stdout + made.stderr
    token = made.stdout.strip()
    with Session(engine) as session:
        holder = agent_for_token(session, token)
        assert holder is not None and holder.email == "alice@example.com"
    missing = imapdesk(db_url, tmp_path, "token", "create", "nobody@example.com")
    assert missing.returncode == 1
    assert "no agent nobody@example.com; add one with: imapdesk user add" in missing.stderr


@pytest.mark.parametrize("command", [["demo"], ["mailserver", "status"]])
def test_without_the_demo_extra_the_demo_commands_say_what_to_install(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # as a plain `pip install imapdesk` has it (tests/test_packaging.py runs the real thing)
    monkeypatch.setattr("imapdesk.cli.demo.missing_demo_packages", lambda: ["psutil"])
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "needs the demo extra" in result.stderr
    assert "pip install 'imapdesk[demo]'" in result.stderr
