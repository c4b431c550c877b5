"""Errors that carry their HTTP status; one handler maps them to JSON or an error page."""

from __future__ import annotations


class ImapdeskError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(ImapdeskError):
    status_code = 404
    code = "not_found"


class Conflict(ImapdeskError):
    status_code = 409
    code = "conflict"


class InvalidInput(ImapdeskError):
    status_code = 422
    code = "invalid_input"


class NotAuthenticated(ImapdeskError):
    status_code = 401
    code = "not_authenticated"


class Forbidden(ImapdeskError):
    status_code = 403
    code = "forbidden"


class ConfigurationError(ImapdeskError):
    status_code = 500
    code = "configuration_error"


class MailServerError(ImapdeskError):
    """An IMAP or SMTP server refused or could not be reached; the message says what to fix."""

    status_code = 502
    code = "mail_server_error"
