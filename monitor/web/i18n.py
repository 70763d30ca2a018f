"""Spanish and English for the status page: the words, the dates, and which language a visitor gets.

``?lang=`` wins (the switch on every page), then ``Accept-Language`` by its q-values; Spanish otherwise.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

LANGS = ("es", "en")
DEFAULT = "es"

KINDS = {
    "es": {"outage": "Corte de servicio", "suspected": "Posible falla (en verificación)",
           "degraded": "Servicio lento o intermitente", "planned": "Interrupción por mantenimiento programado",
           "power": "Corte de energía eléctrica en la zona"},
    "en": {"outage": "Service outage", "suspected": "Possible problem (being checked)",
           "degraded": "Slow or intermittent service", "planned": "Interruption during planned maintenance",
           "power": "Mains power cut in the area"},
}

UPDATES = {
    "es": {"opened": "Detectamos el problema", "confirmed": "Falla confirmada", "grew": "El área afectada creció",
           "shrank": "Parte del servicio ya volvió", "eta": "Restablecimiento estimado: {eta}",
           "eta_withdrawn": "Retiramos la estimación: la revisaremos", "restored": "Servicio restablecido"},
    "en": {"opened": "We detected the problem", "confirmed": "Failure confirmed", "grew": "The affected area grew",
           "shrank": "Part of the service is back", "eta": "Estimated restoration: {eta}",
           "eta_withdrawn": "Estimate withdrawn: we will review it", "restored": "Service restored"},
}

TEXT = {
    "es": {
        "title": "Estado del servicio", "all_ok": "Todo funciona con normalidad.",
        "current": "Incidentes en curso", "none_current": "No hay incidentes en curso.",
        "resolved": "Resueltos en las últimas 24 horas", "maintenance": "Mantenimiento programado",
        "in_progress": "En curso", "upcoming": "Próximo", "none_maintenance": "No hay mantenimiento programado.",
        "availability": "Disponibilidad de los últimos {n} días", "area": "Zona", "since": "Desde",
        "eta": "Restablecimiento estimado", "no_eta": "Aún sin estimación", "customers": "Clientes afectados",
        "problem": "Problema",
        "updates": "Novedades", "from": "Desde", "until": "Hasta", "reason": "Motivo",
        "restored_at": "Restablecido", "unknown": "sin datos", "municipalities": "Municipios",
        "whole_company": "Toda la red", "times_in": "Horas en {tz}.", "updated": "Actualizado {ts}",
        "lookup": "¿Mi servicio está afectado?", "lookup_help": "Escriba su número de cliente.",
        "number": "Número de cliente", "digits": "Últimos 4 dígitos de su teléfono registrado",
        "check": "Consultar", "feed": "Suscribirse (Atom)", "json": "Datos (JSON)",
        "language": "Idioma", "day_legend": "Cada barra es un día: verde ≥ 99,9 %, amarillo ≥ 99 %, rojo menos; "
        "gris sin datos.", "report": "Para reportar una falla: {contact}",
        "report_generic": "Si su servicio no funciona, repórtelo a nuestra línea de atención.",
        "affected": "Su servicio está afectado por un problema conocido.",
        "in_maintenance": "Su servicio está en una zona con mantenimiento programado.",
        "clear": "No hay ningún problema conocido en su zona.",
        "unverified": "No pudimos verificar ese número de cliente con esos dígitos. Revíselos e intente de nuevo.",
        "bad_input": "Escriba un número de cliente válido{digits}.", "bad_digits": " y los 4 dígitos",
        "too_many": "Demasiadas consultas desde su conexión. Intente de nuevo en un minuto.",
        "back": "Volver al estado del servicio", "not_found": "Página no encontrada.",
        "skip": "Saltar al contenido",
    },
    "en": {
        "title": "Service status", "all_ok": "Everything is working normally.",
        "current": "Current incidents", "none_current": "No incidents right now.",
        "resolved": "Resolved in the last 24 hours", "maintenance": "Planned maintenance",
        "in_progress": "In progress", "upcoming": "Upcoming", "none_maintenance": "No maintenance planned.",
        "availability": "Availability over the last {n} days", "area": "Area", "since": "Since",
        "eta": "Estimated restoration", "no_eta": "No estimate yet", "customers": "Customers affected",
        "problem": "Problem",
        "updates": "Updates", "from": "From", "until": "Until", "reason": "Reason",
        "restored_at": "Restored", "unknown": "no data", "municipalities": "Municipalities",
        "whole_company": "Whole network", "times_in": "Times in {tz}.", "updated": "Updated {ts}",
        "lookup": "Is my service affected?", "lookup_help": "Enter your customer number.",
        "number": "Customer number", "digits": "Last 4 digits of your registered phone",
        "check": "Check", "feed": "Subscribe (Atom)", "json": "Data (JSON)",
        "language": "Language", "day_legend": "Each bar is one day: green ≥ 99.9 %, yellow ≥ 99 %, red below; "
        "grey no data.", "report": "To report a problem: {contact}",
        "report_generic": "If your service is not working, report it to our support line.",
        "affected": "Your service is affected by a known problem.",
        "in_maintenance": "Your service is in an area with planned maintenance.",
        "clear": "There is no known problem in your area.",
        "unverified": "We could not verify that customer number with those digits. Check them and try again.",
        "bad_input": "Enter a valid customer number{digits}.", "bad_digits": " and the 4 digits",
        "too_many": "Too many lookups from your connection. Try again in a minute.",
        "back": "Back to the service status", "not_found": "Page not found.",
        "skip": "Skip to content",
    },
}

#: the staff board's words
BOARD = {
    "es": {"title": "Tablero NOC", "login": "Ingresar", "user": "Usuario", "password": "Contraseña",
           "logout": "Salir", "open": "Incidentes abiertos", "none": "No hay incidentes abiertos.",
           "kind": "Tipo", "area": "Zona", "root": "Raíz", "endpoints": "Extremos", "customers": "Clientes",
           "age": "Edad", "acked": "Reconocido", "eta": "Estimado", "ack": "Reconocer", "note": "Nota",
           "set_eta": "Fijar estimado (ISO-8601)", "resolve": "Resolver", "bad_login": "Usuario o contraseña"
           " incorrectos.", "throttled": "Demasiados intentos; espere un minuto.", "role": "Rol",
           "maintenance": "Mantenimiento", "forbidden": "Su rol no permite esta acción.", "done": "Hecho.",
           "remove": "Quitar", "node": "Nodo", "start": "Inicio (ISO-8601)", "end": "Fin (ISO-8601)",
           "reason": "Motivo (lo ven los clientes)", "add_window": "Programar mantenimiento",
           "map": "Mapa de sitios: rojo caído, amarillo en duda o degradado, azul mantenimiento o un cliente",
           "tree": "Qué está caído", "below": "extremos afectados debajo"},
    "en": {"title": "NOC board", "login": "Log in", "user": "User", "password": "Password",
           "logout": "Log out", "open": "Open incidents", "none": "No open incidents.",
           "kind": "Kind", "area": "Area", "root": "Root", "endpoints": "Endpoints", "customers": "Customers",
           "age": "Age", "acked": "Acknowledged", "eta": "Estimate", "ack": "Acknowledge", "note": "Note",
           "set_eta": "Set estimate (ISO-8601)", "resolve": "Resolve", "bad_login": "Wrong user or password.",
           "throttled": "Too many attempts; wait a minute.", "role": "Role", "maintenance": "Maintenance",
           "forbidden": "Your role does not allow this action.", "done": "Done.",
           "remove": "Remove", "node": "Node", "start": "Start (ISO-8601)", "end": "End (ISO-8601)",
           "reason": "Reason (customers see it)", "add_window": "Plan maintenance",
           "map": "Map of sites: red down, yellow suspected or degraded, blue maintenance or one customer",
           "tree": "What is down", "below": "affected endpoints below"},
}

_MONTHS = {
    "es": ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}


def negotiate(query_lang: str | None, accept: str) -> str:
    """The page's language: ``?lang=`` if it names one we have, else the best of Accept-Language."""
    if query_lang in LANGS:
        return query_lang
    best, best_q = DEFAULT, 0.0
    for part in accept[:512].split(",")[:20]:  # bounded: a header is outside input
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower()[:2]
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
            if not 0.0 <= q <= 1.0:
                continue
        if lang in LANGS and q > best_q:
            best, best_q = lang, q
    return best


def when(ts: float, lang: str, tz: str) -> str:
    """A local date and time a person reads at a glance: "6 dic 2026 10:42"."""
    d = datetime.fromtimestamp(ts, ZoneInfo(tz))
    return f"{d.day} {_MONTHS[lang][d.month - 1]} {d.year} {d:%H:%M}"


def day(ts: float, lang: str, tz: str) -> str:
    d = datetime.fromtimestamp(ts, ZoneInfo(tz))
    return f"{d.day} {_MONTHS[lang][d.month - 1]} {d.year}"


def percent(value: float | None, lang: str) -> str:
    if value is None:
        return TEXT[lang]["unknown"]
    text = f"{value:.3f} %"
    return text.replace(".", ",") if lang == "es" else text
