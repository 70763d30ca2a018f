"""What is down, drawn for the board: a self-contained SVG map of the sites and the down-target tree.

No map tiles or library: the sites' coordinates from the inventory, projected onto a box (a small
ISP's area is a few tens of kilometres, where a plain equirectangular projection is true enough),
a circle per site coloured by the worst incident touching it, its name beside it. Nothing is
fetched from anywhere; it works offline and under the board's CSP.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape

from monitor.inventory.model import Inventory

WIDTH, HEIGHT, MARGIN = 400.0, 300.0, 40.0
SEVERITY = {"outage": 3, "single": 1, "planned": 1, "suspected": 2, "degraded": 2}
COLOURS = {0: "#2e7d32", 1: "#1565c0", 2: "#f9a825", 3: "#c62828"}


@dataclass
class TreeNode:
    id: str
    name: str
    endpoints: int = 0  # affected endpoints right below this node
    children: list[TreeNode] = field(default_factory=list)


def down_tree(inv: Inventory, root: str, nodes: Iterable[str], endpoints: Iterable[str]) -> list[TreeNode]:
    """The incident's nodes arranged by parent (top first), each with its count of affected endpoints."""
    members = {root, *nodes}
    made = {n: TreeNode(n, (inv.targets[n].name or n) if n in inv.targets else n) for n in members}
    tops = []
    for n in sorted(members):
        t = inv.targets.get(n)
        parent = next((p for p in (t.parents if t else ()) if p in members), None)
        if parent is None:
            tops.append(made[n])
        else:
            made[parent].children.append(made[n])
    for e in endpoints:
        t = inv.targets.get(e)
        parent = next((p for p in (t.parents if t else ()) if p in made), None)
        if parent is not None:
            made[parent].endpoints += 1
    return sorted(tops, key=lambda n: n.id != root)


def site_severity(inv: Inventory, incidents: Iterable[tuple[str, Iterable[str]]]) -> dict[str, int]:
    """Site id -> the worst severity among the incidents (kind, targets) touching one of its targets."""
    worst: dict[str, int] = defaultdict(int)
    for kind, targets in incidents:
        for tid in targets:
            t = inv.targets.get(tid)
            if t is not None and t.site is not None:
                worst[t.site] = max(worst[t.site], SEVERITY.get(kind, 1))
    return dict(worst)


def svg(inv: Inventory, severity: dict[str, int], title: str) -> str:
    placed = [s for s in inv.sites.values() if s.lat is not None and s.lon is not None]
    if not placed:
        return ""
    lats = [s.lat for s in placed if s.lat is not None]
    lons = [s.lon for s in placed if s.lon is not None]
    mid = math.cos(math.radians((min(lats) + max(lats)) / 2))
    span = max((max(lons) - min(lons)) * mid, max(lats) - min(lats), 1e-6)
    scale = min(WIDTH, HEIGHT) - 2 * MARGIN
    out = [f'<svg class="map" viewBox="0 0 {WIDTH:.0f} {HEIGHT:.0f}" role="img" aria-label="{escape(title)}" '
           f'xmlns="http://www.w3.org/2000/svg"><rect width="100%" height="100%" fill="#f4f1ea"/>']
    for s in sorted(placed, key=lambda s: severity.get(s.id, 0)):  # the worst drawn last, on top
        assert s.lat is not None and s.lon is not None
        x = MARGIN + (s.lon - min(lons)) * mid / span * scale
        y = HEIGHT - MARGIN - (s.lat - min(lats)) / span * scale
        level = severity.get(s.id, 0)
        r = 9 if level >= 2 else 6
        out.append(f'<g><title>{escape(s.name)}</title><circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" '
                   f'fill="{COLOURS[level]}" stroke="#fff" stroke-width="2"/>'
                   f'<text x="{x + 12:.1f}" y="{y + 4:.1f}" font-size="11" fill="#1b1b1b">{escape(s.name)}</text></g>')
    out.append("</svg>")
    return "".join(out)
