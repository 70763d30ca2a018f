"""Spanish and English labels and number formats for the human-readable report formats.

CSV and JSON are for machines and stay in English with a decimal point whatever ``--lang`` is.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

LABELS: dict[str, tuple[str, str]] = {  # key: (es, en)
    "title": ("Informe de disponibilidad", "Availability report"),
    "period": ("Periodo", "Period"),
    "generated": ("Generado", "Generated"),
    "data_until": ("datos hasta", "data until"),
    "summary": ("Resumen", "Summary"),
    "by": ("Por", "By"),
    "municipality": ("Municipio", "Municipality"),
    "site": ("Sitio", "Site"),
    "node": ("Nodo", "Node"),
    "service-class": ("Clase de servicio", "Service class"),
    "customer": ("Cliente", "Customer"),
    "targets": ("Equipos", "Targets"),
    "no_data": ("Sin datos", "No data"),
    "availability": ("Disponibilidad", "Availability"),
    "downtime_min": ("Caída (min)", "Downtime (min)"),
    "unreachable_min": ("De ella, tras nodo superior caído (min)", "Of it, behind a failed parent (min)"),
    "unknown_min": ("Desconocido (min)", "Unknown (min)"),
    "maintenance_min": ("Mantenimiento (min)", "Maintenance (min)"),
    "blind_min": ("Monitor ciego (min)", "Monitor blind (min)"),
    "customer_power_min": ("Energía del cliente (min)", "Customer power (min)"),
    "failures": ("Fallas", "Failures"),
    "incidents": ("Incidentes", "Incidents"),
    "mttr_min": ("MTTR (min)", "MTTR (min)"),
    "mtbf_h": ("MTBF (h)", "MTBF (h)"),
    "customer_minutes": ("Cliente-minutos afectados", "Customer-minutes affected"),
    "sla": ("Cumplimiento de SLA por clase de servicio", "SLA compliance per service class"),
    "target": ("Meta", "Target"),
    "compliant": ("Cumple", "Compliant"),
    "customers_meeting": ("Clientes que cumplen", "Customers meeting target"),
    "yes": ("sí", "yes"),
    "no": ("no", "no"),
    "unknown": ("desconocido", "unknown"),
    "response": ("Cumplimiento del tiempo de respuesta", "Response-time compliance"),
    "response_hours": ("Respuesta requerida", "Required response"),
    "met": ("A tiempo", "Met"),
    "missed": ("Fuera de tiempo", "Missed"),
    "pending": ("Pendientes", "Pending"),
    "not_needed": ("Restablecidos antes del plazo", "Restored before the deadline"),
    "not_acked": ("Sin confirmar", "Not acknowledged"),
    "response_note": (
        "Respuesta = la primera confirmación de una persona (CLI, API, tablero, MQTT, mesa de ayuda), nunca el "
        "ticket que abre el monitor. Sin confirmar: nadie la dio y el plazo pasó; cuenta como incumplido.",
        "Response = a person's first acknowledgement (CLI, API, board, MQTT, desk), never the ticket the monitor "
        "opens. Not acknowledged: nobody gave one and the deadline passed; it counts as missed.",
    ),
    "n/a": ("no aplica", "n/a"),
    "compliance": ("Cumplimiento", "Compliance"),
    "worst_nodes": ("Los 10 nodos con más caída propia (causa raíz)",
                    "10 worst nodes by their own downtime (root causes)"),
    "worst_sites": ("Los 10 sitios con peor disponibilidad", "10 worst sites"),
    "degraded_nodes": ("Tiempo degradado por nodo", "Time degraded per node"),
    "levels_min": ("Niveles débiles (min)", "Weak levels (min)"),
    "lossy_min": ("Enlace con pérdida (min)", "Lossy link (min)"),
    "degraded_note": (
        "Niveles débiles: ONU con potencia óptica, o estaciones con señal o CCQ, bajo el umbral debajo del "
        "puerto PON o AP; sus clientes mantuvieron el servicio, así que no cuentan como falla ni en la "
        "disponibilidad. Enlace con pérdida: el propio enlace del nodo con pérdida (lluvia); sus incidentes "
        "sí están en la lista de incidentes.",
        "Weak levels: ONUs' optical power, or stations' signal or CCQ, below the threshold below the PON port "
        "or AP; their customers kept their service, so they count neither as failures nor in availability. "
        "Lossy link: the node's own link losing packets (rain fade); its incidents are in the incident list.",
    ),
    "incident_list": ("Incidentes del periodo", "Incidents in the period"),
    "id": ("Id", "Id"),
    "kind": ("Tipo", "Kind"),
    "root": ("Causa raíz", "Root"),
    "opened": ("Abierto", "Opened"),
    "restored": ("Restablecido", "Restored"),
    "in_period_min": ("Minutos en el periodo", "Minutes in period"),
    "customers": ("Clientes", "Customers"),
    "response_col": ("Respuesta", "Response"),
    "open": ("abierto", "open"),
    "chart_municipality": ("Disponibilidad por municipio", "Availability per municipality"),
    "chart_timeline": ("Minutos de caída por día (suma de todos los equipos)",
                       "Downtime minutes per day (summed over all targets)"),
    "axis_floor": ("El eje empieza en {floor} %, no en 0", "The axis starts at {floor} %, not 0"),
    "chart_weeks": ("Incidentes por semana", "Incidents per week"),
    "none": ("ninguno", "none"),
    "total": ("Total", "Total"),
    "more_incidents": ("y {n} incidentes más (ver JSON o CSV)", "and {n} more incidents (see JSON or CSV)"),
    "notes": (
        "Disponibilidad ponderada en el tiempo sobre el tiempo medido: se excluyen mantenimientos, "
        "periodos con el monitor ciego y tiempo sin datos (mostrado como desconocido, nunca como disponible). "
        "Los minutos de cada columna se suman sobre los equipos del grupo: una torre con 20 CPE caídos 1 h "
        "cuenta 20 × 60 = 1.200 min.",
        "Time-weighted availability over measured time: maintenance, monitor-blind periods and time "
        "without data are excluded (shown as unknown, never as up). Minutes in each column are summed over the "
        "group's targets: a tower with 20 CPEs down for 1 h counts 20 × 60 = 1,200 min.",
    ),
    "outage": ("caída", "outage"),
    "suspected": ("sospecha", "suspected"),
    "single": ("individual", "single"),
    "degraded": ("degradado", "degraded"),
    "power": ("corte de energía", "power cut"),
}


def t(key: str, lang: str) -> str:
    es, en = LABELS.get(key, (key, key))
    return es if lang == "es" else en


def num(value: float | None, lang: str, digits: int = 1) -> str:
    """A number with the language's separators (es: 1.234,5 — en: 1,234.5); '—' for unknown."""
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}"
    if lang == "es":
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


def pct(value: float | None, lang: str) -> str:
    return "—" if value is None else num(value, lang, 3) + " %"


def when(ts: float | None, tz: str) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
