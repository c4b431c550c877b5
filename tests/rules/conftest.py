"""The API and web tests' fixtures (the app on a fresh database, both databases)."""

from __future__ import annotations

from tests.api.conftest import (  # noqa: F401  (shared)
    app,
    cheap_password_hashing,
    settings,
)
