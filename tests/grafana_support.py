"""Checks for the provisioned Grafana boards, structural and against a real InfluxDB.

A board can be valid JSON and still show "No data" forever because a query names a measurement,
field or tag the daemon never writes. So every query (panels, template variables, annotations) is
expanded the way Grafana would expand it and run; it must return series, every selected column must
carry a value, and every tag it groups by must be set on some series.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GRAFANA = Path(__file__).resolve().parents[1] / "grafana"
REGEX_SPECIALS = re.compile(r"([\\^$.|?*+()\[\]{}/])")


@dataclass(frozen=True)
class Query:
    board: str
    where: str  # "panel 3 'Latency' A", "variable node", "annotation Incidents"
    text: str


def load_boards(folder: Path = GRAFANA / "dashboards") -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def provisioned_uids(folder: Path = GRAFANA / "provisioning" / "datasources") -> set[str]:
    uids = set()
    for p in folder.glob("*.yaml"):
        for ds in yaml.safe_load(p.read_text()).get("datasources", []):
            uids.add(ds["uid"])
    return uids


def structure_problems(boards: Mapping[str, dict[str, Any]], uids: set[str]) -> list[str]:
    problems = []
    seen_uids: dict[object, str] = {}  # a uid read from JSON may be anything, even missing (None)
    for name, b in boards.items():
        uid = b.get("uid")
        if not uid or uid in seen_uids:
            problems.append(f"{name}: uid {uid!r} missing or also used by {seen_uids.get(uid)}")
        seen_uids[uid] = name
        if b.get("id") not in (None,):
            problems.append(f"{name}: provisioned boards must have id null, not {b.get('id')!r}")
        ids = [p.get("id") for p in b.get("panels", [])]
        if len(ids) != len(set(ids)) or None in ids:
            problems.append(f"{name}: panel ids not unique: {ids}")
        for where, ds in _datasources(b):
            if not isinstance(ds, dict) or ds.get("uid") not in uids:
                problems.append(f"{name}: {where}: datasource {ds!r} is not the provisioned one {sorted(uids)}")
        for p in b.get("panels", []):
            grid = p.get("gridPos", {})
            if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")) or grid["x"] + grid["w"] > 24:
                problems.append(f"{name}: panel {p.get('id')}: bad gridPos {grid}")
            refs = [t.get("refId") for t in p.get("targets", [])]
            if not refs or len(refs) != len(set(refs)):
                problems.append(f"{name}: panel {p.get('id')}: no queries or duplicate refIds {refs}")
        problems += _field_references(name, b)
    return problems


def _field_references(name: str, b: dict[str, Any]) -> list[str]:
    """Columns a board names outside its queries (annotation text/tags, geomap coordinates) must be selected."""
    problems = []
    for a in b.get("annotations", {}).get("list", []):
        if a.get("builtIn"):
            continue
        wanted = [a.get("textColumn", ""), *a.get("tagsColumn", "").split(",")]
        for col in filter(None, (c.strip() for c in wanted)):
            if f'"{col}"' not in a["query"].split(" FROM ")[0]:
                problems.append(f"{name}: annotation {a['name']}: column {col!r} is not selected")
    for p in b.get("panels", []):
        selected = " ".join(t["query"].split(" FROM ")[0] for t in p.get("targets", []))
        for layer in p.get("options", {}).get("layers", []):
            loc = layer.get("location", {})
            for key in ("latitude", "longitude") if loc.get("mode") == "coords" else ():
                if f'AS "{loc.get(key)}"' not in selected:
                    problems.append(f"{name}: panel {p['id']}: geomap {key} field {loc.get(key)!r} is not selected")
    return problems


def _datasources(b: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for p in b.get("panels", []):
        yield f"panel {p.get('id')}", p.get("datasource")
        for t in p.get("targets", []):
            yield f"panel {p.get('id')} query {t.get('refId')}", t.get("datasource")
    for v in b.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            yield f"variable {v.get('name')}", v.get("datasource")
    for a in b.get("annotations", {}).get("list", []):
        if not a.get("builtIn"):
            yield f"annotation {a.get('name')}", a.get("datasource")


def queries(name: str, b: dict[str, Any]) -> list[Query]:
    out = []
    for p in b.get("panels", []):
        for t in p.get("targets", []):
            out.append(Query(name, f"panel {p['id']} {p['title']!r} {t['refId']}", t["query"]))
    for v in b.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            out.append(Query(name, f"variable {v['name']}", v["query"]))
    for a in b.get("annotations", {}).get("list", []):
        if not a.get("builtIn"):
            out.append(Query(name, f"annotation {a['name']}", a["query"]))
    return out


def expand(text: str, binding: Mapping[str, str], start_ms: int, end_ms: int, interval: str = "1m") -> str:
    """What Grafana sends for a raw InfluxQL query (single values, regex-escaped as Grafana does)."""
    text = text.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    text = text.replace("$__interval_ms", str(_seconds(interval) * 1000)).replace("$__interval", interval)
    text = text.replace("$__from", str(start_ms)).replace("$__to", str(end_ms))
    for name in sorted(binding, key=len, reverse=True):
        value = REGEX_SPECIALS.sub(r"\\\1", binding[name])
        text = text.replace("${" + name + "}", value).replace("$" + name, value)
    left = re.findall(r"\$\{?\w+", text)
    if left:
        raise ValueError(f"unexpanded variables {left} in {text}")
    return text


def _seconds(interval: str) -> int:
    n, unit = int(interval[:-1]), interval[-1]
    return n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def result_problem(text: str, series: list[dict[str, Any]]) -> str | None:
    """Why this result would leave a panel empty or wrong, or None when it carries data."""
    if not series:
        return "no data"
    columns = {c for s in series for c in s["columns"] if c != "time"}
    for c in sorted(columns):
        if not any(row[s["columns"].index(c)] is not None for s in series if c in s["columns"] for row in s["values"]):
            return f"column {c!r} is always null"
    for tag in group_by_tags(text):
        if not any(s.get("tags", {}).get(tag) for s in series):
            return f"GROUP BY tag {tag!r} is never set"
    return None


def group_by_tags(text: str) -> list[str]:
    """Tags of the outermost GROUP BY (outside any subquery's parentheses)."""
    depth, outer = 0, []
    for ch in text:  # keep only the characters at parenthesis depth 0
        depth += ch == "("
        outer.append(ch if depth == 0 else " ")
        depth -= ch == ")"
    parts = re.split(r"\bGROUP BY\b", "".join(outer), flags=re.IGNORECASE)
    if len(parts) < 2:
        return []
    clause = re.split(r"\b(?:fill|ORDER|LIMIT|SLIMIT)\b", parts[-1], maxsplit=1, flags=re.IGNORECASE)[0]
    return re.findall(r'"([^"]+)"', clause)


def run_problems(boards: Mapping[str, dict[str, Any]], query_fn: Any, bindings: list[dict[str, str]],
                 start_ms: int, end_ms: int) -> list[str]:
    """Every query must return data for at least one of ``bindings`` (e.g. an AP, and an OLT)."""
    problems = []
    for name, b in boards.items():
        for q in queries(name, b):
            why = []
            for binding in bindings:
                text = expand(q.text, binding, start_ms, end_ms)
                try:
                    problem = result_problem(text, query_fn(text))
                except RuntimeError as exc:  # InfluxQL error
                    problem = str(exc)
                if problem is None:
                    break
                why.append(f"{dict(binding)}: {problem}")
            else:
                problems.append(f"{q.board}: {q.where}: {q.text}\n    " + "\n    ".join(why))
    return problems
