"""The agent and token commands as an admin types them (`imapdesk user add`, `imapdesk token
create`), run as the real console program on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.domain.accounts.agents import agent_for_token

ROOT = Path(__file__).resolve().parents[2]


def imapdesk(
    db_url: str, data: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAPDESK_")}
    env |= {"IMAPDESK_DATABASE_URL": db_url, "IMAPDESK_DATA_DIR": str(data), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "imapdesk", *args],
        cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120,
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
