"""Standard Webhooks signing: `webhook-id`, `webhook-timestamp` and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), with a secret `whsec_<base64>`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from imapdesk.kernel.errors import InvalidInput

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# what a given secret may have (the standard asks for 24 to 64 random bytes)
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret (422 when it is not one)."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidInput("the secret must start with whsec_", field="secret")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the secret after whsec_ must be base64", field="secret") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidInput(
            f"the secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes "
            f"(it holds {len(key)})",
            field="secret",
        )
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(
        secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt; every secret given signs (the new and, for a while after a
    rotation, the previous one: the receiver accepts either)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in secrets_),
        "content-type": "application/json",
    }
