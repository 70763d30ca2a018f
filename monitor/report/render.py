"""Renderers: JSON and CSV for machines, Markdown and HTML for people (es/en).

Markdown and HTML share :func:`sections`, the report as titled tables of display strings, so the
two never disagree on what a figure is called or how it is rounded.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.inventory.model import Inventory
from monitor.report.i18n import num, pct, t, when
from monitor.report.model import Figures, Report, Row
from monitor.zones import zone_words

FORMATS = ("html", "csv", "json", "md")
MAX_INCIDENT_LINES = 200  # people's formats; JSON and CSV carry every incident


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def render(report: Report, fmt: str, lang: str, inv: Inventory) -> str:
    if fmt == "json":
        return json.dumps(to_dict(report), indent=1, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return to_csv(report)
    if fmt == "md":
        return to_markdown(report, lang)
    if fmt == "html":
        from monitor.report.html import to_html

        return to_html(report, lang)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------- machines


def figures_dict(f: Figures) -> dict[str, object]:
    return {
        "targets": f.targets, "no_data": f.no_data, "availability_pct": _r(f.availability, 4),
        "downtime_min": _r(f.down_s / 60), "own_downtime_min": _r(f.own_down_s / 60),
        "unreachable_min": _r(f.unreachable_s / 60), "unknown_min": _r(f.unknown_s / 60),
        "maintenance_min": _r(f.maintenance_s / 60), "blind_min": _r(f.blind_s / 60),
        "customer_power_min": _r(f.customer_power_s / 60), "degraded_min": _r(f.degraded_s / 60),
        "failures": f.failures, "incidents": f.incidents,
        "mttr_min": _r(f.mttr_min), "mtbf_h": _r(f.mtbf_h), "customer_minutes": _r(f.customer_minutes),
    }


def _r(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v, digits)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _rows(rows: list[Row]) -> list[dict[str, object]]:
    return [{"key": r.key, "name": r.name, **figures_dict(r.figures)} for r in rows]


def to_dict(r: Report) -> dict[str, object]:
    return {
        "period": {"label": r.period.label, "start": _iso(r.period.start), "end": _iso(r.period.end),
                   "tz": r.period.tz, "data_until": _iso(r.data_until)},
        "generated_at": _iso(r.generated_at),
        "by": r.by,
        "totals": figures_dict(r.totals),
        "rows": _rows(r.rows),
        "municipalities": _rows(r.municipalities),
        "worst_nodes": _rows(r.worst_nodes),
        "worst_sites": _rows(r.worst_sites),
        "sla": [{"service_class": s.service_class, "target_pct": s.target_pct, "response_hours": s.response_hours,
                 "availability_pct": _r(s.availability, 4), "compliant": s.compliant, "customers": s.customers,
                 "customers_meeting": s.customers_meeting, "customers_no_data": s.customers_no_data}
                for s in r.sla],
        "response": [{"hours": x.hours, "met": x.met, "missed": x.missed, "not_acked": x.not_acked,
                      "pending": x.pending, "not_needed": x.not_needed, "compliance_pct": _r(x.compliance)}
                     for x in r.response],
        "incidents": [{"id": i.id, "kind": i.kind, "root": i.root, "opened_at": _iso(i.opened_at),
                       "restored_at": _iso(i.restored_at), "in_period_min": _r(i.in_period_s / 60),
                       "customers": i.customers, "customer_minutes": _r(i.customer_minutes),
                       "response_min": _r(None if i.response_s is None else i.response_s / 60),
                       "response_hours": i.response_hours, "response": i.response} for i in r.incidents],
        "days": [{"start": _iso(d.start), "downtime_min": _r(d.down_min), "availability_pct": _r(d.availability, 4)}
                 for d in r.days],
        "weeks": [{"week": w, "incidents": n} for w, n in r.weeks],
        "degraded_nodes": [{"node": d.node, "name": d.name, "degraded_min": _r(d.degraded_s / 60),
                            "levels_min": _r(d.levels_s / 60), "lossy_min": _r(d.lossy_s / 60),
                            "incidents": d.incidents, "customers": d.customers} for d in r.degraded_nodes],
    }


CSV_COLUMNS = ("key", "name", "targets", "no_data", "availability_pct", "downtime_min", "own_downtime_min",
               "unreachable_min", "unknown_min",
               "maintenance_min", "blind_min", "customer_power_min", "degraded_min", "failures", "incidents",
               "mttr_min", "mtbf_h", "customer_minutes")


def to_csv(r: Report) -> str:
    """One line per group of ``--by`` and a final ``*`` line with the totals; empty cell = unknown."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for row in [*_rows(r.rows), {"key": "*", "name": "TOTAL", **figures_dict(r.totals)}]:
        w.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


# ---------------------------------------------------------------- people


