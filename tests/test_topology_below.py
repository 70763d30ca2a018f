""""Everything below this node" is one walk (monitor.correlate.topology.descendants), used by the
engine, delivery's maintenance notices, the report's maintenance expansion, the status page's area
and the demo's scripted outages. Why a test: these were four hand-written walks (depth first, breadth
first, with and without a seen set) that had to agree on networks with several parents per node."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.correlate.topology import Topology, children_of, descendants
from monitor.delivery.config import DeliveryConfig
from monitor.delivery.planner import Context
from monitor.demo.scenario import Scenario, Step
from monitor.inventory.loader import load_inventory
from monitor.report.model import Interval
from monitor.report.source import expand_maintenance
from monitor.web.snapshot import _Area

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"


def _closure(children: dict[str, list[str]], node: str) -> set[str]:
    """Reachability by fixpoint: slow and obviously right."""
    found = set(children.get(node, ()))
    while True:
        more = found | {c for n in found for c in children.get(n, ())}
        if more == found:
            return found - {node}
        found = more


graphs = st.dictionaries(st.sampled_from("abcdefgh"), st.lists(st.sampled_from("abcdefgh"), max_size=4), max_size=8)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(graphs, st.sampled_from("abcdefgh"))
def test_descendants_is_everything_reachable_each_once(children: dict[str, list[str]], node: str) -> None:
    """Cycles and repeated edges included (the loader refuses cycles; the walk must end anyway)."""
    below = list(descendants(children, node))
    assert len(below) == len(set(below))
    assert set(below) == _closure(children, node)


def test_every_user_of_the_walk_sees_the_same_subtree() -> None:
    inv = load_inventory(EXAMPLE, secrets=False)
    topo = Topology.from_inventory(inv)
    assert topo.children == children_of(inv.targets.values())
    multi = [t.id for t in inv.targets.values() if len(t.parents) > 1]
    assert multi, "the example network must have a target with two parents for this test to mean anything"
    ctx, area = Context(inv, DeliveryConfig()), _Area(inv)
    windows = [(node, Interval(float(i), float(i) + 1)) for i, node in enumerate(inv.targets)]
    expanded = expand_maintenance(windows, inv)
    for i, node in enumerate(inv.targets):
        subtree = {node, *topo.descendants(node)}
        assert area.below(node) == subtree
        assert ctx.below(node) == topo.customers_below(node)
        assert {t for t, spans in expanded.items() if Interval(float(i), float(i) + 1) in spans} == subtree
        outages = Scenario("t", 10.0, (Step(1.0, 1.0, (node,), True, "", ""),), ()).outages(inv)
        assert outages == {t: [(1.0, 2.0)] for t in subtree}
