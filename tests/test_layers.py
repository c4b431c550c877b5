"""The checks that keep the layout true fail when it is broken: lint-imports on the dependency
direction (pyproject.toml's contract, docs/ARCHITECTURE.md), ruff on the generic top-level
names that are reachable only as `imapdesk.*`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.corpus import REPO

BIN = Path(sys.executable).parent


def lint_imports(package_root: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the repository's contract, on the `imapdesk` found in `package_root`."""
    env = os.environ | {"PYTHONPATH": str(package_root)}
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache", str(REPO / "pyproject.toml")],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_dependency_contract_fails_on_an_api_module_that_imports_the_worker(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "src"
    # the links (imapdesk/api -> ../api ...) followed: a tree of its own that can be changed
    shutil.copytree(
        REPO / "imapdesk",
        copy / "imapdesk",
        symlinks=False,
        ignore=shutil.ignore_patterns("__pycache__", "migrations"),
    )
    kept = lint_imports(copy, tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "0 broken" in kept.stdout, kept.stdout

    deps = copy / "imapdesk" / "api" / "deps.py"
    deps.write_text(deps.read_text() + "\nimport imapdesk.worker  # against the contract\n")
    broken = lint_imports(copy, tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "imapdesk.api is not allowed to import imapdesk.worker" in broken.stdout, broken.stdout
    assert "imapdesk.api.deps -> imapdesk.worker" in broken.stdout, broken.stdout


def test_ruff_refuses_the_generic_top_level_names(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "import core.queries\nfrom api.app import create_app\nimport worker\n"
        "from frontend import templates\nfrom imapdesk.api.app import create_app as app\n"
    )
    checked = subprocess.run(
        [str(BIN / "ruff"), "check", "--no-cache", "--config", str(REPO / "pyproject.toml"),
         "--select", "TID251", "--output-format", "concise", str(module)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 1, checked.stdout + checked.stderr
    banned = sorted(line.split("`")[1] for line in checked.stdout.splitlines() if "TID251" in line)
    assert banned == ["api", "core", "frontend", "worker"], checked.stdout
