"""Which URLs a webhook may call: http or https, a host name or address, and unless the admin
allows it (IMAPDESK_WEBHOOK_ALLOW_PRIVATE) no address of the host that is private, loopback,
link-local, multicast or otherwise not public. Checked when a subscription is saved and again
before every attempt, on every address the name resolves to; the request then goes to the
address checked (no second lookup that could answer differently)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from imapdesk.kernel.errors import InvalidInput

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IpAddress, ...]

    def url_for(self, address: IpAddress) -> str:
        """The URL with `address` in place of the host name (the Host header and TLS's server
        name keep the name)."""
        parts = urlsplit(self.url)
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{literal}:{self.port}"
        rest = parts.path or "/"
        if parts.query:
            rest += "?" + parts.query
        return f"{self.scheme}://{netloc}{rest}"


def not_public(address: IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def check_url(url: str) -> tuple[str, str, int]:
    """The scheme, host and port of a webhook URL (422 when it cannot be one)."""
    url = url.strip()
    if len(url) > 2000:
        raise InvalidInput("the URL is longer than 2000 characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("the URL is not valid", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("the URL must start with http:// or https://", field="url")
    if not parts.hostname:
        raise InvalidInput("the URL has no host", field="url")
    if parts.username or parts.password:
        raise InvalidInput("the URL must not carry a user name or password", field="url")
    if parts.fragment:
        raise InvalidInput("the URL must not have a #fragment", field="url")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def resolve(url: str, *, allow_private: bool) -> Target:
    """The URL's target with every address of its host; 422 when the URL is invalid, the host
    has no address, or (unless allowed) any address is not public."""
    scheme, host, port = check_url(url)
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: tuple[IpAddress, ...] = (literal,)
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise InvalidInput(f"the host {host} cannot be resolved: {exc}", field="url") from None
        found = dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
        addresses = tuple(found)
        if not addresses:
            raise InvalidInput(f"the host {host} has no address", field="url")
    if not allow_private:
        refused = [a for a in addresses if not_public(a)]
        if refused:
            raise InvalidInput(
                f"the host {host} is on a private or local address ({refused[0]}); webhooks "
                "go only to public addresses unless IMAPDESK_WEBHOOK_ALLOW_PRIVATE=true",
                field="url",
            )
    return Target(url=url.strip(), scheme=scheme, host=host, port=port, addresses=addresses)
