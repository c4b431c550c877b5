"""Saved replies: canned answers any agent can insert into the composer.

A saved reply may hold variables, written as in Jinja2 (`{{ customer.first_name }}`), and
only these (`VARIABLES`):

    {{ customer.name }}          the customer's name (their address when the name is unknown)
    {{ customer.first_name }}    the first word of the customer's name ("" when unknown)
    {{ customer.email }}         the customer's address
    {{ agent.name }}             the agent who inserts it (a rule's reply: the mailbox's name)
    {{ conversation.number }}    the conversation's number, as in its token ([#123] -> 123)
    {{ conversation.subject }}   the conversation's subject
    {{ mailbox.name }}           the mailbox's display name (else its name)

Filters (`{{ customer.first_name | title }}`) and `{% if customer.first_name %}...{% endif %}`
work too. They are rendered with Jinja2's SandboxedEnvironment and StrictUndefined: a saved
reply that names anything else is refused, naming it, when it is saved and when it is
inserted. Saved replies written before (with `{first_name}`-style placeholders, which were
sent literally) were rewritten into this syntax by migration 0020.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import SandboxedEnvironment
from sqlmodel import Session, col, select

from imapdesk.kernel.errors import Conflict, InvalidInput, NotFound
from imapdesk.kernel.models import Agent, Conversation, Mailbox, SavedReply, utcnow

VARIABLES: dict[str, tuple[str, ...]] = {
    "customer": ("name", "first_name", "email"),
    "agent": ("name",),
    "conversation": ("number", "subject"),
    "mailbox": ("name",),
}
KNOWN = ", ".join(f"{{{{ {k}.{a} }}}}" for k, attrs in VARIABLES.items() for a in attrs)
# plain text in, plain text out: no autoescape (the composer inserts the text as text)
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)

NAME_MAX = 200
BODY_MAX = 100_000


def list_saved_replies(session: Session) -> list[SavedReply]:
    return list(session.exec(select(SavedReply).order_by(col(SavedReply.name))))


def _validate(name: str, body: str) -> tuple[str, str]:
    name = (name or "").strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise InvalidInput(f"a name is 1 to {NAME_MAX} characters", field="name")
    if not body.strip() or len(body) > BODY_MAX:
        raise InvalidInput(f"the text is 1 to {BODY_MAX} characters", field="body")
    check_variables(body)
    return name, body


def _unknown(text: str) -> list[str]:
    """The variables `text` names that are not in VARIABLES (InvalidInput: not a template)."""
    try:
        tree = _ENV.parse(text)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise InvalidInput(
            f"the text is not a valid saved reply{where}: {exc.message or exc}; variables are "
            f"written like {{{{ customer.first_name }}}}",
            field="body",
        ) from exc
    bad: list[str] = []
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for node in tree.find_all(nodes.Getattr):
        owner = node.node.name if isinstance(node.node, nodes.Name) else None
        if owner is None:  # an attribute of anything but a variable ('' .__class__)
            bad.append(f"….{node.attr}")
        elif owner in VARIABLES and node.attr not in VARIABLES[owner]:
            bad.append(f"{owner}.{node.attr}")
    for item in tree.find_all(nodes.Getitem):  # customer["name"]: write customer.name
        owner = item.node.name if isinstance(item.node, nodes.Name) else "…"
        bad.append(f"{owner}[…]")
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in VARIABLES and name.name not in assigned:
            bad.append(name.name)
    return list(dict.fromkeys(bad))


def check_variables(text: str) -> None:
    """InvalidInput naming the first unknown variable, and what is known."""
    bad = _unknown(text)
    if bad:
        raise InvalidInput(
            f"unknown variable {{{{ {bad[0]} }}}} in the saved reply; the variables are {KNOWN}",
            field="body",
            variable=bad[0],
        )


@dataclass(frozen=True)
class _Vars:
    """One variable's attributes (an object, so the sandbox reads only these)."""

    name: str = ""
    first_name: str = ""
    email: str = ""
    number: str = ""
    subject: str = ""


def variables(
    session: Session, conversation: Conversation, agent: Agent | None
) -> dict[str, _Vars]:
    """The values of the variables for this conversation and agent."""
    mailbox = session.get(Mailbox, conversation.mailbox_id)
    team = (mailbox.display_name or mailbox.name) if mailbox is not None else ""
    email = conversation.customer_email or ""
    name = (conversation.customer_name or "").strip()
    return {
        "customer": _Vars(
            name=name or email, first_name=name.split()[0] if name else "", email=email
        ),
        "agent": _Vars(name=agent.name if agent is not None else team),
        "conversation": _Vars(number=str(conversation.id or ""), subject=conversation.subject),
        "mailbox": _Vars(name=team),
    }


def render(session: Session, text: str, conversation: Conversation, agent: Agent | None) -> str:
    """The saved reply's text with its variables filled in; InvalidInput naming an unknown
    variable (one saved before it was checked, or through the database)."""
    check_variables(text)
    try:
        return _ENV.from_string(text).render(variables(session, conversation, agent))
    except TemplateError as exc:
        raise InvalidInput(f"the saved reply cannot be filled in: {exc}", field="body") from exc


def render_saved(
    session: Session, saved_reply_id: int, conversation: Conversation, agent: Agent | None
) -> str:
    row = session.get(SavedReply, saved_reply_id)
    if row is None:
        raise NotFound(f"no saved reply {saved_reply_id}")
    return render(session, row.body, conversation, agent)


def save_reply(
    session: Session, agent: Agent, name: str, body: str, *, saved_reply_id: int | None = None
) -> SavedReply:
    """Create one, or change the one with `saved_reply_id`. Names are unique."""
    name, body = _validate(name, body)
    clash = session.exec(select(SavedReply).where(col(SavedReply.name) == name)).first()
    if clash is not None and clash.id != saved_reply_id:
        raise Conflict(f"a saved reply named {name!r} exists already", field="name")
    if saved_reply_id is None:
        row = SavedReply(name=name, body=body, created_by_id=agent.id)
    else:
        found = session.get(SavedReply, saved_reply_id)
        if found is None:
            raise NotFound(f"no saved reply {saved_reply_id}")
        row = found
        row.name, row.body, row.updated_at = name, body, utcnow()
    session.add(row)
    session.flush()
    return row


def delete_saved_reply(session: Session, saved_reply_id: int) -> None:
    row = session.get(SavedReply, saved_reply_id)
    if row is None:
        raise NotFound(f"no saved reply {saved_reply_id}")
    session.delete(row)
    session.flush()
