"""Render a page of the snapshot as HTML, Atom or JSON (templates in ``monitor/web/templates``).

Everything a template gets is public by construction (see :mod:`monitor.web.snapshot`); autoescape is
on for HTML and Atom, so a municipality or site name with markup in it is shown, not run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from monitor.correlate.incidents import format_ts
from monitor.inventory.model import Inventory
from monitor.web import i18n
from monitor.web.availability import COMPANY, Bars
from monitor.web.config import StatusPageSettings
from monitor.web.snapshot import PublicIncident, PublicWindow, Snapshot

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True, slots=True)
class Page:
    """One public page: the company's (``municipality`` None) or one municipality's."""

    municipality: str | None

    @property
    def base(self) -> str:
        return "/" if self.municipality is None else f"/m/{self.municipality}"

    def link(self, suffix: str) -> str:
        return f"{self.base.rstrip('/')}/{suffix}"


def day_class(availability: float | None) -> str:
    if availability is None:
        return "unk"
    return "ok" if availability >= 99.9 else "warn" if availability >= 99.0 else "bad"


class Renderer:
    def __init__(self, settings: StatusPageSettings) -> None:
        self.settings = settings
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.env.globals["day_class"] = day_class

    def _context(self, inv: Inventory, snap: Snapshot, bars: dict[str, Bars], page: Page,
                 lang: str) -> dict[str, Any]:
        tz = self.settings.timezone
        mid = page.municipality
        names = {m: inv.municipalities[m].name for m in inv.municipalities}
        shown = [mid] if mid is not None else list(inv.municipalities)
        return {
            "lang": lang, "other": "en" if lang == "es" else "es", "t": i18n.TEXT[lang], "kinds": i18n.KINDS[lang],
            "update_text": i18n.UPDATES[lang], "settings": self.settings, "page": page,
            "page_name": names[mid] if mid is not None else i18n.TEXT[lang]["whole_company"],
            "names": names, "snap": snap.for_municipality(mid),
            "bars": [(m, names[m], bars[m]) for m in shown if m in bars],
            "company_bars": bars.get(COMPANY) if mid is None else None,
            "when": lambda ts: i18n.when(ts, lang, tz), "day": lambda ts: i18n.day(ts, lang, tz),
            "percent": lambda v: i18n.percent(v, lang), "iso": format_ts,
        }

    def html(self, inv: Inventory, snap: Snapshot, bars: dict[str, Bars], page: Page, lang: str) -> str:
        return self.env.get_template("page.html.j2").render(self._context(inv, snap, bars, page, lang))

    def atom(self, inv: Inventory, snap: Snapshot, bars: dict[str, Bars], page: Page, lang: str) -> str:
        return self.env.get_template("feed.atom.j2").render(self._context(inv, snap, bars, page, lang))

    def lookup(self, inv: Inventory, lang: str, **values: Any) -> str:
        tz = self.settings.timezone
        ctx = {"names": {m.id: m.name for m in inv.municipalities.values()}, "lang": lang,
               "other": "en" if lang == "es" else "es", "t": i18n.TEXT[lang],
               "kinds": i18n.KINDS[lang], "settings": self.settings, "when": lambda ts: i18n.when(ts, lang, tz),
               **values}
        return self.env.get_template("lookup.html.j2").render(ctx)

    def not_found(self, lang: str) -> str:
        return self.env.get_template("not_found.html.j2").render(
            {"lang": lang, "other": "en" if lang == "es" else "es", "t": i18n.TEXT[lang], "settings": self.settings})

    def json(self, inv: Inventory, snap: Snapshot, bars: dict[str, Bars], page: Page, lang: str) -> str:
        mid = page.municipality
        part = snap.for_municipality(mid)
        kinds = i18n.KINDS[lang]
        shown = [mid] if mid is not None else [COMPANY, *inv.municipalities]
        status = "incident" if part.incidents else "maintenance" if part.in_progress else "ok"
        return json.dumps({
            "page": {"municipality": mid, "name": inv.municipalities[mid].name if mid is not None else None},
            "language": lang, "generated_at": format_ts(snap.built_at), "timezone": self.settings.timezone,
            "status": status,
            "incidents": [_incident_json(i, kinds) for i in part.incidents],
            "resolved": [_incident_json(i, kinds) for i in part.resolved],
            "maintenance": [_window_json(w, "in_progress") for w in part.in_progress]
            + [_window_json(w, "upcoming") for w in part.upcoming],
            "availability": {
                (m or "company"): {
                    "availability_pct": _round(bars[m].availability),
                    "days": [{"start": format_ts(d.start), "availability_pct": _round(d.availability)}
                             for d in bars[m].days],
                } for m in shown if m in bars
            },
        }, ensure_ascii=False)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _incident_json(i: PublicIncident, kinds: dict[str, str]) -> dict[str, Any]:
    return {
        "ref": i.ref, "kind": i.kind, "kind_text": kinds.get(i.kind, i.kind), "municipalities": list(i.municipalities),
        "sites": list(i.sites), "since": format_ts(i.since), "eta": format_ts(i.eta) if i.eta is not None else None,
        "customers_affected": i.customers,
        "restored_at": format_ts(i.restored_at) if i.restored_at is not None else None,
        "updates": [{"ts": format_ts(u.ts), "what": u.what, "customers": u.customers,
                     "eta": format_ts(u.eta) if u.eta is not None else None} for u in i.updates],
    }


def _window_json(w: PublicWindow, state: str) -> dict[str, Any]:
    return {"ref": w.ref, "state": state, "start": format_ts(w.start), "end": format_ts(w.end),
            "municipalities": list(w.municipalities), "sites": list(w.sites), "reason": w.reason,
            "customers_affected": w.customers}
