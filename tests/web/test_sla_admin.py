"""The SLA admin pages over HTTP (both databases): admins only, CSRF on every form, a
calendar and a policy added, changed and deleted, mistakes shown rather than saved."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import BusinessCalendar, SlaPolicy
from tests.support import factories as f
from tests.support.web import csrf
from tests.web.test_admin import people, signed_in  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


def test_sla_admin_pages(app: FastAPI, engine: Engine, people: dict[str, int]) -> None:  # noqa: F811
    with unit_of_work(engine) as s:
        box_id = f.mailbox(s, "support").id
    bob = signed_in(app, "bob@example.com")
    token = csrf(bob, "/")
    assert bob.get("/admin/slas").status_code == 403
    assert bob.post("/admin/calendars", data={"csrf_token": token, "name": "x"}).status_code == 403
    admin = signed_in(app, "admin@example.com")
    token = csrf(admin, "/admin/slas")
    form = {
        "name": "Office",
        "timezone": "America/New_York",
        "monday": "09:00-17:00",
        "holidays": "2026-11-26",
    }
    assert admin.post("/admin/calendars", data=form).status_code == 403  # no CSRF token
    r = admin.post("/admin/calendars", data=form | {"csrf_token": token})
    assert r.status_code == 303
    with Session(engine) as s:
        cal = s.exec(select(BusinessCalendar)).one()
        assert cal.hours["monday"] == [["09:00", "17:00"]] and cal.holidays == ["2026-11-26"]
        cal_id = cal.id
    r = admin.post(f"/admin/calendars/{cal_id}", data=form | {"csrf_token": token, "friday": "9-5"})
    assert r.status_code == 303
    # hours it cannot read are refused, with the reason shown
    assert "Friday: write the hours as 09:00-12:00" in admin.get(r.headers["location"]).text
    with Session(engine) as s:
        assert s.get(BusinessCalendar, cal_id).hours["friday"] == []  # type: ignore[union-attr]
    r = admin.post(
        f"/admin/calendars/{cal_id}",
        data=form | {"csrf_token": token, "friday": "09:00-12:00, 13:00 - 15:30"},
    )
    with Session(engine) as s:
        saved = s.get(BusinessCalendar, cal_id)
        assert saved is not None and saved.hours["friday"] == [
            ["09:00", "12:00"],
            ["13:00", "15:30"],
        ]

    policy = {
        "csrf_token": token, "name": "Support", "scope": "mailbox", "mailbox_id": str(box_id),
        "calendar_id": str(cal_id), "first_response_minutes": "60", "warning_minutes": "15",
        "enabled": "true",
    }  # fmt: skip
    assert admin.post("/admin/sla-policies", data=policy).status_code == 303
    page = admin.get("/admin/slas").text
    assert 'data-policy="Support"' in page and "Office" in page
    with Session(engine) as s:
        row = s.exec(select(SlaPolicy)).one()
        assert (row.first_response_minutes, row.warning_minutes, row.calendar_id) == (
            60,
            15,
            cal_id,
        )
        assert row.pause_when_pending is False  # the box left unticked
        pid = row.id
    # the form offers pausing while pending, ticked for a new policy; ticked, it is saved
    assert 'name="pause_when_pending" value="true" checked' in admin.get("/admin/slas").text
    page = admin.get(f"/admin/sla-policies/{pid}").text
    assert 'name="pause_when_pending" value="true">' in page
    r = admin.post(f"/admin/sla-policies/{pid}", data=policy | {"pause_when_pending": "true"})
    assert r.status_code == 303
    with Session(engine) as s:
        assert s.get(SlaPolicy, pid).pause_when_pending is True  # type: ignore[union-attr]
    assert (
        'name="pause_when_pending" value="true" checked'
        in admin.get(f"/admin/sla-policies/{pid}").text
    )
    # a tag policy without a tag is refused, with the reason shown
    r = admin.post(f"/admin/sla-policies/{pid}", data=policy | {"scope": "tag"})
    assert r.status_code == 303
    assert "A tag policy needs a tag." in admin.get(r.headers["location"]).text
    # the calendar in use cannot go
    admin.post(f"/admin/calendars/{cal_id}/delete", data={"csrf_token": token})
    with Session(engine) as s:
        assert s.get(BusinessCalendar, cal_id) is not None
    assert (
        admin.post(f"/admin/sla-policies/{pid}/delete", data={"csrf_token": token}).status_code
        == 303
    )
    assert (
        admin.post(f"/admin/calendars/{cal_id}/delete", data={"csrf_token": token}).status_code
        == 303
    )
    with Session(engine) as s:
        assert s.exec(select(SlaPolicy)).first() is None
        assert s.exec(select(BusinessCalendar)).first() is None
