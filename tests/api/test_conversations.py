"""GET /api/v1/conversations (filters, pagination) and GET /api/v1/conversations/{id}."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlmodel import select

from imapdesk.domain.accounts.agents import create_agent
from imapdesk.domain.conversations import reads
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, ConversationStatus, Direction
from tests.support import factories as f

LIST = "/api/v1/conversations"


@dataclass
class Scene:
    c1: int
    c2: int
    c3: int
    c4: int
    c5: int
    c6: int
    c7: int


@pytest.fixture
def scene(engine: Engine, agent_token: str) -> Scene:
    """Two mailboxes, two agents, conversations in every status, one merged, one undated."""
    with unit_of_work(engine) as s:
        alice = s.exec(select(Agent).where(Agent.email == "alice@example.com")).one()
        bob = create_agent(s, "bob@example.com", "Bob", "pw")
        support, billing = f.mailbox(s, "support"), f.mailbox(s, "billing")
        c1 = f.conversation(
            s, support, "Printer on fire", minutes=10, tags=("vip", "billing"),
            customer_email="carol@customer.example", customer_name="Carol Customer",
        )  # fmt: skip
        c2 = f.conversation(
            s, support, "Invoice question", minutes=20, status=ConversationStatus.pending,
            assignee_id=bob.id, customer_email="dave@shop.example", customer_name="Dave",
        )  # fmt: skip
        c3 = f.conversation(
            s, billing, "Refund 100%", minutes=30, status=ConversationStatus.closed,
            assignee_id=alice.id, tags=("vip",), customer_email="erin@example.org",
        )  # fmt: skip
        c4 = f.conversation(s, billing, "Cheap pills 1000", minutes=40, status="spam")
        c5 = f.conversation(s, support, "Old stuff", minutes=50, status="deleted")
        c6 = f.conversation(s, support, "Printer (dup)", minutes=60, merged_into_id=c1.id)
        c7 = f.conversation(s, support, "Undated", minutes=None)
        ids = [c.id for c in (c1, c2, c3, c4, c5, c6, c7)]
    assert all(i is not None for i in ids)
    return Scene(*[int(i or 0) for i in ids])


def ids(client: TestClient, **params: Any) -> list[int]:
    r = client.get(LIST, params=params)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


def test_default_lists_all_but_deleted_and_merged_newest_first(
    api: TestClient, scene: Scene
) -> None:
    s = scene
    assert ids(api) == [s.c4, s.c3, s.c2, s.c1, s.c7]


def test_filter_by_mailbox(api: TestClient, scene: Scene) -> None:
    s = scene
    assert ids(api, mailbox="support") == [s.c2, s.c1, s.c7]
    assert ids(api, mailbox="billing") == [s.c4, s.c3]
    assert ids(api, mailbox="nope") == []


def test_filter_by_status(api: TestClient, scene: Scene) -> None:
    s = scene
    assert ids(api, status="open") == [s.c1, s.c7]
    assert ids(api, status="deleted") == [s.c5]
    assert ids(api, status="spam") == [s.c4]
    assert ids(api, status=["open", "pending"]) == [s.c2, s.c1, s.c7]


def test_filter_by_assignee(api: TestClient, scene: Scene) -> None:
    s = scene
    assert ids(api, assignee="bob@example.com") == [s.c2]
    assert ids(api, assignee="BOB@example.com") == [s.c2]
    assert ids(api, assignee="none") == [s.c4, s.c1, s.c7]
    assert ids(api, assignee="me") == [s.c3]
    assert ids(api, assignee="nobody@example.com") == []


def test_filter_by_tag(api: TestClient, scene: Scene) -> None:
    s = scene
    assert ids(api, tag="vip") == [s.c3, s.c1]
    assert ids(api, tag="billing") == [s.c1]
    assert ids(api, tag="nope") == []


def test_filter_by_text(api: TestClient, scene: Scene) -> None:
    s = scene
    assert ids(api, q="PRINTER") == [s.c1]
    assert ids(api, q="carol cust") == [s.c1]
    assert ids(api, q="shop.example") == [s.c2]
    # LIKE wildcards are literal characters here
    assert ids(api, q="100%") == [s.c3]
    assert ids(api, q="_") == []
    assert ids(api, q="   ") == [s.c4, s.c3, s.c2, s.c1, s.c7]


def test_filters_combine(api: TestClient, scene: Scene) -> None:
    s = scene
    assert ids(api, mailbox="support", status="open", assignee="none") == [s.c1, s.c7]
    assert ids(api, mailbox="billing", tag="vip", q="refund") == [s.c3]


def test_list_item_fields(api: TestClient, scene: Scene) -> None:
    items = {i["id"]: i for i in api.get(LIST).json()["items"]}
    assert items[scene.c1] == {
        "id": scene.c1,
        "mailbox": "support",
        "subject": "Printer on fire",
        "status": "open",
        "assignee": None,
        "claimed": False,
        "tags": ["billing", "vip"],
        "tags_not_kept": [],
        "customer": {"email": "carol@customer.example", "name": "Carol Customer"},
        "message_count": 0,
        "last_message_at": "2024-05-01T09:10:00Z",
        "unread": True,
        "snippet": None,
        "sla": None,
    }
    assert items[scene.c2]["assignee"] == "bob@example.com"
    assert items[scene.c3]["customer"] == {"email": "erin@example.org", "name": None}
    assert items[scene.c7]["last_message_at"] is None


def test_cursor_pagination_returns_every_conversation_once_in_order(
    api: TestClient, engine: Engine
) -> None:
    with unit_of_work(engine) as s:
        boxes = [f.mailbox(s, "support"), f.mailbox(s, "sales")]
        convs = [
            # groups of three share a timestamp, so the id breaks ties across page edges
            f.conversation(s, boxes[i % 2], f"c{i}", minutes=i // 3)
            for i in range(120)
        ]
        convs += [f.conversation(s, boxes[i % 2], f"undated {i}", minutes=None) for i in range(5)]
        hidden = f.conversation(s, boxes[0], "gone", minutes=500, status="deleted")
        merged = f.conversation(s, boxes[0], "merged", minutes=500, merged_into_id=convs[0].id)
        expected = [
            c.id
            for c in sorted(
                convs,
                key=lambda c: (
                    c.last_message_at is not None,
                    c.last_message_at or f.BASE_TIME,
                    c.id or 0,
                ),
                reverse=True,
            )
        ]

    def walk(limit: int, **params: Any) -> tuple[list[int], list[int]]:
        seen: list[int] = []
        sizes: list[int] = []
        cursor = None
        for _ in range(100):
            query = {"limit": limit, **params} | ({"cursor": cursor} if cursor else {})
            body = api.get(LIST, params=query).json()
            seen += [i["id"] for i in body["items"]]
            sizes.append(len(body["items"]))
            cursor = body["next_cursor"]
            if cursor is None:
                break
        return seen, sizes

    seen, sizes = walk(50)
    assert sizes == [50, 50, 25]
    assert seen == expected
    assert len(set(seen)) == 125 and hidden.id not in seen and merged.id not in seen

    # the default page size is 50
    assert len(api.get(LIST).json()["items"]) == 50
    # small pages with a filter, across the dated/undated boundary
    seen, _ = walk(7, mailbox="sales")
    assert seen == [
        i for i in expected if i in {c.id for c in convs if c.mailbox_id == boxes[1].id}
    ]
    # an exact multiple of the page size ends without an empty extra page
    seen, sizes = walk(25)
    assert sizes == [25] * 5 and seen == expected


def test_a_page_costs_a_fixed_number_of_queries(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        agents = [create_agent(s, f"a{i}@example.com", f"A{i}", "pw") for i in range(3)]
        box = f.mailbox(s)
        for i in range(60):
            f.conversation(
                s, box, f"c{i}", minutes=i, tags=(f"t{i % 4}", "all"),
                assignee_id=agents[i % 3].id,
            )  # fmt: skip
        viewer = agents[0]

    counts: list[int] = []
    for limit in (10, 50):
        statements: list[str] = []

        def count(*args: Any, _statements: list[str] = statements) -> None:
            _statements.append(args[2])

        event.listen(engine, "before_cursor_execute", count)
        try:
            with unit_of_work(engine) as s:
                page = reads.list_conversations(s, viewer, limit=limit)
                assert all(row.tags and row.assignee for row in page.items)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        counts.append(len([q for q in statements if q.lstrip().upper().startswith("SELECT")]))
    assert counts[0] == counts[1] <= 6, counts


def test_invalid_parameters_are_422_naming_the_field(api: TestClient) -> None:
    for params, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "archived"}, "status.0"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WzEsMl0"}, "cursor"),
    ):
        r = api.get(LIST, params=params)
        assert r.status_code == 422, params
        error = r.json()["error"]
        assert error["code"] == "invalid_input"
        assert error["field"] == field, (params, error)
        assert error["message"]
    r = api.get(f"{LIST}/abc")
    assert r.status_code == 422 and r.json()["error"]["field"] == "conversation_id"


# --- one conversation ------------------------------------------------------------------------


def test_detail_has_the_conversation_and_its_messages(
    api: TestClient, engine: Engine, settings: Any
) -> None:
    with unit_of_work(engine) as s:
        bob = create_agent(s, "bob@example.com", "Bob", "pw")
        box = f.mailbox(s)
        inbox, sent = f.folder(s, box, "INBOX"), f.folder(s, box, "Sent")
        conv = f.conversation(
            s, box, "Printer on fire", minutes=30, tags=("vip", "hardware"),
            assignee_id=bob.id, claimed=True, customer_email="carol@customer.example",
            customer_name="Carol", message_count=2, unread=False,
        )  # fmt: skip
        later = f.message(
            s, conv, minutes=30, direction=Direction.outbound, from_email="support@example.com",
            from_name="Support", to=[{"email": "carol@customer.example", "name": "Carol"}],
            text="We are on it.", thread_rule="in_reply_to", seen=True,
        )  # fmt: skip
        first = f.message(
            s, conv, minutes=0, from_email="carol@customer.example", from_name="Carol",
            to=[{"email": "support@example.com", "name": ""}],
            cc=[{"email": "boss@customer.example", "name": "Boss"}],
            text="It burns.", html="<p>It <b>burns</b>.</p>", parse_error="bad charset",
        )  # fmt: skip
        f.location(s, first, inbox, uid=7, flags=["\\Seen", "$Assigned_bob"])
        f.location(s, later, sent, uid=3, flags=["\\Seen"])
        att = f.attachment(s, first, settings.data_dir, b"%PDF-1.4 fake", inline=False)
        other = f.conversation(s, box, "Unrelated", minutes=1)
        f.message(s, other)

    r = api.get(f"{LIST}/{conv.id}")
    assert r.status_code == 200, r.text
    body = r.json()
    messages = body.pop("messages")
    assert body == {
        "id": conv.id,
        "mailbox": "support",
        "subject": "Printer on fire",
        "status": "open",
        "assignee": "bob@example.com",
        "claimed": True,
        "tags": ["hardware", "vip"],
        "tags_not_kept": [],
        "customer": {"email": "carol@customer.example", "name": "Carol"},
        "message_count": 2,
        "last_message_at": "2024-05-01T09:30:00Z",
        "unread": False,
        "sla": None,
        "version": 1,
    }
    assert [m["id"] for m in messages] == [first.id, later.id]
    m = messages[0]
    assert m == {
        "id": first.id,
        "message_id": first.message_id,
        "direction": "inbound",
        "from": {"email": "carol@customer.example", "name": "Carol"},
        "to": [{"email": "support@example.com", "name": None}],
        "cc": [{"email": "boss@customer.example", "name": "Boss"}],
        "date": "2024-05-01T09:00:00Z",
        "subject": "Printer on fire",
        "text": "It burns.",
        "html": "<p>It <b>burns</b>.</p>",
        "seen": False,
        "attachments": [
            {
                "id": att.id,
                "filename": "report.pdf",
                "content_type": "application/pdf",
                "size": 13,
                "inline": False,
                "content_id": None,
                "url": f"/api/v1/attachments/{att.id}",
                "unpacked_from": None,
                "unpack_error": None,
            }
        ],
        "thread_rule": "new",
        "parse_error": "bad charset",
        "locations": [
            {
                "mailbox": "support",
                "folder": "INBOX",
                "uid": 7,
                "flags": ["\\Seen", "$Assigned_bob"],
            }
        ],
        "delivery": None,
    }
    assert messages[1]["direction"] == "outbound" and messages[1]["seen"] is True
    assert messages[1]["thread_rule"] == "in_reply_to" and messages[1]["html"] is None
    assert messages[1]["locations"] == [
        {"mailbox": "support", "folder": "Sent", "uid": 3, "flags": ["\\Seen"]}
    ]


def test_messages_are_ordered_by_date_then_id(api: TestClient, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        conv = f.conversation(s, f.mailbox(s), "Order")
        m3 = f.message(s, conv, minutes=5)
        m1 = f.message(s, conv, minutes=1)
        m2 = f.message(s, conv, minutes=5)
        undated = f.message(s, conv, date=None)
        m0 = f.message(s, conv, date=f.BASE_TIME - timedelta(days=1))
    got = [m["id"] for m in api.get(f"{LIST}/{conv.id}").json()["messages"]]
    assert got == [m0.id, m1.id, m3.id, m2.id, undated.id]


def test_merged_conversation_redirects_to_the_survivor(api: TestClient, scene: Scene) -> None:
    r = api.get(f"{LIST}/{scene.c6}", follow_redirects=False)
    assert r.status_code == 308
    assert r.headers["location"] == f"/api/v1/conversations/{scene.c1}"
    error = r.json()["error"]
    assert error["code"] == "conversation_merged" and error["merged_into"] == scene.c1
    followed = api.get(f"{LIST}/{scene.c6}")
    assert followed.status_code == 200 and followed.json()["id"] == scene.c1


def test_merge_chains_are_followed_to_the_end(api: TestClient, engine: Engine) -> None:
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        final = f.conversation(s, box, "final")
        middle = f.conversation(s, box, "middle", merged_into_id=final.id)
        first = f.conversation(s, box, "first", merged_into_id=middle.id)
    r = api.get(f"{LIST}/{first.id}", follow_redirects=False)
    assert r.status_code == 308 and r.json()["error"]["merged_into"] == final.id


def test_unknown_conversation_is_404(api: TestClient, scene: Scene) -> None:
    r = api.get(f"{LIST}/999999")
    assert r.status_code == 404
    assert r.json()["error"] == {
        "code": "not_found",
        "message": "no conversation 999999",
        "conversation_id": 999999,
    }


def test_unknown_api_path_is_json_404(api: TestClient) -> None:
    r = api.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
