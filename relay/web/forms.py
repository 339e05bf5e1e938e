"""What each administration form of the web console posts, as its API route's JSON body: read
field by field and checked as the API checks them, in the form's words (relay/web/admin.py hands
the body to the route's own handler). Small and loaded at start: relay/web/routes.py names these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..hours import DAYS, MAX_INTERVALS_PER_DAY, BadDayHours, BadHours, parse_hours

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["device_page", "hours_from_form", "name_only", "store_fields", "user_fields"]


def _clock(text: str) -> str:
    """A browser's ``<input type=time>`` value (``HH:MM``, maybe with seconds) as the hours'
    clock; a close at ``00:00`` is midnight at the end of the day (``24:00``)."""
    return text[:5]


def hours_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The per-day form as the hours' JSON form, checked by ``parse_hours`` (order, overlap, a
    week with no opening, dates) and refused in the form's words (``BadDayHours``) before the
    API's handler, which checks it again: either way nothing is changed."""
    dates = [d for d in form.get("closed_dates", "").replace(",", " ").split() if d]
    hours: dict[str, Any] = {"closed": dates} if dates else {}
    if form.get("always_open") == "on":
        return _checked(hours)
    weekly: dict[str, list[list[str]]] = {}
    for day in DAYS:
        if form.get(f"closed_{day}") == "on":
            continue
        spans = []
        for i in range(MAX_INTERVALS_PER_DAY):
            start, end = form.get(f"open_{day}_{i}", ""), form.get(f"close_{day}_{i}", "")
            if not start and not end:
                continue
            if not start or not end:
                raise BadDayHours(f"hours: {day} needs both an opening and a closing time")
            end = _clock(end)
            spans.append([_clock(start), "24:00" if end == "00:00" else end])
        if not spans:
            raise BadDayHours(f"hours: {day} has no times; tick closed if the store is shut")
        weekly[day] = spans
    return _checked({**hours, "weekly": weekly})


def _checked(hours: dict[str, Any]) -> dict[str, Any]:
    try:
        parse_hours(hours)  # the API's handler checks again, with the store's zone
    except BadHours as exc:
        raise BadDayHours(str(exc)) from None
    return hours


def store_fields(form: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if form.get("name"):
        body["name"] = form["name"]
    if form.get("timezone"):
        body["timezone"] = form["timezone"]
    if form.get("hours_form") == "1":
        body["hours"] = hours_from_form(form)
    return body


def user_fields(form: dict[str, str]) -> dict[str, Any]:
    kind = form.get("scope_kind", "")
    return {
        "username": form.get("username", ""),
        "password": form.get("password", ""),
        "role": form.get("role", ""),
        "scope_kind": kind,
        "scope_id": form.get("scope_id") or None if kind != "root" else None,
    }


def device_page(request: web.Request) -> str:
    return f"/devices/{request.match_info['device_id']}"


def name_only(form: dict[str, str]) -> dict[str, Any]:
    return {"name": form.get("name", "")}