def _fig_cells(f: Figures, lang: str) -> list[str]:
    return [
        str(f.targets), str(f.no_data), pct(f.availability, lang), num(f.down_s / 60, lang),
        num(f.unreachable_s / 60, lang),
        num(f.unknown_s / 60, lang), num(f.maintenance_s / 60, lang), num(f.blind_s / 60, lang),
        num(f.customer_power_s / 60, lang), str(f.failures),
        str(f.incidents), num(f.mttr_min, lang), num(f.mtbf_h, lang), num(f.customer_minutes, lang, 0),
    ]


FIG_HEADERS = ("targets", "no_data", "availability", "downtime_min", "unreachable_min", "unknown_min",
               "maintenance_min", "blind_min", "customer_power_min", "failures", "incidents", "mttr_min", "mtbf_h",
               "customer_minutes")


def sections(r: Report, lang: str) -> list[Section]:
    fig_headers = [t(h, lang) for h in FIG_HEADERS]
    yes_no = {True: t("yes", lang), False: t("no", lang), None: t("unknown", lang)}
    out = [
        Section("summary", t("summary", lang), fig_headers, [_fig_cells(r.totals, lang)], t("notes", lang)),
        Section("groups", f"{t('by', lang)} {t(r.by, lang).lower()}", [t(r.by, lang), *fig_headers],
                [[row.name, *_fig_cells(row.figures, lang)] for row in r.rows]),
        Section("sla", t("sla", lang),
                [t("service-class", lang), t("target", lang), t("availability", lang), t("compliant", lang),
                 t("customers_meeting", lang), t("no_data", lang)],
                [[s.service_class, pct(s.target_pct, lang), pct(s.availability, lang), yes_no[s.compliant],
                  f"{s.customers_meeting}/{s.customers}", str(s.customers_no_data)] for s in r.sla]),
        Section("response", t("response", lang),
                [t("response_hours", lang), t("met", lang), t("missed", lang), t("not_acked", lang),
                 t("pending", lang), t("not_needed", lang), t("compliance", lang)],
                [[f"{x.hours:g} h", str(x.met), str(x.missed), str(x.not_acked), str(x.pending), str(x.not_needed),
                  pct(x.compliance, lang)] for x in r.response], t("response_note", lang)),
        Section("worst_nodes", t("worst_nodes", lang), [t("node", lang), *fig_headers],
                [[row.name, *_fig_cells(row.figures, lang)] for row in r.worst_nodes]),
        Section("worst_sites", t("worst_sites", lang), [t("site", lang), *fig_headers],
                [[row.name, *_fig_cells(row.figures, lang)] for row in r.worst_sites]),
        Section("degraded_nodes", t("degraded_nodes", lang),
                [t("node", lang), t("levels_min", lang), t("lossy_min", lang), t("incidents", lang),
                 t("customers", lang)],
                [[d.name, num(d.levels_s / 60, lang), num(d.lossy_s / 60, lang), str(d.incidents), str(d.customers)]
                 for d in r.degraded_nodes], t("degraded_note", lang)),
    ]
    shown = r.incidents[:MAX_INCIDENT_LINES]
    more = len(r.incidents) - len(shown)
    out.append(Section(
        "incidents", t("incident_list", lang),
        [t("id", lang), t("kind", lang), t("root", lang), t("opened", lang), t("restored", lang),
         t("in_period_min", lang), t("customers", lang), t("customer_minutes", lang), t("response_col", lang)],
        [[i.id, t(i.kind, lang), i.root, when(i.opened_at, r.period.tz),
          when(i.restored_at, r.period.tz) if i.restored_at is not None else t("open", lang),
          num(i.in_period_s / 60, lang), str(i.customers), num(i.customer_minutes, lang, 0), t(i.response, lang)]
         for i in shown],
        t("more_incidents", lang).format(n=more) if more > 0 else "",
    ))
    return out


def header(r: Report, lang: str) -> str:
    tz = r.period.tz
    zone = zone_words(tz, lang) + ("" if zone_words(tz, lang) == "UTC" else f", {tz}")
    text = f"{t('period', lang)}: {when(r.period.start, tz)} – {when(r.period.end, tz)} ({zone})"
    if r.data_until < r.period.end:
        text += f" · {t('data_until', lang)} {when(r.data_until, tz)}"
    return f"{text} · {t('generated', lang)}: {when(r.generated_at, tz)}"


def to_markdown(r: Report, lang: str) -> str:
    lines = [f"# {t('title', lang)} — {r.period.label}", "", header(r, lang), ""]
    for s in sections(r, lang):
        lines += [f"## {s.title}", ""]
        if s.rows:
            lines.append("| " + " | ".join(s.headers) + " |")
            lines.append("|" + "---|" * len(s.headers))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in s.rows]
        else:
            lines.append(f"_{t('none', lang)}_")
        if s.note:
            lines += ["", s.note]
        lines.append("")
    return "\n".join(lines)
