"""One self-contained HTML file: inline CSS and inline SVG charts, no script, no external resource.

It must open offline from an e-mail attachment or a USB stick, so nothing is fetched: no fonts, no
JavaScript libraries, no images by URL.
"""

from __future__ import annotations

from html import escape

from monitor.report.i18n import num, pct, t, when
from monitor.report.model import Report
from monitor.report.render import header, sections

GOOD, FAIR, BAD, GREY, INK = "#2e7d32", "#f9a825", "#c62828", "#9e9e9e", "#263238"

CSS = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#263238;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:26px 0 8px;border-bottom:2px solid #1565c0}
table{border-collapse:collapse;font-size:12px;margin:4px 0} td,th{border:1px solid #cfd8dc;padding:3px 7px}
th{background:#eceff1;text-align:left} td{text-align:right} td:first-child{text-align:left}
.meta{color:#546e7a;font-size:13px} .note{color:#546e7a;font-size:12px;max-width:900px}
.charts{display:flex;flex-wrap:wrap;gap:18px} .chart{border:1px solid #cfd8dc;padding:8px}
.chart h3{font-size:14px;margin:0 0 6px}
"""


def to_html(r: Report, lang: str) -> str:
    tz = r.period.tz
    parts = [
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">',
        f"<title>{escape(t('title', lang))} {escape(r.period.label)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(t('title', lang))} — {escape(r.period.label)}</h1>",
        f'<p class="meta">{escape(header(r, lang))}</p>',
        '<div class="charts">',
        _chart(t("chart_municipality", lang), availability_bars(
            [(row.name, row.figures.availability) for row in r.municipalities], lang)),
        _chart(t("chart_timeline", lang), column_chart(
            [(when(d.start, tz)[5:10], d.down_min) for d in r.days], BAD, lang)),
        _chart(t("chart_weeks", lang), column_chart([(w[5:], float(n)) for w, n in r.weeks], "#1565c0", lang)),
        "</div>",
    ]
    for s in sections(r, lang):
        parts.append(f'<h2 id="{s.key}">{escape(s.title)}</h2>')
        if s.rows:
            parts.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in s.headers) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in s.rows]
            parts.append("</table>")
        else:
            parts.append(f"<p><em>{escape(t('none', lang))}</em></p>")
        if s.note:
            parts.append(f'<p class="note">{escape(s.note)}</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _chart(title: str, svg: str) -> str:
    return f'<div class="chart"><h3>{escape(title)}</h3>{svg}</div>'


def _colour(avail: float | None) -> str:
    if avail is None:
        return GREY
    return GOOD if avail >= 99.5 else FAIR if avail >= 98.0 else BAD


#: where the availability axis may start: the highest of these below the worst value (small gaps stay visible)
FLOORS = (99.9, 99.5, 99.0, 98.0, 95.0, 90.0, 80.0, 50.0, 0.0)


def axis_floor(values: list[float]) -> float:
    worst = min(values, default=100.0)
    return next(f for f in FLOORS if f < worst or f == 0.0)


def availability_bars(items: list[tuple[str, float | None]], lang: str, width: int = 460) -> str:
    """Horizontal bars on an axis from a round floor just below the worst value to 100 %, which the chart
    says under its axis (not 0: a 99.5 % and a 99.9 % bar would look the same). Names are never cut: the
    label column is as wide as the longest one."""
    lo = axis_floor([a for _, a in items if a is not None])
    label_w, bar_h, gap = max(60, min(300, 7 * max((len(n) for n, _ in items), default=0) + 10)), 18, 6
    width = max(width, label_w + 260)
    height = max(1, len(items)) * (bar_h + gap) + 40
    span = width - label_w - 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i, (name, avail) in enumerate(items):
        y = i * (bar_h + gap) + 4
        w = 0.0 if avail is None else max(2.0, span * (avail - lo) / (100.0 - lo))
        out.append(f'<text x="0" y="{y + 13}" font-size="12" fill="{INK}" textLength="{label_w - 10}" '
                   f'lengthAdjust="spacingAndGlyphs">{escape(name)}</text>' if 7 * len(name) + 10 > label_w else
                   f'<text x="0" y="{y + 13}" font-size="12" fill="{INK}">{escape(name)}</text>')
        out.append(f'<rect x="{label_w}" y="{y}" width="{span}" height="{bar_h}" fill="#eceff1"/>')
        out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{_colour(avail)}"/>')
        out.append(f'<text x="{label_w + span + 4}" y="{y + 13}" font-size="11" fill="{INK}">'
                   f"{escape(pct(avail, lang))}</text>")
    axis_y = height - 22
    out.append(f'<text x="{label_w}" y="{axis_y}" font-size="10" fill="{INK}">{escape(num(lo, lang, 1))} %</text>')
    out.append(f'<text x="{label_w + span - 30}" y="{axis_y}" font-size="10" fill="{INK}">100 %</text>')
    out.append(f'<text x="{label_w}" y="{height - 6}" font-size="10" fill="{INK}">'
               f"{escape(t('axis_floor', lang).format(floor=num(lo, lang, 1)))}</text>")
    out.append("</svg>")
    return "".join(out)


def column_chart(items: list[tuple[str, float]], colour: str, lang: str, width: int = 460, height: int = 180) -> str:
    """Vertical columns with the maximum labelled; every few labels on the x axis."""
    top = max((v for _, v in items), default=0.0)
    n = max(1, len(items))
    plot_h, base = height - 40, height - 24
    step = (width - 40) / n
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
           f'<line x1="36" y1="{base}" x2="{width}" y2="{base}" stroke="{INK}" stroke-width="1"/>',
           f'<text x="0" y="14" font-size="10" fill="{INK}">{escape(num(top, lang, 0))}</text>']
    every = max(1, n // 8)
    for i, (label, v) in enumerate(items):
        h = 0.0 if top <= 0 else plot_h * v / top
        x = 38 + i * step
        if h > 0:
            out.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{max(1.0, step - 2):.1f}" height="{h:.1f}"'
                       f' fill="{colour}"><title>{escape(label)}: {escape(num(v, lang))}</title></rect>')
        if i % every == 0 and x + 6 * len(label) <= width:  # one that would run past the edge is left out
            out.append(f'<text x="{x:.1f}" y="{height - 8}" font-size="10" fill="{INK}">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
