"""``Engine.apply_many`` (the daemon's batched path) decides exactly like ``apply`` one change at a time.

The batched loop keeps its own "next timer due" bound and inlines the common went-down case, so
these random timelines (redundant uplinks, recoveries, timers firing in the middle of a batch,
vantage blindness, maintenance, staff resolutions) compare everything the engine hands out:
events, the member log the store applies, the incident rows to rewrite and who is down.
"""

from __future__ import annotations

import random

import pytest

from monitor.correlate import engine as engine_module
from monitor.correlate.engine import Engine, MemberOp
from monitor.correlate.maintenance import Window, WindowEvent
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.topology import Topology
from monitor.inventory.model import PollingSettings, Target
from monitor.state import State, StateChange
from tests.correlate_helpers import tree_inventory


def _topology(rng: random.Random) -> Topology:
    pol = PollingSettings(interval=60)
    targets = [Target("core", "router", "node", "127.0.0.1", polling=pol),
               Target("gw", "router", "node", "127.0.0.1", polling=pol)]
    nodes = ["core", "gw"]
    for i in range(rng.randint(2, 8)):
        parents = tuple(rng.sample(nodes, k=rng.choice([1, 1, 1, 2])))
        targets.append(Target(f"n{i:02d}", "ap", "node", "127.0.0.1", parents, polling=pol))
        nodes.append(f"n{i:02d}")
    for i in range(rng.randint(5, 40)):
        targets.append(Target(f"e{i:03d}", "cpe", "endpoint", "127.0.0.1", (rng.choice(nodes),),
                              customer=f"C{i % 7}", polling=pol))
    rng.shuffle(targets)  # inventory order breaks ties
    return Topology.build(targets)


Logs = list[tuple[list[MemberOp], list[str], list[WindowEvent]]]  # member log, changed rows, window events per batch


def _run(seed: int, batched: bool) -> tuple[list[dict[str, object]], Logs, dict[str, float]]:
    rng = random.Random(seed)
    topo = _topology(rng)
    ids = list(topo.parents)
    overrides = {"settle": str(rng.choice([1, 30, 60])), "K": str(rng.choice([2, 3])),
                 "blind_min": str(rng.choice([3, 10])), "hold_down": str(rng.choice([60, 300])),
                 "grace": str(rng.choice([60, 300]))}
    if rng.random() < 0.2:
        overrides["vantage"] = "gw"
    engine = Engine(topo, CorrelationSettings.for_interval(60).with_overrides(overrides))
    if rng.random() < 0.3:
        engine.set_windows([Window(1, rng.choice(ids), 200.0, 900.0)])
    state = dict.fromkeys(ids, State.UP)
    now = 0.0
    events, logs = [], []
    for _ in range(rng.randint(5, 60)):
        now += rng.choice([0, 0, 1, 5, 30, 90, 400])
        batch = []
        for _ in range(rng.randint(1, 25)):
            tid = rng.choice(ids)
            new = State.DOWN if rng.random() < 0.6 else State.UP
            if state[tid] is not new:
                batch.append(StateChange(tid, state[tid], new, now + rng.random() * 90, "x"))
                state[tid] = new
        batch.sort(key=lambda c: c.ts)
        if batched:
            engine.apply_many(batch)
        else:
            for c in batch:
                engine.apply(c)
        now = max([now, *(c.ts for c in batch)])
        events += engine.tick(now)
        inner.append((list(engine._settle), dict(engine._counts()), engine.now))
        staff = sorted(i for i, inc in engine.by_id.items() if inc is not engine.blind)
        if rng.random() < 0.05 and staff:
            engine.resolve(staff[0], engine.now)
        logs.append((list(engine.member_log), sorted(engine.changed), list(engine.window_events)))
        engine.member_log.clear()
        engine.changed.clear()
        engine.window_events.clear()
    inner.append((list(engine._settle), dict(engine._counts()), list(engine._recent),
                  sorted(engine._window()), engine.now))
    events += engine.tick(now + 3000)
    return [e.to_dict() for e in events], logs, dict(engine.down)


