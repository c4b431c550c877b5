"""Which organisation a customer's address names: its domain, unless the domain is a free-mail
provider's (gmail.com, outlook.com, ...), whose customers have nothing else in common.

The domain as written in the address, lower case; a subdomain is an organisation of its own
(`eu.acme.example` is not `acme.example`): a mail domain is chosen by the organisation, and
guessing where its registrable part starts would need the public suffix list.
"""

from __future__ import annotations

import re

# providers whose addresses anyone can have, by their mail domains
FREE_MAIL_DOMAINS = frozenset(
    {
        "163.com",
        "126.com",
        "139.com",
        "aim.com",
        "aol.com",
        "bk.ru",
        "daum.net",
        "email.com",
        "fastmail.com",
        "fastmail.fm",
        "free.fr",
        "freenet.de",
        "gmail.com",
        "gmx.com",
        "gmx.net",
        "googlemail.com",
        "hanmail.net",
        "hey.com",
        "hotmail.com",
        "hushmail.com",
        "icloud.com",
        "inbox.ru",
        "laposte.net",
        "libero.it",
        "list.ru",
        "live.com",
        "mac.com",
        "mail.com",
        "mail.ru",
        "me.com",
        "msn.com",
        "naver.com",
        "orange.fr",
        "outlook.com",
        "pm.me",
        "proton.me",
        "protonmail.com",
        "qq.com",
        "rambler.ru",
        "rediffmail.com",
        "rocketmail.com",
        "seznam.cz",
        "sfr.fr",
        "sina.com",
        "t-online.de",
        "tuta.io",
        "tutanota.com",
        "tutanota.de",
        "wanadoo.fr",
        "web.de",
        "yahoo.com",
        "yandex.com",
        "yandex.ru",
        "ymail.com",
        "zoho.com",
        "zohomail.com",
    }
)
# the large providers also hand out addresses under their country domains: hotmail.fr,
# yahoo.co.jp, gmx.at, outlook.com.br, ...
_FREE_MAIL_FAMILY = re.compile(
    r"(?:aol|gmx|hotmail|live|outlook|yahoo|yandex|ymail)(?:\.(?:com?|net))?\.[a-z]{2}"
)


def mail_domain(email: str) -> str | None:
    """The domain of an address, lower case, without a trailing dot; None when there is none."""
    local, at, domain = email.strip().rpartition("@")
    domain = domain.strip().rstrip(".").lower()
    if not at or not local or not domain:
        return None
    return domain


def is_free_mail(domain: str) -> bool:
    domain = domain.lower().rstrip(".")
    return domain in FREE_MAIL_DOMAINS or _FREE_MAIL_FAMILY.fullmatch(domain) is not None


def organisation_of(email: str) -> str | None:
    """The organisation an address names (its domain), or None: no domain, a domain without a
    dot (a local host, not an organisation), or a free-mail provider's."""
    domain = mail_domain(email)
    if domain is None or "." not in domain or is_free_mail(domain):
        return None
    return domain
