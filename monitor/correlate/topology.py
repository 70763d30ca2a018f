"""The network as an index the engine can query in O(depth): parents, children, ancestors, counts.

Built once per inventory (100k endpoints in well under a second) so that the hot path never walks
the inventory: a burst of a hundred thousand state changes costs a few dict lookups each.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from monitor.inventory.model import Inventory, Target

#: (parents, children, ancestors, is an endpoint) of one target: one lookup on the hot paths
TargetInfo = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], bool]


@dataclass(frozen=True, slots=True)
class Topology:
    parents: dict[str, tuple[str, ...]]
    children: dict[str, tuple[str, ...]]  # in inventory (file) order
    depth: dict[str, int]  # longest path from a top-level node; 0 for nodes without parents
    ancestors: dict[str, tuple[str, ...]]  # every node above, deepest first (ties by id)
    endpoints_below: dict[str, int]  # customer endpoints anywhere below a node
    endpoint: frozenset[str]  # ids of customer endpoints
    customer: dict[str, str]  # endpoint id -> customer id
    order: dict[str, int]  # inventory position, for deterministic tie-breaks
    sorted_endpoints: tuple[str, ...]  # by id: big affected lists are filtered from this, not sorted
    sorted_customers: tuple[str, ...]  # by id: big affected lists are filtered from this, not sorted
    customer_endpoints: tuple[tuple[str, ...], ...]  # the endpoints of each of sorted_customers
    # The same facts per target in one record: a burst touches 100k targets in random order, and
    # there one dict lookup instead of four saves more (cache misses) than the Python work it does.
    info: dict[str, TargetInfo]
    # Children that have this node as their only parent, per node: when the node fails they are all
    # explained at once by a set operation (an AP's 500 CPEs), not one by one.
    sole_children: dict[str, frozenset[str]]

    @classmethod
    def build(cls, targets: Iterable[Target]) -> Topology:
        tlist = list(targets)
        ids = {t.id for t in tlist}
        # Siblings share one parents tuple and one ancestors tuple (and endpoints one info record):
        # 100k endpoints, a few hundred objects, which stay in the CPU cache during a burst.
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}
        parents = {t.id: _interned(tuple(p for p in t.parents if p in ids), shared) for t in tlist}
        order = {t.id: i for i, t in enumerate(tlist)}
        depth: dict[str, int] = {}
        ancestors: dict[str, tuple[str, ...]] = {}
        for t in tlist:
            _resolve(t.id, parents, depth, ancestors)
        for tid, anc in ancestors.items():
            ancestors[tid] = _interned(anc, shared)
        endpoint = frozenset(t.id for t in tlist if t.role == "endpoint")
        below: dict[str, int] = {t.id: 0 for t in tlist if t.role == "node"}
        for e in endpoint:
            for a in ancestors[e]:
                if a in below:
                    below[a] += 1
        customer = {t.id: t.customer for t in tlist if t.role == "endpoint" and t.customer}
        by_customer: dict[str, list[str]] = {}
        for e, c in customer.items():
            by_customer.setdefault(c, []).append(e)
        children = children_of(tlist)
        return cls(
            parents=parents,
            children=children,
            depth=depth,
            ancestors=ancestors,
            endpoints_below=below,
            endpoint=endpoint,
            customer=customer,
            order=order,
            sorted_endpoints=tuple(sorted(endpoint)),
            sorted_customers=tuple(sorted(by_customer)),
            customer_endpoints=tuple(tuple(by_customer[c]) for c in sorted(by_customer)),
            info=_shared_records(parents, children, ancestors, endpoint),
            sole_children={
                n: frozenset(c for c in kids if len(parents[c]) == 1) for n, kids in children.items() if kids
            },
        )

    @classmethod
    def from_inventory(cls, inv: Inventory) -> Topology:
        return cls.build(inv.targets.values())

    def __contains__(self, tid: object) -> bool:
        return tid in self.parents

    def __len__(self) -> int:
        return len(self.parents)

    def descendants(self, node: str) -> Iterator[str]:
        """Everything below ``node`` (each once), breadth first."""
        return descendants(self.children, node)

    def customers_below(self, node: str) -> list[str]:
        """Sorted customers with an endpoint at or below ``node`` (for maintenance notices)."""
        found = {self.customer[t] for t in self.descendants(node) if t in self.customer}
        if node in self.customer:
            found.add(self.customer[node])
        return sorted(found)

    def sort_key(self, tid: str) -> tuple[int, int]:
        """Shallow before deep, then inventory order: roots are handled before what they explain."""
        return (self.depth.get(tid, 0), self.order.get(tid, 0))


def children_of(targets: Iterable[Target]) -> dict[str, tuple[str, ...]]:
    """Each target's children in inventory order (a child of several parents is under each of them).

    Why apart from :meth:`Topology.build`: delivery, the status page, the report and the demo need
    only "what is below this node" and build this index alone (tens of ms at 100k endpoints, where
    the whole topology takes over a second); :func:`descendants` is the one walk over it.
    """
    tlist = list(targets)
    kids: dict[str, list[str]] = {t.id: [] for t in tlist}
    for t in tlist:
        for p in t.parents:
            if p in kids:  # a parent outside the inventory (the loader refuses these) has no entry
                kids[p].append(t.id)
    return {k: tuple(v) for k, v in kids.items()}


def descendants(children: Mapping[str, Sequence[str]], node: str) -> Iterator[str]:
    """Everything below ``node`` (each once, ``node`` itself not), breadth first.

    The one "everything below this node" walk: maintenance covers it, customers below a node are
    told of it, the status page names its area. A cycle (the loader refuses them) ends the walk.
    """
    seen = {node}
    frontier = [node]
    while frontier:
        nxt: list[str] = []
        for n in frontier:
            for c in children.get(n, ()):
                if c not in seen:
                    seen.add(c)
                    nxt.append(c)
                    yield c
        frontier = nxt


def _interned(value: tuple[str, ...], shared: dict[tuple[str, ...], tuple[str, ...]]) -> tuple[str, ...]:
    return shared.setdefault(value, value)


def _shared_records(
    parents: dict[str, tuple[str, ...]],
    children: dict[str, tuple[str, ...]],
    ancestors: dict[str, tuple[str, ...]],
    endpoint: frozenset[str],
) -> dict[str, TargetInfo]:
    # keyed by identity: the parts are already shared, and hashing 100k nested tuples is slow
    records: dict[tuple[int, int, int, bool], TargetInfo] = {}
    out: dict[str, TargetInfo] = {}
    for t, ps in parents.items():
        kids, anc, is_endpoint = children[t], ancestors[t], t in endpoint
        key = (id(ps), id(kids), id(anc), is_endpoint)
        rec = records.get(key)
        if rec is None:
            rec = records[key] = (ps, kids, anc, is_endpoint)
        out[t] = rec
    return out


def _resolve(
    tid: str,
    parents: dict[str, tuple[str, ...]],
    depth: dict[str, int],
    ancestors: dict[str, tuple[str, ...]],
) -> None:
    """Fill depth and ancestors of ``tid`` (iteratively: no recursion limit on deep chains)."""
    stack = [tid]
    on_path: set[str] = set()
    while stack:
        cur = stack[-1]
        if cur in depth:
            stack.pop()
            continue
        todo = [p for p in parents[cur] if p not in depth]
        if todo:
            if cur in on_path:  # a cycle: the loader rejects these; do not loop forever here
                depth[cur] = 0
                ancestors[cur] = ()
                stack.pop()
                continue
            on_path.add(cur)
            stack.extend(todo)
            continue
        ps = parents[cur]
        depth[cur] = 1 + max((depth[p] for p in ps), default=-1)
        anc: set[str] = set()
        for p in ps:
            anc.add(p)
            anc.update(ancestors[p])
        ancestors[cur] = tuple(sorted(anc, key=lambda a: (-depth[a], a)))
        stack.pop()
