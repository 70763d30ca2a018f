"""Cross-checks once every entry is read: references, parent cycles, inheritance, merged polling.

Why here: the correlation engine walks ``Target.parents`` and the boards group by site and
municipality, so the loader guarantees every parent exists and is a node, the parent graph has no
cycles, and each target carries its site/municipality (inherited from the nearest ancestor that
has one) and its fully merged polling settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from monitor.inventory.fields import Problems, fmt_num
from monitor.inventory.model import PON_PORT_KIND, Municipality, PollingSettings, ServiceClass, Site, Target
from monitor.inventory.records import RawCustomer, RawTarget, Where
from monitor.inventory.settings import Override, merge_polling, polling_problem
from monitor.inventory.table_keys import pon_port_problem, port_of_key, table_key_problem
from monitor.probes.pon_ports import port_node_id


@dataclass
class PollingLayers:
    """Where polling settings come from, most general first: global, per kind, per service class."""

    base: PollingSettings
    base_where: Where | None = None
    by_kind: dict[str, tuple[Override, Where]] = field(default_factory=dict)
    by_class: dict[str, tuple[Override, Where]] = field(default_factory=dict)


class Graph:
    def __init__(
        self, problems: Problems, nodes: list[RawTarget], customers: list[RawCustomer],
        municipalities: Mapping[str, Municipality], sites: Mapping[str, Site],
        classes: Mapping[str, ServiceClass], layers: PollingLayers,
    ) -> None:
        self.problems = problems
        self.nodes = {n.id: n for n in nodes}
        self.customers = customers
        self.endpoints = {e.id: e for c in customers for e in c.endpoints}
        self.municipalities = municipalities
        self.sites = sites
        self.classes = classes
        self.layers = layers
        self._located: dict[str, tuple[str | None, str | None]] = {}
        self._reported: set[str] = set()
        self._merged: dict[tuple[PollingSettings, int], PollingSettings] = {}
        self._table_keys: dict[tuple[str, str, str], tuple[str, Where]] = {}  # (parent, kind, value) → user
        self._port_of: dict[str, tuple[str, str, Where]] = {}  # endpoint → (OLT, PON port, where it was said)

    def targets(self) -> dict[str, Target]:
        self._check_references()
        cyclic = self._check_cycles()
        out: dict[str, Target] = {}
        for raw in self.nodes.values():
            out[raw.id] = self._target(raw, None, cyclic)
        endpoints: dict[str, Target] = {}
        for cust in self.customers:
            sc = cust.service_class[0] if cust.service_class else None
            for raw in cust.endpoints:
                endpoints[raw.id] = self._target(raw, sc, cyclic)
        out.update(self._port_nodes(out, endpoints))
        out.update(endpoints)
        return out

    def _port_nodes(self, nodes: Mapping[str, Target], endpoints: dict[str, Target]) -> dict[str, Target]:
        """A node per PON port that has ONUs, between them and their OLT (``olt-1:pon-0-1-3``).

        Why: the engine roots a failure at the deepest node explaining it; with the port level a
        fibre cut on one port is that port's incident, not the whole OLT's. The ports come from the
        ONUs' own identifiers (an ``onu_index`` that encodes its port) or ``pon_port``; ONUs known by
        serial alone, on a profile without ports, stay under the OLT.
        """
        ports: dict[str, Target] = {}
        for tid, (olt, port, where) in self._port_of.items():
            pid = port_node_id(olt, port)
            if pid not in ports:
                taken = self.nodes.get(pid) or self.endpoints.get(pid)
                if taken is not None:
                    where.err(self.problems, f"its PON port node would be {pid!r}, which is already the id of "
                                             f"a target (at {taken.where}): rename that one")
                    continue
                parent = nodes[olt]
                ports[pid] = Target(
                    id=pid, kind=PON_PORT_KIND, role="node", address="", parents=(olt,), site=parent.site,
                    municipality=parent.municipality, polling=parent.polling, name=f"{parent.name or olt} PON {port}",
                    pon_port=port,
                )
            endpoints[tid] = replace(endpoints[tid], parents=(pid,))
        return ports

    # -- references -----------------------------------------------------------------------------
    def _check_references(self) -> None:
        p = self.problems
        for raw in self.nodes.values():
            if raw.site and raw.site[0] not in self.sites:
                raw.site[1].err(p, f"unknown site {raw.site[0]!r} (expected the id of a site defined under sites)")
            if raw.municipality and raw.municipality[0] not in self.municipalities:
                raw.municipality[1].err(p, f"unknown municipality {raw.municipality[0]!r} (expected the id "
                                           "of a municipality defined under municipalities)")
            elif raw.site and raw.municipality and raw.site[0] in self.sites:
                site_muni = self.sites[raw.site[0]].municipality
                if site_muni != raw.municipality[0]:
                    raw.municipality[1].err(p, f"{raw.municipality[0]!r} contradicts site {raw.site[0]!r}, "
                                               f"which is in municipality {site_muni!r}")
        for raw in [*self.nodes.values(), *self.endpoints.values()]:
            for ref, where in raw.parents:
                if ref in self.nodes:
                    continue
                extra = f"; {ref!r} is a customer endpoint" if ref in self.endpoints else ""
                where.err(p, f"unknown node {ref!r} (expected the id of a node defined under nodes{extra})")
        known = ", ".join(self.classes) or "none defined"
        for cust in self.customers:
            if cust.service_class and cust.service_class[0] not in self.classes:
                name, where = cust.service_class
                where.err(p, f"unknown service class {name!r} (expected a key of service_classes: {known})")

    def _check_cycles(self) -> set[str]:
        """Report each parent cycle once as ``a -> b -> a``; return the ids on cycles."""
        order = {nid: i for i, nid in enumerate(self.nodes)}
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        cyclic: set[str] = set()
        seen: set[frozenset[str]] = set()
        for start in self.nodes:
            if start in state:
                continue
            path: list[str] = [start]
            stack = [iter(self._parent_ids(start))]
            state[start] = 1
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    loop = path[path.index(nxt):]
                    if frozenset(loop) not in seen:
                        seen.add(frozenset(loop))
                        cyclic.update(loop)
                        self._report_cycle(loop, order)
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(self._parent_ids(nxt)))
        return cyclic

    def _parent_ids(self, nid: str) -> list[str]:
        return [ref for ref, _ in self.nodes[nid].parents if ref in self.nodes]

    def _report_cycle(self, loop: list[str], order: Mapping[str, int]) -> None:
        first = min(range(len(loop)), key=lambda i: order[loop[i]])
        loop = loop[first:] + loop[:first]
        nxt = loop[1] if len(loop) > 1 else loop[0]
        where = next(w for ref, w in self.nodes[loop[0]].parents if ref == nxt)
        where.err(self.problems, "parent cycle: " + " -> ".join([*loop, loop[0]]))

    # -- inheritance ----------------------------------------------------------------------------
    def _locate(self, raw: RawTarget, cyclic: set[str]) -> tuple[str | None, str | None]:
        """(site, municipality): the target's own, else its site's, else the nearest ancestor's."""
        if raw.id in self._located:
            return self._located[raw.id]
        self._located[raw.id] = (None, None)  # guards any loop the cycle report did not mark
        site = raw.site[0] if raw.site and raw.site[0] in self.sites else None
        muni = raw.municipality[0] if raw.municipality else None
        if muni is None and site is not None:
            muni = self.sites[site].municipality
        if site is None or muni is None:
            for ref, _ in raw.parents:
                if ref in self.nodes and ref not in cyclic:
                    psite, pmuni = self._locate(self.nodes[ref], cyclic)
                    if psite is not None or pmuni is not None:
                        site = site or psite
                        muni = muni or pmuni
                        break
        self._located[raw.id] = (site, muni)
        return site, muni

    # -- polling --------------------------------------------------------------------------------
    def _polling(self, raw: RawTarget, service_class: str | None) -> PollingSettings:
        ps, where = self.layers.base, self.layers.base_where
        layers = [self.layers.by_kind.get(raw.kind)]
        if service_class is not None:
            layers.append(self.layers.by_class.get(service_class))
        if raw.polling_where is not None:
            layers.append((raw.polling, raw.polling_where))
        for layer in layers:
            if layer is not None:
                # merged settings are shared between targets: 50k endpoints need only a few objects
                key = (ps, id(layer[0]))
                if key not in self._merged:
                    self._merged[key] = merge_polling(ps, layer[0])
                ps, where = self._merged[key], layer[1]
        problem = polling_problem(ps)
        if problem and where is not None and where.path not in self._reported:
            self._reported.add(where.path)
            where.err(self.problems, problem)
        if raw.snmp is not None and raw.snmp_where is not None:
            worst = raw.snmp.timeout * (raw.snmp.retries + 1)
            if worst >= ps.interval:
                raw.snmp_where.err(self.problems, f"timeout × (retries + 1) = {fmt_num(worst)} s must be "
                                                  f"shorter than the polling interval {fmt_num(ps.interval)} s")
        return ps

    def _target(self, raw: RawTarget, service_class: str | None, cyclic: set[str]) -> Target:
        site, muni = self._locate(raw, cyclic)
        return Target(
            id=raw.id, kind=raw.kind, role=raw.role, address=raw.address or "",
            parents=tuple(ref for ref, _ in raw.parents), site=site, municipality=muni,
            customer=raw.customer, service_class=service_class, snmp=raw.snmp,
            polling=self._polling(raw, service_class), name=raw.name, table_key=self._table_key(raw),
        )

    # -- subscriber tables ----------------------------------------------------------------------
    def _table_key(self, raw: RawTarget) -> tuple[str, str] | None:
        """The endpoint's canonical identifier in its parent's table, checked against that table's vendor."""
        if raw.table_key is None:
            if raw.pon_port is not None:
                raw.pon_port[1].err(self.problems, "pon_port needs onu_serial or onu_index (the ONU as its "
                                                   "OLT's table lists it)")
            return None
        kind, value, where = raw.table_key
        parents = [ref for ref, _ in raw.parents if ref in self.nodes]
        if len(raw.parents) != 1 or not parents:
            if len(raw.parents) > 1:
                where.err(self.problems, f"an endpoint identified by {kind} must have exactly one parent "
                                         "(the device whose table lists it)")
            return None
        parent = self.nodes[parents[0]]
        table = parent.snmp.table if parent.snmp is not None else ""
        if not table:
            where.err(self.problems, f"{kind} needs a parent whose snmp section names a table profile "
                                     f"(node {parent.id!r} has no snmp.table)")
            return None
        problem, canonical = table_key_problem(table, kind, value)
        if problem:
            where.err(self.problems, problem)
            return None
        key = (parent.id, kind, canonical)
        if key in self._table_keys:
            other, other_where = self._table_keys[key]
            where.err(self.problems, f"{kind} {canonical!r} under {parent.id!r} is already endpoint {other!r} "
                                     f"(at {other_where})")
            return None
        self._table_keys[key] = (raw.id, where)
        self._pon_port(raw, parent.id, table, kind, canonical)
        return kind, canonical

    def _pon_port(self, raw: RawTarget, parent: str, table: str, kind: str, canonical: str) -> None:
        """Which PON port of ``parent`` the ONU hangs from: from its index, or ``pon_port`` (both must agree)."""
        derived = port_of_key(table, kind, canonical)
        assert raw.table_key is not None
        if raw.pon_port is None:
            if derived is not None:
                self._port_of[raw.id] = (parent, derived, raw.table_key[2])
            return
        value, where = raw.pon_port
        problem, port = pon_port_problem(table, value)
        if problem:
            where.err(self.problems, problem)
            return
        if derived is not None and derived != port:
            where.err(self.problems, f"PON port {port} contradicts {kind} {canonical}, which is on PON port {derived}")
            return
        self._port_of[raw.id] = (parent, port, where)
