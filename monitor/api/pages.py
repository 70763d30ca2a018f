"""The one-click ack pages behind the signed links in technician alert emails.

``GET /ack/<incident>?by=&exp=&sig=`` only shows the incident and a confirm button: mail scanners
and link previews fetch every URL in a message, and a GET that acknowledged would stop the
escalation before any human saw the alert. The button POSTs the same signed fields, which
acknowledges as the technician the link was made for. The signature is the authorisation (and the
CSRF token): a bad or expired one gets a 403 page and nothing about the incident. Pages are small,
self-contained, in the technician's language, never cached and never sent as a Referer.
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import MultiMapping

from monitor.correlate.incidents import format_ts
from monitor.correlate.store import IncidentRow, NotFound
from monitor.logs import event

if TYPE_CHECKING:
    from monitor.api.server import ApiServer

log = logging.getLogger("monitor.api")

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}

TEXTS = {
    "en": {"title": "Acknowledge {inc}", "button": "Acknowledge as {by}", "done": "{inc} acknowledged by {by}",
           "already": "{inc} was already acknowledged by {by}", "closed": "{inc} is already {status}",
           "unknown": "No incident {inc}", "kind": "Kind", "root": "Root node", "since": "Open since",
           "customers": "Affected customers", "escalation": "Escalation to the next tier stops."},
    "es": {"title": "Confirmar {inc}", "button": "Confirmar como {by}", "done": "{inc} confirmado por {by}",
           "already": "{inc} ya fue confirmado por {by}", "closed": "{inc} ya está {status}",
           "unknown": "No existe el incidente {inc}", "kind": "Tipo", "root": "Nodo raíz", "since": "Abierto desde",
           "customers": "Clientes afectados", "escalation": "Se detiene el escalamiento al siguiente nivel."},
}
REFUSALS_ES = {"this link is not valid": "este enlace no es válido", "this link has expired": "este enlace expiró"}
UNREADABLE = {"en": "this form cannot be read", "es": "no se puede leer este formulario"}
LINK_FIELDS = ("by", "exp", "sig")


class AckPages:
    def __init__(self, server: ApiServer, languages: dict[str, str]) -> None:
        self.server = server
        self.languages = languages  # technician id → es | en

    async def confirm(self, request: web.Request) -> web.Response:
        """The incident and a confirm button; acknowledges nothing."""
        inc, fields = request.match_info["id"], _link_fields(request.query)
        lang = self._lang(fields)
        refused = self._refusal(inc, fields)
        if refused is not None:
            return refused
        row = self._incident(inc)
        if row is None:
            return _page(404, lang, TEXTS[lang]["unknown"].format(inc=inc), "")
        t = TEXTS[lang]
        by = fields["by"]
        hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(fields[k])}">' for k in LINK_FIELDS)
        body = (f"<dl>{_summary(row, t)}</dl>"
                + (f"<p>{html.escape(t['already'].format(inc=inc, by=row.acked_by))}</p>" if row.acked_by else "")
                + f'<form method="post">{hidden}<button type="submit">'
                  f"{html.escape(t['button'].format(by=by))}</button></form>"
                  f"<p>{html.escape(t['escalation'])}</p>")
        return _page(200, lang, t["title"].format(inc=inc), body)

    async def acknowledge(self, request: web.Request) -> web.Response:
        """The confirm button: acknowledge as the link's technician (once; a second tap says so)."""
        inc = request.match_info["id"]
        try:
            form = await request.post()  # bounded by client_max_size (413 beyond)
        except (ValueError, LookupError):  # undecodable bytes, an unknown charset, broken multipart
            lang = self._lang(_link_fields(request.query))
            return _page(400, lang, UNREADABLE[lang], "")
        fields = _link_fields(form, request.query)
        lang = self._lang(fields)
        refused = self._refusal(inc, fields)
        if refused is not None:
            return refused
        t = TEXTS[lang]
        row = self._incident(inc)
        if row is None:
            return _page(404, lang, t["unknown"].format(inc=inc), "")
        if row.status != "open":
            return _page(409, lang, t["closed"].format(inc=inc, status=row.status), "")
        if row.acked_by:
            return _page(200, lang, t["already"].format(inc=inc, by=row.acked_by), "")
        by = fields["by"]
        self.server.incidents.ack(inc, by, "acknowledged via link", now=self.server.clock.now())
        event(log, logging.INFO, "incident acknowledged", incident=inc, by=by, via="link")
        return _page(200, lang, t["done"].format(inc=inc, by=by), f"<p>{html.escape(t['escalation'])}</p>")

    # ------------------------------------------------------------ helpers

    def _lang(self, fields: dict[str, str]) -> str:
        lang = self.languages.get(fields.get("by", ""), "es")
        return lang if lang in TEXTS else "es"

    def _refusal(self, inc: str, fields: dict[str, str]) -> web.Response | None:
        """A 403 page for a bad or expired link (or when links are not configured), else None."""
        lang = self._lang(fields)
        links = self.server.links
        why = "this link is not valid" if links is None else links.refusal(
            inc, fields.get("by", ""), fields.get("exp", ""), fields.get("sig", ""), self.server.clock.now())
        if why is None:
            return None
        event(log, logging.WARNING, "ack link refused", reason=why, incident=inc[:40])
        return _page(403, lang, why if lang == "en" else REFUSALS_ES[why], "")

    def _incident(self, inc: str) -> IncidentRow | None:
        try:
            return self.server.incidents.incident(inc)
        except NotFound:
            return None


def _link_fields(*sources: MultiMapping[object]) -> dict[str, str]:
    """by, exp and sig from the first source that has each (the form before the query string).

    A field given twice in one source, or as a file, is left out, so the link is refused as not
    valid: the signature covers one value of each, and no link we make repeats one.
    """
    fields: dict[str, str] = {}
    for key in LINK_FIELDS:
        for source in sources:
            values = source.getall(key, [])
            if values:
                if len(values) == 1 and isinstance(values[0], str):
                    fields[key] = values[0]
                break
    return fields


def _summary(row: IncidentRow, t: dict[str, str]) -> str:
    items = ((t["kind"], row.kind), (t["root"], row.root), (t["since"], format_ts(row.opened_at)),
             (t["customers"], str(row.affected_customers)))
    return "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items)


def _page(status: int, lang: str, title: str, body: str) -> web.Response:
    text = (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:1.5em;max-width:30em}}"
            "button{font-size:1.3em;padding:.6em 1.2em;width:100%}dt{font-weight:bold}dd{margin:0 0 .5em}</style>"
            f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return web.Response(status=status, text=text, content_type="text/html", headers=HEADERS)
