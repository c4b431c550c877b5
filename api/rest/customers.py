"""Customers: the list with its search, and one customer with their conversations. What a
caller sees of a customer follows the mailboxes it may see (`imapdesk.domain.customers.views`):
a customer none of whose conversations it may see answers 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from imapdesk.api.deps import CurrentAgent, RowId, SessionDep
from imapdesk.api.schemas import (
    CustomerDetailPublic,
    CustomerListPublic,
    ErrorPublic,
    customer_detail_public,
    customer_list_public,
)
from imapdesk.domain.customers import views

router = APIRouter(prefix="/customers", tags=["customers"])


@router.get(
    "",
    response_model=CustomerListPublic,
    summary="List and search customers",
    description=(
        "The people conversations are with, one per address, by address. Only customers with "
        "a conversation in a mailbox you may see are listed, and their counts and dates are "
        "of those conversations alone.\n\n"
        "Pagination: pass the `next_cursor` of one page as `cursor` to get the next; it is "
        "null on the last page."
    ),
)
def list_customers(
    session: SessionDep,
    agent: CurrentAgent,
    q: Annotated[
        str | None,
        Query(
            description="Words that must each be found in the name (any script, any case), "
            "the address or its domain (`acme.example` lists the people of an organisation). "
            "To find conversations by their people, search them: `GET /api/v1/conversations"
            "?q=from:alice`.",
            max_length=200,
        ),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE_SIZE)] = views.DEFAULT_PAGE_SIZE,
) -> CustomerListPublic:
    page = views.list_customers(session, agent, q, limit=limit, cursor=cursor)
    return customer_list_public(page)


@router.get(
    "/{customer_id}",
    response_model=CustomerDetailPublic,
    summary="A customer with their conversations",
    description=(
        "The customer, their note, and their conversations in the mailboxes you may see, "
        "newest first (at most 100; `conversation_count` says how many there are)."
    ),
    responses={
        404: {
            "model": ErrorPublic,
            "description": "No such customer, or none of their conversations is yours to see.",
        }
    },
)
def get_customer(
    session: SessionDep, agent: CurrentAgent, customer_id: RowId
) -> CustomerDetailPublic:
    return customer_detail_public(views.customer_detail(session, agent, customer_id))