inner: list[object] = []  # the engine's bookkeeping at the end of each run (the C passes must keep it)


@pytest.mark.parametrize("block", range(4))
def test_apply_many_equals_apply_one_by_one(block: int) -> None:
    kinds = set()
    for seed in range(block * 100, block * 100 + 100):
        one, many = _run(seed, batched=False), _run(seed, batched=True)
        assert one == many, f"seed {seed}"
        kinds |= {(e["event"], e["kind"]) for e in one[0]}
    # the timelines are worth comparing: they reach the interesting decisions
    assert {("opened", "outage"), ("merged", "single"), ("opened", "suspected"), ("resolved", "outage")} <= kinds


@pytest.mark.parametrize("block", range(2))
def test_the_burst_passes_in_c_decide_as_one_by_one(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C pass of a burst (settle entries checked a chunk at a time, ``Engine._settled``) takes
    every drain here, with the engine's bookkeeping compared after each batch, against ``apply``
    one change at a time without it."""
    for seed in range(block * 100, block * 100 + 100):
        inner.clear()
        one = _run(seed, batched=False)
        plain = list(inner)
        inner.clear()
        with monkeypatch.context() as m:
            m.setattr(engine_module, "_CHUNK", 2)
            many = _run(seed, batched=True)
        assert one == many, f"seed {seed}"
        assert plain == inner, f"seed {seed}"


def _burst_run(seed: int, chunk: int) -> tuple[list[dict[str, object]], list[object]]:
    """Everything but the gateway fails within one interval, then targets come back and fail again
    (nodes too: their children's roots change) while the failures wait out their settle period."""
    rng = random.Random(seed)
    topo = _topology(rng)
    ids = [t for t in topo.parents if t != "gw"]
    engine = Engine(topo, CorrelationSettings.for_interval(60).with_overrides(
        {"settle": str(rng.choice([30, 60])), "K": "2", "blind_share": "1", "grace": str(rng.choice([10, 120]))}))
    state = dict.fromkeys(topo.parents, State.UP)
    changes = []
    for tid in rng.sample(ids, k=len(ids)):
        changes.append(StateChange(tid, State.UP, State.DOWN, rng.random() * 60, "x"))
    for _ in range(rng.randint(1, 30)):
        changes.append(StateChange(rng.choice(ids), State.UP, State.UP, 60 + rng.random() * 150, "x"))
    changes.sort(key=lambda c: c.ts)
    out: list[dict[str, object]] = []
    seen: list[object] = []
    now, i = 0.0, 0
    with pytest.MonkeyPatch.context() as m:
        m.setattr(engine_module, "_CHUNK", chunk)
        while now < 600:
            now += rng.choice([1, 1, 2, 7])
            batch = []
            while i < len(changes) and changes[i].ts < now:
                c = changes[i]
                new = State.DOWN if state[c.target] is State.UP else State.UP  # the second half flips
                batch.append(StateChange(c.target, state[c.target], new, c.ts, "x"))
                state[c.target] = new
                i += 1
            engine.apply_many(batch)
            out += [e.to_dict() for e in engine.tick(now)]
            seen.append((list(engine.member_log), sorted(engine.changed), list(engine._settle), dict(engine.down)))
            engine.member_log.clear()
            engine.changed.clear()
    return out, seen


@pytest.mark.parametrize("block", range(2))
def test_a_burst_settled_in_c_after_its_outage_opened_decides_as_one_by_one(block: int) -> None:
    """After an outage takes its root's down subtree, the C pass checks its members' settle entries
    with one lookup each (``Engine._settled``, while nothing but endpoints went down since): the
    same decisions, member log and timers as the per-entry steps, with recoveries and repeated
    failures of endpoints and nodes in the settle period."""
    calm = 0
    original = Engine._settled

    def counting(self: Engine, chunk: list[tuple[float, str, float]]) -> list[bool]:
        nonlocal calm
        calm += self._calm is not None and self._calm[1] == self._era
        return original(self, chunk)

    for seed in range(block * 150, block * 150 + 150):
        plain = _burst_run(seed, 1 << 30)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(Engine, "_settled", counting)
            fast = _burst_run(seed, 2)
        assert plain == fast, f"seed {seed}"
    assert calm > 150  # the shortcut was taken


@pytest.mark.parametrize("cause", [None, "dying_gasp", "los"])
def test_a_burst_below_answering_nodes_checks_each_settle_entry_in_one_chunk_at_most(cause: str | None) -> None:
    """Every endpoint failing below nodes that answer: most settle entries need a decision, and a
    decision puts the rest of its chunk back. Those are taken one at a time before the next chunk,
    so each entry goes through at most one chunk check (before, every decision paid a whole
    chunk's check again: 128 per entry, the bench's 100k-endpoint cause bursts 2-4x slower)."""
    inv = tree_inventory(2, 3, 100, gateway=True)
    topo = Topology.from_inventory(inv)
    eps = [t for t in inv.targets if t in topo.endpoint]
    random.Random(3).shuffle(eps)
    changes = [StateChange(t, State.UP, State.DOWN, 2 * i / len(eps), "offline", cause=cause)  # ~300 a second
               for i, t in enumerate(eps)]

    def run(checked: list[int]) -> list[dict[str, object]]:
        engine = Engine(topo, CorrelationSettings.for_interval(60).with_overrides({"blind_share": "1"}))
        original = engine._settled

        def counting(chunk: list[tuple[float, str, float]]) -> list[bool]:
            checked.append(len(chunk))
            return original(chunk)

        engine._settled = counting  # type: ignore[method-assign]
        out, i = [], 0
        for now in range(1, 241):
            j = i
            while j < len(changes) and changes[j].ts < now:
                j += 1
            engine.apply_many(changes[i:j])
            out += [e.to_dict() for e in engine.tick(float(now))]
            i = j
        return out

    checked: list[int] = []
    fast = run(checked)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(engine_module, "_CHUNK", 1 << 30)  # no chunk ever
        plain = run([])
    assert fast == plain
    assert [e["event"] for e in fast] == ["opened"] and fast[0]["root"] == "core"
    assert checked, "the burst went through the chunk check"
    assert sum(checked) <= len(eps)


def _walked(engine: Engine, node: str) -> list[str]:
    """``_down_subtree`` by its definition, one lookup per child: ``node`` and every down target below
    whose path (first parent, every parent down) leads to it, breadth first in inventory order."""
    topo, down = engine.topo, engine.down
    out, frontier = [node], [node]
    while frontier:
        nxt: list[str] = []
        for n in frontier:
            for c in topo.children[n]:
                ps = topo.parents[c]
                if c in down and ps[0] == n and all(p in down for p in ps):
                    out.append(c)
                    if topo.children[c]:
                        nxt.append(c)
        frontier = nxt
    return out


@pytest.mark.parametrize("block", range(2))
def test_a_down_subtree_taken_without_looking_up_its_endpoints_is_the_walk(block: int) -> None:
    """An outage's down subtree where every endpoint below failed inside W and is still down is taken
    without looking each endpoint up in ``down`` (EngineState._down_subtree): the same targets in the
    same order as the walk one child at a time, over the burst timelines (everything failing, some
    coming back and failing again, nodes too) and the random ones."""
    taken = 0
    original = Engine._down_subtree

    def checked(self: Engine, node: str) -> list[str]:
        nonlocal taken
        nodes = self.topo.endpoints_below
        taken += node in nodes and self._counts()[node] == nodes[node]
        out = original(self, node)
        assert node in self.down
        assert out == _walked(self, node)
        # what the shortcut relies on: the counts are those of the endpoints failed inside W still down
        window = self._window()
        assert all(self._counts()[a] == sum(a in self.topo.ancestors[e] for e in window) for a in nodes)
        return out

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Engine, "_down_subtree", checked)
        for seed in range(block * 150, block * 150 + 150):
            _burst_run(seed, 2)
            _run(seed, batched=True)
    assert taken > 100  # the shortcut was taken
