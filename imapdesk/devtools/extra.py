"""The `[demo]` extra: the packages the demo and developer tooling need beyond imapdesk's own,
looked up without importing them, so that a command can say what to install."""

from __future__ import annotations

import importlib.util

DEMO_PACKAGES = ("aiosmtpd", "psutil")
INSTALL_DEMO_EXTRA = "pip install 'imapdesk[demo]'"


def missing_demo_packages() -> list[str]:
    """The `[demo]` extra's packages that are not installed."""
    return [name for name in DEMO_PACKAGES if importlib.util.find_spec(name) is None]
